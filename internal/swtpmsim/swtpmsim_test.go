package swtpmsim

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// A restart must come back on the ports clients know, even when another
// process holds one of them for a moment after the old swtpm released it.
func TestRestartKeepsPortsThroughABriefCollision(t *testing.T) {
	s := Start(t)
	port, ctrl := s.Port, s.CtrlPort
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("cannot take the freed port for the test: %v", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		l.Close()
	}()
	if err := s.Restart(); err != nil {
		t.Fatalf("restart while the port was briefly taken: %v", err)
	}
	if s.Port != port || s.CtrlPort != ctrl {
		t.Fatalf("restarted on ports %d/%d, want %d/%d", s.Port, s.CtrlPort, port, ctrl)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("restarted swtpm not reachable at %s: %v", s.Addr(), err)
	}
	c.Close()
}
