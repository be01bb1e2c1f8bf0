package pkcs11

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	slot := uint(7)
	good := []struct {
		name string
		in   string
		want URI
	}{
		{"minimal", "pkcs11:token=psk?module-path=/usr/lib/softhsm/libsofthsm2.so",
			URI{Token: "psk", ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},
		{"pin file and object", "pkcs11:token=psk;object=wrapping-key?module-path=/m.so&pin-source=file:/etc/pskvault/pin",
			URI{Token: "psk", Object: "wrapping-key", ModulePath: "/m.so", PINSource: "file:/etc/pskvault/pin"}},
		{"file URI with authority", "pkcs11:token=a?module-path=/m.so&pin-source=file:///run/pin",
			URI{Token: "a", ModulePath: "/m.so", PINSource: "file:/run/pin"}},
		{"bare absolute pin path", "pkcs11:token=a?module-path=/m.so&pin-source=/run/pin",
			URI{Token: "a", ModulePath: "/m.so", PINSource: "file:/run/pin"}},
		{"systemd credential", "pkcs11:token=a?module-path=/m.so&pin-source=credential:hsm-pin",
			URI{Token: "a", ModulePath: "/m.so", PINSource: "credential:hsm-pin"}},
		{"percent-decoding", "pkcs11:token=My%20Token%3b1;manufacturer=SoftHSM%20project?module-path=/opt/my%20lib/p11.so",
			URI{Token: "My Token;1", Manufacturer: "SoftHSM project", ModulePath: "/opt/my lib/p11.so"}},
		{"id bytes", "pkcs11:serial=abc;id=%01%02%ff;type=secret-key?module-path=/m.so",
			URI{Serial: "abc", ID: []byte{1, 2, 0xff}, Type: "secret-key", ModulePath: "/m.so"}},
		{"slot-id and sessions", "pkcs11:slot-id=7?module-path=/m.so&x-sessions=3",
			URI{SlotID: &slot, ModulePath: "/m.so", Sessions: 3}},
		{"scheme case-insensitive", "PKCS11:token=a?module-path=/m.so", URI{Token: "a", ModulePath: "/m.so"}},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			u, err := ParseURI(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*u, c.want) {
				t.Fatalf("got %+v, want %+v", *u, c.want)
			}
			u2, err := ParseURI(u.String())
			if err != nil || !reflect.DeepEqual(u, u2) {
				t.Fatalf("round trip via %q: %+v, %v", u.String(), u2, err)
			}
		})
	}
	bad := []struct{ name, in, msg string }{
		{"wrong scheme", "pkcs12:token=a?module-path=/m.so", "must start with"},
		{"no module", "pkcs11:token=a", "module-path is required"},
		{"no token", "pkcs11:object=x?module-path=/m.so", "name the token"},
		{"relative module", "pkcs11:token=a?module-path=m.so", "absolute"},
		{"unknown path attribute", "pkcs11:token=a;tokne=b?module-path=/m.so", "unknown path attribute"},
		{"unknown query attribute", "pkcs11:token=a?module-path=/m.so&pin=1234", "unknown query attribute"},
		{"pin-value refused", "pkcs11:token=a?module-path=/m.so&pin-value=1234", "pin-value is refused"},
		{"module-name refused", "pkcs11:token=a?module-name=softhsm2", "module-name"},
		{"duplicate", "pkcs11:token=a;token=b?module-path=/m.so", "twice"},
		{"duplicate query", "pkcs11:token=a?module-path=/m.so&module-path=/n.so", "twice"},
		{"bad escape", "pkcs11:token=a%zz?module-path=/m.so", "invalid percent escape"},
		{"truncated escape", "pkcs11:token=a%2?module-path=/m.so", "truncated"},
		{"space unescaped", "pkcs11:token=a b?module-path=/m.so", "must be percent-encoded"},
		{"slash in path attr", "pkcs11:token=a/b?module-path=/m.so", "must be percent-encoded"},
		{"no equals", "pkcs11:token?module-path=/m.so", "no '='"},
		{"empty attribute", "pkcs11:token=a;;?module-path=/m.so", "empty path attribute"},
		{"empty query", "pkcs11:token=a?", "empty query"},
		{"fragment", "pkcs11:token=a?module-path=/m.so#x", "fragments"},
		{"pin command", "pkcs11:token=a?module-path=/m.so&pin-source=%7c/bin/cat", "commands"},
		{"relative pin file", "pkcs11:token=a?module-path=/m.so&pin-source=file:pin", "absolute"},
		{"credential path", "pkcs11:token=a?module-path=/m.so&pin-source=credential:../x", "plain file name"},
		{"id not encoded", "pkcs11:token=a;id=ab?module-path=/m.so", "percent-encoded bytes"},
		{"type not secret", "pkcs11:token=a;type=private?module-path=/m.so", "secret-key"},
		{"bad slot", "pkcs11:slot-id=-1?module-path=/m.so", "decimal"},
		{"sessions zero", "pkcs11:token=a?module-path=/m.so&x-sessions=0", "x-sessions"},
		{"sessions too many", "pkcs11:token=a?module-path=/m.so&x-sessions=65", "x-sessions"},
		{"uppercase name", "pkcs11:Token=a?module-path=/m.so", "lowercase"},
		{"library attr", "pkcs11:token=a;library-version=1?module-path=/m.so", "not supported"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseURI(c.in)
			if err == nil {
				t.Fatalf("accepted %q", c.in)
			}
			if !errors.Is(err, ErrBadURI) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q: want ErrBadURI mentioning %q", err, c.msg)
			}
		})
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=psk?module-path=/usr/lib/softhsm/libsofthsm2.so",
		"pkcs11:token=My%20Token;object=wk;id=%01%02?module-path=/m.so&pin-source=file:/p&x-sessions=4",
		"pkcs11:slot-id=3;serial=abc?module-path=/m.so&pin-source=credential:pin",
		"pkcs11:token=a?module-path=/m.so&pin-value=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrBadURI) {
				t.Fatalf("error does not wrap ErrBadURI: %v", err)
			}
			return
		}
		canon := u.String()
		u2, err := ParseURI(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, s, err)
		}
		if !reflect.DeepEqual(u, u2) {
			t.Fatalf("round trip of %q changed it: %+v vs %+v", s, u, u2)
		}
		if u2.String() != canon {
			t.Fatalf("String is not stable: %q vs %q", u2.String(), canon)
		}
	})
}
