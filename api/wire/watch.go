package wire

import (
	"time"
)

// Watch limits (docs/API.md, "POST /v1/watch").
const (
	DefaultWatchWait = 25 * time.Second // how long a watch waits when wait is not given
	MaxWatchWait     = 50 * time.Second // the longest wait served (under the client's 60 s timeout)
)

// CodeTooManyWatches answers a watch over the caps.
const CodeTooManyWatches = "too_many_watches"

// WatchResponse answers POST /v1/watch. Token is opaque: it names the
// caller's view (what it may derive, under which policy), and nothing
// else; Changed reports whether it differs from the since token given.
type WatchResponse struct {
	Token   string `json:"token"`
	Changed bool   `json:"changed"`
}

// WatchRequest is POST /v1/watch: Since is the token of the view the
// caller has ("" answers at once with the current one); WaitSeconds how
// long to wait for a change (0 or absent: DefaultWatchWait; at most
// MaxWatchWait; -1 answers at once).
type WatchRequest struct {
	Since       string `json:"since,omitempty"`
	WaitSeconds *int   `json:"wait_seconds,omitempty"`
}
