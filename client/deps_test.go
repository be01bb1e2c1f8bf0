package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientDependencies: a Go program that imports the client must not
// pull in the server's storage or identity checks (issue 13): the client
// speaks the protocol through package api/wire only.
func TestClientDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/pskvault/pskvault/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"go.etcd.io/bbolt",
		"github.com/mtibben/confusables",
		"golang.org/x/text",
		"github.com/pskvault/pskvault/vault",
		"github.com/pskvault/pskvault/api", // the server; api/wire is allowed
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") && dep != "github.com/pskvault/pskvault/api/wire" {
				t.Errorf("client depends on %s (forbidden: %s)", dep, f)
			}
		}
	}
}
