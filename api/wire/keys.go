package wire

// KeysRequest is POST /v1/keys, for consumers that keep key files (pskvault
// agent): every key this node holds in Role ("client" or "server") for one
// target, optionally only those shared with node Peer. Group PSKs need a
// peer (their keys depend on it) and are listed only when one is given.
// ContextHex is the RFC 9258 context (PSKs that require the node context
// get theirs whatever is given).
type KeysRequest struct {
	Role       string `json:"role"`
	Peer       string `json:"peer,omitempty"`
	ContextHex string `json:"context_hex,omitempty"`
	Protocol   string `json:"protocol"`
	KDF        string `json:"kdf"`
}

// KeyList answers POST /v1/keys: entries as offers have them, newest
// generation first. Empty when nothing matches, whatever the reason.
type KeyList struct {
	Keys []Offer `json:"keys"`
}
