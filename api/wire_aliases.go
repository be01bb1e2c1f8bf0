// Code in this file re-exports package wire: the protocol's types live
// there so the Go client can use them without the server's dependencies.

package api

import "github.com/pskvault/pskvault/api/wire"

// Wire types (package wire).
type (
	BatchResult     = wire.BatchResult
	BinKey          = wire.BinKey
	BinRequest      = wire.BinRequest
	BundleAuth      = wire.BundleAuth
	DeriveRequest   = wire.DeriveRequest
	DeriveResponse  = wire.DeriveResponse
	Error           = wire.Error
	FinalizeRequest = wire.FinalizeRequest
	IdentityRef     = wire.IdentityRef
	KeyList         = wire.KeyList
	KeysRequest     = wire.KeysRequest
	LookupRequest   = wire.LookupRequest
	Offer           = wire.Offer
	OfferList       = wire.OfferList
	OffersRequest   = wire.OffersRequest
	PSK             = wire.PSK
	PSKList         = wire.PSKList
	PSKPolicy       = wire.PSKPolicy
	PSKSpec         = wire.PSKSpec
	RevokeRequest   = wire.RevokeRequest
	RotateSpec      = wire.RotateSpec
	Status          = wire.Status
	SweepResponse   = wire.SweepResponse
	WatchRequest    = wire.WatchRequest
	WatchResponse   = wire.WatchResponse
)

// Wire constants (package wire).
const (
	CodeAuditUnavailable   = wire.CodeAuditUnavailable
	CodeBadHex             = wire.CodeBadHex
	CodeBadRequest         = wire.CodeBadRequest
	CodeBundleMAC          = wire.CodeBundleMAC
	CodeCompact            = wire.CodeCompact
	CodeContextMismatch    = wire.CodeContextMismatch
	CodeExists             = wire.CodeExists
	CodeExpired            = wire.CodeExpired
	CodeFinalized          = wire.CodeFinalized
	CodeForbidden          = wire.CodeForbidden
	CodeGroup              = wire.CodeGroup
	CodeIdentity           = wire.CodeIdentity
	CodeIdentityTooLong    = wire.CodeIdentityTooLong
	CodeInternal           = wire.CodeInternal
	CodeKeyMissing         = wire.CodeKeyMissing
	CodeKeyPolicy          = wire.CodeKeyPolicy
	CodeKeyReused          = wire.CodeKeyReused
	CodeKeyTooShort        = wire.CodeKeyTooShort
	CodeLegacyProtocol     = wire.CodeLegacyProtocol
	CodeLowEntropy         = wire.CodeLowEntropy
	CodeMustViolation      = wire.CodeMustViolation
	CodeNoKey              = wire.CodeNoKey
	CodeNoSpace            = wire.CodeNoSpace
	CodeNotFound           = wire.CodeNotFound
	CodeNotParty           = wire.CodeNotParty
	CodeRevoked            = wire.CodeRevoked
	CodeSameNode           = wire.CodeSameNode
	CodeStackLimit         = wire.CodeStackLimit
	CodeTargetNotAllowed   = wire.CodeTargetNotAllowed
	CodeTooLarge           = wire.CodeTooLarge
	CodeTooManyConnections = wire.CodeTooManyConnections
	CodeTooManyWatches     = wire.CodeTooManyWatches
	CodeUnavailable        = wire.CodeUnavailable
	CodeUnknownHash        = wire.CodeUnknownHash
	CodeUnknownKDF         = wire.CodeUnknownKDF
	CodeUnknownProtocol    = wire.CodeUnknownProtocol
	CodeUnsupported        = wire.CodeUnsupported
	ContentTypeBatch       = wire.ContentTypeBatch
	ContentTypeEnvelope    = wire.ContentTypeEnvelope
	ContentTypeKey         = wire.ContentTypeKey
	ContentTypeTLV         = wire.ContentTypeTLV
	DefaultMaxEarlyData    = wire.DefaultMaxEarlyData
	DefaultWatchWait       = wire.DefaultWatchWait
	FlagDHERequired        = wire.FlagDHERequired
	FlagEarlyData          = wire.FlagEarlyData
	FlagFinalized          = wire.FlagFinalized
	FlagGroup              = wire.FlagGroup
	FlagLowEntropy         = wire.FlagLowEntropy
	FlagNodeContext        = wire.FlagNodeContext
	HeaderError            = wire.HeaderError
	HeaderIdentity         = wire.HeaderIdentity
	LevelError             = wire.LevelError
	LevelInfo              = wire.LevelInfo
	LevelMust              = wire.LevelMust
	LevelShould            = wire.LevelShould
	LevelWarn              = wire.LevelWarn
	MaxBatchBody           = wire.MaxBatchBody
	MaxBody                = wire.MaxBody
	MaxWatchWait           = wire.MaxWatchWait
	RoleClient             = wire.RoleClient
	RoleServer             = wire.RoleServer
	TagContext             = wire.TagContext
	TagFlags               = wire.TagFlags
	TagGeneration          = wire.TagGeneration
	TagHash                = wire.TagHash
	TagIPSKX               = wire.TagIPSKX
	TagIdentity            = wire.TagIdentity
	TagImportedIdentity    = wire.TagImportedIdentity
	TagKDF                 = wire.TagKDF
	TagMaxEarlyData        = wire.TagMaxEarlyData
	TagNode                = wire.TagNode
	TagNotAfter            = wire.TagNotAfter
	TagOffer               = wire.TagOffer
	TagProtocol            = wire.TagProtocol
	TagRole                = wire.TagRole
	Version                = wire.Version
)

// Wire functions and errors (package wire).
var (
	AppendField     = wire.AppendField
	AppendOffers    = wire.AppendOffers
	EachField       = wire.EachField
	ErrTLV          = wire.ErrTLV
	MarshalEnvelope = wire.MarshalEnvelope
	ParseBinKey     = wire.ParseBinKey
	ParseBinOffers  = wire.ParseBinOffers
	ParseBinRequest = wire.ParseBinRequest
)
