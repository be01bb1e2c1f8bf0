package main

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// harden makes the daemon a poor place to look for keys: a restrictive
// umask, no core dumps, not dumpable (no ptrace by other processes of the
// same user, no /proc/PID/mem), and memory locked out of swap when allowed.
// mlock is "auto" (lock when the limits allow, warn otherwise), "require"
// (fail when it cannot) or "off".
func harden(log *slog.Logger, mlock string) error {
	unix.Umask(0o077)
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("disable core dumps: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	switch mlock {
	case "off":
		return nil
	case "auto", "require":
	default:
		return usagef("--mlock %q: want auto, require or off", mlock)
	}
	// MCL_ONFAULT locks pages as they are touched instead of populating the
	// Go runtime's large reservations up front.
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if err == nil {
		log.Debug("memory locked (mlockall)")
		return nil
	}
	if mlock == "require" {
		return fmt.Errorf("mlockall: %w (raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity, or grant CAP_IPC_LOCK)", err)
	}
	if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
		log.Warn("memory not locked: key buffers may reach swap", "err", err, "hint", "raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity) or grant CAP_IPC_LOCK")
		return nil
	}
	log.Warn("memory not locked", "err", err)
	return nil
}
