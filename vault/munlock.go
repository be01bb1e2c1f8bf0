package vault

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The daemon locks its memory (mlockall with MCL_FUTURE | MCL_ONFAULT) so
// that key buffers never reach swap. That would also lock every page of
// vault.db that bbolt's read-only mapping ever touched: after a full list
// or check of a million records the whole file would stay pinned in RAM
// for good, and each remap as the file grows would be charged against
// RLIMIT_MEMLOCK. Nothing in the mapping needs it: vault.db holds secrets
// only sealed (keyslots.go), and its pages are on disk anyway. So the
// mappings of vault.db are unlocked after bbolt maps them (boltStore
// calls this after Open, after a compaction and after a write that may
// have remapped the file); their pages are then ordinary page cache.

// unlockMappings munlocks every mapping of the file at path in this
// process and returns the size of the largest (0 when none was found).
func unlockMappings(path string) int64 {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	if p, err := filepath.Abs(path); err == nil {
		path = p
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var largest int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode pathname
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		unix.Syscall(unix.SYS_MUNLOCK, uintptr(start), uintptr(end-start), 0)
		largest = max(largest, int64(end-start))
	}
	return largest
}
