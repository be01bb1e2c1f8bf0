package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/vault"
)

// fill sets every exported field of v to a non-zero value, recursively.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	}
}

// TestWireMirrors: the client decodes a status's backend and a check
// report with package wire's mirrors of the vault types; every field the
// vault encodes must survive the round trip, so the mirrors cannot drift.
func TestWireMirrors(t *testing.T) {
	for _, c := range []struct {
		name       string
		from, into any
	}{
		{"Report", &vault.Report{}, &wire.Report{}},
		{"BackendInfo", &vault.BackendInfo{}, &wire.BackendInfo{}},
	} {
		fill(reflect.ValueOf(c.from).Elem())
		enc, err := json.Marshal(c.from)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(enc))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c.into); err != nil {
			t.Fatalf("%s: wire mirror does not decode the vault's JSON: %v", c.name, err)
		}
		again, _ := json.Marshal(c.into)
		var a, b any
		json.Unmarshal(enc, &a)
		json.Unmarshal(again, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: round trip through wire differs:\nvault: %s\nwire:  %s", c.name, enc, again)
		}
	}
	for _, l := range [][2]string{{vault.LevelMust, wire.LevelMust}, {vault.LevelShould, wire.LevelShould}, {vault.LevelWarn, wire.LevelWarn}, {vault.LevelInfo, wire.LevelInfo}, {vault.LevelError, wire.LevelError}} {
		if l[0] != l[1] {
			t.Errorf("finding level %q on the wire is %q in package wire", l[0], l[1])
		}
	}
}
