package api

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// ActivationListeners returns the sockets systemd passed to this process,
// by name (LISTEN_FDNAMES, from FileDescriptorName= in the .socket unit).
// It honours LISTEN_PID: descriptors meant for another process are ignored.
// It unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES either way, so that
// children never inherit them. With no activation it returns nil, nil.
func ActivationListeners() (map[string]net.Listener, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if pid == "" || fds == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 || n > 16 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q", fds)
	}
	nameList := strings.Split(names, ":")
	out := map[string]net.Listener{}
	for i := range n {
		name := "unknown"
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		f := os.NewFile(uintptr(listenFDsStart+i), "LISTEN_FD_"+strconv.Itoa(listenFDsStart+i)+":"+name)
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("socket activation: descriptor %d (%s): %w", listenFDsStart+i, name, err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, fmt.Errorf("socket activation: descriptor %d (%s) is not a Unix stream socket", listenFDsStart+i, name)
		}
		ul.SetUnlinkOnClose(false) // systemd owns the socket file
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("socket activation: two sockets named %q (set FileDescriptorName=admin / data)", name)
		}
		out[name] = ul
	}
	return out, nil
}
