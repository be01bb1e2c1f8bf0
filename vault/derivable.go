package vault

import (
	"errors"
	"slices"
)

// EachDerivable calls fn, in identity order, with every record c may
// derive in some role (MayDerive), without its secret, until fn returns
// false. The watch digest (View), the keys endpoint and offers list a
// caller's records through it.
//
// When the default rule lets c derive nothing (the usual case for a
// consumer: it is named in the rules of its own PSKs), only the records the
// access lists name, and the later generations rotated from them that have
// no rule of their own (which inherit it: allows), can be c's: those are
// read, O(rules + their rotations), not every record of the vault.
// Otherwise (a trusted caller, or one the default rule admits) every record
// is read. Either way the result is filtered by mayDerive, so it is exactly
// c's records.
func (v *Vault) EachDerivable(c *Caller, fn func(*PSK) bool) error {
	a := v.Access()
	if c == nil || a.IsTrusted(c) || a.Default.Allows(c, "client") || a.Default.Allows(c, "server") {
		return v.each(false, func(p *PSK) bool {
			if !v.mayDerive(c, p, "") {
				return true
			}
			return fn(p)
		})
	}
	found := map[string]*PSK{}
	for id, rule := range a.PSKs {
		if !rule.Allows(c, "client") && !rule.Allows(c, "server") {
			continue
		}
		// The record, then the generations rotated from it, as far as
		// allows looks back for an inherited rule.
		cur := []byte(id)
		for i := 0; len(cur) > 0 && i <= maxLineage; i++ {
			if _, own := a.PSKs[string(cur)]; own && i > 0 {
				break // its own rule decides (it is listed itself)
			}
			if _, done := found[string(cur)]; done {
				break
			}
			p, err := v.peek(cur)
			if errors.Is(err, ErrNotFound) {
				break
			}
			if err != nil {
				return err
			}
			found[string(cur)] = p
			cur = p.RotatedTo
		}
	}
	ids := make([]string, 0, len(found))
	for id := range found {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if p := found[id]; v.mayDerive(c, p, "") && !fn(p) {
			return nil
		}
	}
	return nil
}
