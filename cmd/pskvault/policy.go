package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/vault"
)

// policyFlags are the RFC 9257 flags of psk import and psk create.
type policyFlags struct {
	allowLowEntropy, allowPSKKE, allowEarlyData bool
	group                                       string
	nodeContext, randomIdentity                 bool
	allowIdentityWarnings, finalize             bool
	source, stack                               string
}

func (f *policyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.allowLowEntropy, "allow-low-entropy", false, "import a key that looks low-entropy (RFC 9257 section 4.2); the PSK is flagged for good")
	fs.BoolVar(&f.allowPSKKE, "allow-psk-ke", false, "allow psk_ke, PSK-only key exchange without forward secrecy (default: psk_dhe_ke required, RFC 9257 section 6)")
	fs.BoolVar(&f.allowEarlyData, "allow-early-data", false, "allow 0-RTT early data under this PSK (replayable; RFC 9257 section 8)")
	fs.StringVar(&f.group, "group", "", "make a group PSK shared by these `nodes` (comma-separated, this node included) instead of --client/--server; implies --node-context")
	fs.BoolVar(&f.nodeContext, "node-context", false, "require the canonical node-identifier importer context (recommended: stops rerouting and Selfie attacks)")
	fs.BoolVar(&f.randomIdentity, "random-identity", false, "let the vault pick a random opaque identity (pskv1-...) that reveals nothing (RFC 9257 section 7)")
	fs.BoolVar(&f.allowIdentityWarnings, "allow-identity-warnings", false, "accept an identity that is not NFC, has invisible characters or edge white space (recorded)")
	fs.BoolVar(&f.finalize, "finalize", false, "finalize at once: keep the imported keys for the allowed targets and destroy the main key (RFC 9257 section 6)")
	fs.StringVar(&f.source, "source", "", "where the key comes from, recorded as its provenance (e.g. \"peer node-b, USB stick\")")
	fs.StringVar(&f.stack, "stack", "", "check the identity and key against a TLS `stack`'s limits: "+stackNames())
}

func (f *policyFlags) spec() (client.PolicySpec, error) {
	p := client.PolicySpec{
		AllowLowEntropy: f.allowLowEntropy, AllowPSKKE: f.allowPSKKE, AllowEarlyData: f.allowEarlyData,
		NodeContext: f.nodeContext, RandomIdentity: f.randomIdentity, AllowIdentityWarnings: f.allowIdentityWarnings,
		Finalize: f.finalize, Provenance: f.source, Stack: f.stack,
	}
	if f.group != "" {
		p.Group = strings.Split(f.group, ",")
	}
	return p, nil
}

// warnPolicy prints what the user should know about a new PSK to stderr.
func warnPolicy(g *globals, p *api.PSK) {
	if !p.DHERequired {
		fmt.Fprintln(g.stderr, "pskvault: warning: psk_ke allowed: connections under this PSK have no forward secrecy (RFC 9257 section 6)")
	}
	if p.EarlyData {
		fmt.Fprintln(g.stderr, "pskvault: warning: early data allowed: 0-RTT data is replayable and protected only by the PSK and the client random (RFC 9257 section 8)")
	}
	for _, w := range p.PolicyWarning {
		fmt.Fprintf(g.stderr, "pskvault: warning: %s\n", w)
	}
}

// policyRows adds the RFC 9257 rows to a record listing.
func policyRows(row func(k, v string), p *api.PSK) {
	row("kind", p.Kind)
	if len(p.Group) > 0 {
		row("group", strings.Join(p.Group, ","))
	}
	row("psk_dhe_ke_required", fmt.Sprint(p.DHERequired))
	row("early_data_allowed", fmt.Sprint(p.EarlyData))
	row("node_context", fmt.Sprint(p.NodeContext))
	row("finalized", fmt.Sprint(p.Finalized))
	row("generation", fmt.Sprint(p.Generation))
	if p.Provenance != "" {
		row("provenance", p.Provenance)
	}
	if p.LowEntropy {
		row("low_entropy", "true (imported with --allow-low-entropy)")
	}
	if p.RotatedFrom != "" {
		row("rotated_from", p.RotatedFrom)
	}
	if p.RotatedTo != "" {
		row("rotated_to", p.RotatedTo)
	}
	if !p.RevokedAt.IsZero() {
		row("revoked", p.RevokedAt.Format("2006-01-02T15:04:05Z07:00")+" "+p.RevokeReason)
	}
	for _, w := range p.PolicyWarning {
		row("warning", w)
	}
}

func stackNames() string { return strings.Join(vault.StackNames(), ", ") }
