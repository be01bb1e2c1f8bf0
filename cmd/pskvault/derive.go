package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/pskvault/pskvault/client"
)

func init() {
	register(&command{name: "derive", summary: "derive an RFC 9258 imported PSK (ipskx) through the daemon",
		long: "Asks the data socket (or, without --data-socket, the admin socket) for the RFC 9258 imported PSK of one external identity, context, protocol and KDF; the daemon's access lists decide whether you may. The ipskx is key material: it is printed only to standard output (and is the one key field --json carries).",
		examples: []example{
			{"", "pskvault derive --identity link-a-b --json"},
			{"a line for openssl s_client -psk_identity/-psk", "pskvault derive --identity link-a-b --context-hex 0102 --kdf sha384 --format openssl"},
			{"a group PSK", "pskvault derive --identity group-1 --peer node-b --role client"},
		},
		uses:  useSocket | useDataSocket,
		setup: setupDerive})
}

func setupDerive(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	var id identityFlags
	id.register(fs)
	ctxHex := fs.String("context-hex", "", "RFC 9258 `context` in hex (sent in clear: never secret)")
	proto := fs.String("protocol", "tls1.3", "target `protocol`: tls1.3 or dtls1.3")
	kdf := fs.String("kdf", "sha256", "target `KDF`: sha256 (HKDF_SHA256) or sha384 (HKDF_SHA384)")
	asJSON := fs.Bool("json", false, "print JSON with imported_identity and ipskx in hex")
	var df deriveFlags // --peer, --role, --format (format.go)
	df.register(fs)
	return func(ctx context.Context, args []string) error {
		if *asJSON && df.format != "" {
			// One answer, one form: a JSON object with a tool's command
			// line after it would be neither valid JSON nor a clean line.
			return usagef("--json and --format exclude each other: --json prints the whole answer (imported_identity, ipskx and the policy fields), --format a line for one stack's tools")
		}
		b, err := id.bytes()
		if err != nil {
			return err
		}
		c, err := hex.DecodeString(*ctxHex)
		if err != nil {
			return usagef("--context-hex: not a hex string")
		}
		d, err := g.dataClient().Derive(ctx, client.DeriveRequest{Identity: b, Context: c, Protocol: *proto, KDF: *kdf, Peer: df.peer, Role: df.role})
		if err != nil {
			return err
		}
		defer clear(d.IPSKX)
		r := d.Response
		r.IPSKX = hex.EncodeToString(d.IPSKX)
		if *asJSON {
			return json.NewEncoder(g.stdout).Encode(r)
		}
		if df.format != "" {
			return writeFormat(g, df.format, r)
		}
		fmt.Fprintf(g.stdout, "imported_identity %s\nipskx             %s\nprotocol          %s\nkdf               %s\nrole              %s\n", r.ImportedIdentity, r.IPSKX, r.Protocol, r.KDF, r.Role)
		return nil
	}
}
