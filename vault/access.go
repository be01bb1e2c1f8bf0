package vault

import (
	"errors"
	"fmt"
	"math"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// ErrDenied marks a derivation refused by the access lists. It also matches
// ErrNotFound and has the same text, so that a caller without rights gets the
// very answer of a PSK that does not exist and cannot probe which identities
// a vault holds; only the audit log tells the two apart.
var ErrDenied = errors.New("access denied")

type deniedError struct{}

func (deniedError) Error() string { return ErrNotFound.Error() }

func (deniedError) Is(target error) bool { return target == ErrDenied || target == ErrNotFound }

// Denied is the error returned for a refused caller.
var Denied error = deniedError{}

// Caller is the local process on the other end of a socket, as the kernel
// reports it (SO_PEERCRED, SO_PEERGROUPS).
type Caller struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	PID    int32    `json:"pid"`
	Groups []uint32 `json:"-"` // supplementary groups, when known
}

// InGroup reports whether gid is the caller's primary or a supplementary group.
func (c *Caller) InGroup(gid uint32) bool { return c.GID == gid || slices.Contains(c.Groups, gid) }

// Principal is one access-list entry: a user or a group, by number.
type Principal struct {
	Group bool
	ID    uint32
	Name  string // as written, for messages
}

func (p Principal) String() string {
	if p.Group {
		return "group:" + p.Name
	}
	return "user:" + p.Name
}

// ParsePrincipal parses "user:NAME", "user:UID", "group:NAME" or "group:GID".
// Names are resolved now, through the system user and group databases.
func ParsePrincipal(s string) (Principal, error) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" || (kind != "user" && kind != "group") {
		return Principal{}, fmt.Errorf("%w: access entry %q: want user:NAME, user:UID, group:NAME or group:GID", ErrInvalid, s)
	}
	p := Principal{Group: kind == "group", Name: name}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		if n == math.MaxUint32 {
			return Principal{}, fmt.Errorf("%w: access entry %q: id %d is reserved (it stands for a caller whose credentials are unknown)", ErrInvalid, s, n)
		}
		p.ID = uint32(n)
		return p, nil
	}
	var idStr string
	if p.Group {
		g, err := user.LookupGroup(name)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: access entry %q: no such group", ErrInvalid, s)
		}
		idStr = g.Gid
	} else {
		u, err := user.Lookup(name)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: access entry %q: no such user", ErrInvalid, s)
		}
		idStr = u.Uid
	}
	n, err := strconv.ParseUint(idStr, 10, 32)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: access entry %q: non-numeric id %q", ErrInvalid, s, idStr)
	}
	p.ID = uint32(n)
	return p, nil
}

// Matches reports whether the principal names the caller.
func (p Principal) Matches(c *Caller) bool {
	if p.Group {
		return c.InGroup(p.ID)
	}
	return c.UID == p.ID
}

// AccessRule says who may derive the keys of a PSK in each role this node
// can hold: Client lists the callers that may derive client-role keys (the
// PSK's client node is this vault), Server the server-role ones.
type AccessRule struct {
	Client []Principal
	Server []Principal
}

// Allows reports whether c may derive a key of role ("client" or "server").
func (r AccessRule) Allows(c *Caller, role string) bool {
	list := r.Server
	if role == "client" {
		list = r.Client
	}
	for _, p := range list {
		if p.Matches(c) {
			return true
		}
	}
	return false
}

// Access is the access model of a vault's sockets. Derivation is denied by
// default: a caller may derive a PSK's key when it is one of the Trusted
// uids (root and the daemon's own uid), or the PSK's own rule lets it, or
// the PSK has no rule of its own and Default lets it.
type Access struct {
	Trusted []uint32              // uids allowed everything
	Default AccessRule            // for PSKs without a rule of their own
	PSKs    map[string]AccessRule // by string(external identity)
}

// DefaultAccess trusts root and uid (the daemon's), and nobody else.
func DefaultAccess(uid uint32) *Access {
	a := &Access{Trusted: []uint32{0}}
	if uid != 0 {
		a.Trusted = append(a.Trusted, uid)
	}
	return a
}

// IsTrusted reports whether the caller is root or the daemon's uid.
func (a *Access) IsTrusted(c *Caller) bool { return slices.Contains(a.Trusted, c.UID) }

// maxLineage bounds the walk back through a PSK's rotations.
const maxLineage = 64

// allows reports whether c may derive role keys of p. A nil caller is an
// in-process one and always allowed. The rule is the PSK's own or, when it
// has none, that of the nearest earlier generation it was rotated from
// (rotation keeps a link's access list), else the default.
func (v *Vault) allows(c *Caller, p *PSK, role string) bool {
	a := v.Access()
	if c == nil || a.IsTrusted(c) {
		return true
	}
	rule, ok := a.PSKs[string(p.Identity)]
	for prev, i := p.RotatedFrom, 0; !ok && len(prev) > 0 && i < maxLineage; i++ {
		rule, ok = a.PSKs[string(prev)]
		older, err := v.peek(prev)
		if err != nil {
			break // deleted (or unreadable): the lineage ends here
		}
		prev = older.RotatedFrom
	}
	if !ok {
		rule = a.Default
	}
	return rule.Allows(c, role)
}

// SetAccess replaces the vault's access lists; the default trusts root and
// the process's own uid only.
func (v *Vault) SetAccess(a *Access) {
	v.access.Store(a)
	v.changes.notify()
}

// Access returns the vault's access lists.
func (v *Vault) Access() *Access { return v.access.Load() }

// MayDerive reports whether c may derive p's keys in some role this node
// can hold.
func (v *Vault) MayDerive(c *Caller, p *PSK) bool { return v.mayDerive(c, p, "") }

// mayDerive is the access check made before anything about p is revealed.
// A pairwise PSK has one role on this node; for a group PSK the role asked
// for is checked, or either role when none is named yet (Derive checks the
// role it settles on again).
func (v *Vault) mayDerive(c *Caller, p *PSK, role string) bool {
	switch {
	case !p.IsGroup():
		role = "server"
		if p.ClientNode == v.cfg.NodeID {
			role = "client"
		}
	case role == "":
		return v.allows(c, p, "client") || v.allows(c, p, "server")
	}
	return v.allows(c, p, role)
}
