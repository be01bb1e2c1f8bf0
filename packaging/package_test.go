package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// want is every file the .deb must hold, with its mode and owner.
var want = map[string]string{
	"./usr/bin/pskvault":                              "-rwxr-xr-x root/root",
	"./usr/lib/systemd/system/pskvault.service":       "-rw-r--r-- root/root",
	"./usr/lib/systemd/system/pskvault-admin.socket":  "-rw-r--r-- root/root",
	"./usr/lib/systemd/system/pskvault-data.socket":   "-rw-r--r-- root/root",
	"./usr/lib/systemd/system/pskvault-agent.service": "-rw-r--r-- root/root",
	"./usr/lib/systemd/system/pskvault-sweep.service": "-rw-r--r-- root/root",
	"./usr/lib/systemd/system/pskvault-sweep.timer":   "-rw-r--r-- root/root",
	"./usr/lib/sysusers.d/pskvault.conf":              "-rw-r--r-- root/root",
	"./usr/lib/tmpfiles.d/pskvault.conf":              "-rw-r--r-- root/root",
	"./etc/pskvault/pskvault.toml":                    "-rw-r--r-- root/root",
	"./etc/logrotate.d/pskvault":                      "-rw-r--r-- root/root",
	"./usr/share/doc/pskvault/API.md":                 "-rw-r--r-- root/root",
	"./usr/share/doc/pskvault/README.md":              "-rw-r--r-- root/root",
}

func require(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("%s not installed and PSKVAULT_REQUIRE_SIMULATORS=1 (./test.sh installs it)", name)
		}
		t.Skipf("%s not installed (./test.sh installs it)", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeb builds the .deb with packaging/build.sh (the pinned nfpm), checks
// its files, modes, owners and conffiles with dpkg-deb, unpacks it into a
// throwaway root with dpkg --root, creates the users and directories there
// with systemd-sysusers / systemd-tmpfiles --root as the postinst does on a
// host, and checks the installed units with systemd-analyze verify and the
// installed default configuration with the installed binary.
func TestDeb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpkg --root and systemd-tmpfiles chown files")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-sysusers", "systemd-tmpfiles", "systemd-analyze", "logrotate"} {
		require(t, tool)
	}
	deb := build(t, "deb", "pskvault_*.deb")

	// Contents: path -> "mode owner/group".
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(t, "dpkg-deb", "-c", deb)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 6 {
			got[f[len(f)-1]] = f[0] + " " + f[1]
		}
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing from the .deb", p)
		} else if g != w {
			t.Errorf("%s: %s, want %s", p, g, w)
		}
	}
	info := run(t, "dpkg-deb", "-I", deb)
	for _, s := range []string{"Package: pskvault", "Architecture: ", "Depends: libc6", "postinst", "prerm"} {
		if !strings.Contains(info, s) {
			t.Errorf("dpkg-deb -I: no %q in\n%s", s, info)
		}
	}
	conf := run(t, "dpkg-deb", "-f", deb, "Package") // sanity: a field reads back
	if strings.TrimSpace(conf) != "pskvault" {
		t.Errorf("Package field %q", conf)
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	cf, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"/etc/pskvault/pskvault.toml", "/etc/logrotate.d/pskvault"} {
		if !bytes.Contains(cf, []byte(c+"\n")) {
			t.Errorf("conffiles lacks %s (an upgrade would overwrite the admin's edits):\n%s", c, cf)
		}
	}

	// Install into a throwaway root. --unpack: the postinst would run
	// systemd-sysusers on the host (dpkg chroots only with a full system in
	// the root); the same two steps are run below with --root instead.
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "--root="+root, "--unpack", deb)
	if st := run(t, "dpkg", "--root="+root, "-s", "pskvault"); !strings.Contains(st, "Status: install ok unpacked") {
		t.Errorf("dpkg -s after unpack:\n%s", st)
	}
	run(t, "systemd-sysusers", "--root="+root)
	run(t, "systemd-tmpfiles", "--root="+root, "--create")
	uid, err := strconv.Atoi(lookup(t, filepath.Join(root, "etc/passwd"), "pskvault", 2))
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.Atoi(lookup(t, filepath.Join(root, "etc/group"), "pskvault-admin", 2))
	if err != nil {
		t.Fatal(err)
	}
	if tss := lookup(t, filepath.Join(root, "etc/group"), "tss", 3); !strings.Contains(","+tss+",", ",pskvault,") {
		t.Errorf("group tss members %q: pskvault is not one (no TPM access)", tss)
	}
	checkDir(t, filepath.Join(root, "var/lib/pskvault"), 0o700, uid, -1)
	checkDir(t, filepath.Join(root, "run/pskvault/admin"), 0o750, 0, gid)
	checkDir(t, filepath.Join(root, "run/pskvault/data"), 0o755, 0, 0)

	// The installed units, as installed (only the binary's path made the
	// unpacked one), with systemd's own parser: no output at all.
	bin := filepath.Join(root, "usr/bin/pskvault")
	units, _ := filepath.Glob(filepath.Join(root, "usr/lib/systemd/system", "pskvault*"))
	if len(units) != 6 {
		t.Fatalf("installed units %v, want 6", units)
	}
	udir := t.TempDir()
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/bin/pskvault"), []byte(bin))
		if err := os.WriteFile(filepath.Join(udir, filepath.Base(u)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(u))
	}
	verify := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, names...)...)
	verify.Dir = udir
	if out, err := verify.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
	}

	// The installed binary runs.
	if v := run(t, bin, "--version"); !strings.HasPrefix(v, "pskvault ") {
		t.Errorf("installed pskvault --version: %q", v)
	}
	// Built with cgo: without it the PKCS#11 backend is a stub.
	if bi := run(t, "go", "version", "-m", bin); !strings.Contains(bi, "CGO_ENABLED=1") {
		t.Errorf("the packaged binary was built without cgo (no PKCS#11 backend):\n%s", bi)
	}

	// The installed default configuration passes the installed binary's
	// check. Its admin group exists only in the throwaway root, so the
	// copy checked names root's group instead (the check resolves names on
	// this host).
	// (dpkg --unpack leaves conffiles as .dpkg-new until configure.)
	b, err := os.ReadFile(filepath.Join(root, "etc/pskvault/pskvault.toml.dpkg-new"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`admin_group = "pskvault-admin"`)) {
		t.Fatal("the default configuration no longer names admin_group pskvault-admin; update this test")
	}
	b = bytes.Replace(b, []byte(`admin_group = "pskvault-admin"`), []byte(`admin_group = "root"`), 1)
	cfg := filepath.Join(t.TempDir(), "pskvault.toml")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", "--config", cfg).CombinedOutput(); err != nil {
		t.Errorf("installed pskvault config check of the default configuration: %v\n%s", err, out)
	}

	logrotate(t, filepath.Join(root, "etc/logrotate.d/pskvault.dpkg-new"))
}

// logrotate runs the installed snippet (forced) on an audit log in a
// directory like /var/lib/pskvault: the log is renamed and no new file is
// created (nocreate: the daemon makes it, 0600, on reload). Only the path and
// the su line differ (the host has no pskvault user).
func logrotate(t *testing.T, snippet string) {
	b, err := os.ReadFile(snippet)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "audit.log")
	for _, r := range [][2]string{{"/var/lib/pskvault/audit.log", log}, {"su pskvault pskvault", "su root root"}} {
		if !bytes.Contains(b, []byte(r[0])) {
			t.Fatalf("logrotate snippet: no %q; update this test", r[0])
		}
		b = bytes.ReplaceAll(b, []byte(r[0]), []byte(r[1]))
	}
	conf := filepath.Join(t.TempDir(), "pskvault")
	if err := os.WriteFile(conf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(log, []byte("{\"op\":\"derive\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("logrotate", "-v", "-f", "-s", filepath.Join(dir, "state"), conf).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("error")) {
		t.Fatalf("logrotate of the installed snippet: %v\n%s", err, out)
	}
	if _, err := os.Lstat(log); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after rotation %s exists (%v): the snippet created it (want nocreate)", log, err)
	}
	if rot, err := os.ReadFile(log + ".1"); err != nil || !bytes.Contains(rot, []byte("derive")) {
		t.Errorf("rotated file %s.1: %v", log, err)
	}
}

// build runs packaging/build.sh FORMAT into a temporary directory and
// returns the one package it made.
func build(t *testing.T, format, glob string) string {
	t.Helper()
	nfpm, err := exec.Command("./build.sh", "--nfpm").CombinedOutput()
	if err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("cannot fetch the pinned nfpm through the Go module proxy: %v\n%s", err, nfpm)
		}
		t.Skipf("cannot fetch the pinned nfpm: %v\n%s", err, nfpm)
	}
	dist := t.TempDir()
	cmd := exec.Command("./build.sh", format)
	cmd.Env = append(os.Environ(), "DIST="+dist, "NFPM="+strings.TrimSpace(lastLine(string(nfpm))))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh %s: %v\n%s", format, err, out)
	}
	pkgs, _ := filepath.Glob(filepath.Join(dist, glob))
	if len(pkgs) != 1 {
		t.Fatalf("build.sh %s made %v, want one %s", format, pkgs, glob)
	}
	return pkgs[0]
}

// TestRPM builds the .rpm and checks every file, mode and owner (the same
// list as the .deb's), the configuration files and the post-install script
// with rpm -qp.
func TestRPM(t *testing.T) {
	require(t, "rpm")
	pkg := build(t, "rpm", "pskvault-*.rpm")
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(t, "rpm", "-qlpv", pkg)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 9 {
			got["."+f[len(f)-1]] = f[0] + " " + f[2] + "/" + f[3]
		}
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing from the .rpm", p)
		} else if g != w {
			t.Errorf("%s: %s, want %s", p, g, w)
		}
	}
	conf := run(t, "rpm", "-qpc", pkg)
	for _, c := range []string{"/etc/pskvault/pskvault.toml", "/etc/logrotate.d/pskvault"} {
		if !strings.Contains(conf, c+"\n") {
			t.Errorf("rpm -qpc lacks %s:\n%s", c, conf)
		}
	}
	if s := run(t, "rpm", "-qp", "--scripts", pkg); !strings.Contains(s, "systemd-sysusers pskvault.conf") || !strings.Contains(s, "preuninstall scriptlet") {
		t.Errorf("the .rpm's scripts: no post-install that creates the users, or no pre-uninstall:\n%s", s)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// lookup returns field n (0-based) of NAME's line in a passwd or group file.
func lookup(t *testing.T, file, name string, n int) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if f[0] == name && len(f) > n {
			return f[n]
		}
	}
	t.Fatalf("%s: no %s", file, name)
	return ""
}

func checkDir(t *testing.T, p string, mode os.FileMode, uid, gid int) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	sys := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || st.Mode().Perm() != mode {
		t.Errorf("%s: %v, want a directory %04o", p, st.Mode(), mode)
	}
	if uid >= 0 && int(sys.Uid) != uid {
		t.Errorf("%s: owner uid %d, want %d", p, sys.Uid, uid)
	}
	if gid >= 0 && int(sys.Gid) != gid {
		t.Errorf("%s: group gid %d, want %d", p, sys.Gid, gid)
	}
}
