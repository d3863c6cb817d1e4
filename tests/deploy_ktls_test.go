package tests

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// testInstalledProbe: inside the shipped sandbox (ProcSubset=pid hides
// /proc/sys) the accept loop's answer on kernel TLS is the host's: the
// container shares the host's kernel, and modprobe@tls.service is skipped
// in a container (no CAP_SYS_MODULE), so the module is there inside exactly
// when the host has it loaded. Where it is missing, the start line says so
// from the kernel's own answer, not that a file could not be read.
func testInstalledProbe(t *testing.T, c *container) {
	c.exec(t, time.Minute, "journalctl", "--sync")
	out, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-o", "cat", "-u", "rsync-ssl.service")
	var start string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "serving ") && strings.Contains(line, "datapath ") {
			start = line
		}
	}
	if start == "" {
		t.Fatalf("no start line (serving ... datapath ...) from rsync-ssl.service:\n%s", out)
	}
	host := kernelHasTLS(t)
	t.Logf("host kernel lists the tls ULP: %v; start line inside: %s", host, start)
	bridged := strings.Contains(start, "every session bridged")
	switch {
	case host && bridged:
		t.Errorf("the host's kernel has the tls module loaded, but inside the sandbox serve says otherwise:\n%s", start)
	case !host && !strings.Contains(start, `every session bridged: the kernel has no tls module (setsockopt TCP_ULP "tls": ENOENT`):
		t.Errorf("the host's kernel has no tls module; the start line inside the sandbox does not say so from the kernel's answer:\n%s", start)
	}
	// The summary's journal fields name the data path, as its text does.
	want := map[bool]string{true: "ktls", false: "bridge"}[host]
	es := journalEntries(t, c, "RSYNC_SSL_MODULE=data")
	if len(es) == 0 {
		t.Fatal("no journal entry with RSYNC_SSL_MODULE=data")
	}
	if got := es[len(es)-1]["RSYNC_SSL_DATAPATH"]; got != want {
		t.Errorf("RSYNC_SSL_DATAPATH=%v in the pull's journal entry, want %s (RSYNC_SSL_PAIR=%v)", got, want, es[len(es)-1]["RSYNC_SSL_PAIR"])
	}
}

// doubledPrefix is journald's "rsync-ssl-shim[PID]: " followed by our own
// prefix or timestamp, which journald adds itself.
var doubledPrefix = regexp.MustCompile(`rsync-ssl-shim\[\d+\]: (rsync-ssl-shim\[\d+\]: |\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)`)

// testInstalledJournalPrefix: journalctl shows each line of the service with
// one "rsync-ssl-shim[PID]: ", the one journald adds, and no timestamp of
// ours, whether the line came over stderr or as a native journal entry.
func testInstalledJournalPrefix(t *testing.T, c *container) {
	c.exec(t, time.Minute, "journalctl", "--sync")
	out, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-o", "short", "-u", "rsync-ssl.service", "-u", "rsync-ssl-isolated@*.service")
	if bad := doubledPrefix.FindAllString(out, 5); len(bad) > 0 {
		t.Errorf("journal lines with a doubled prefix or a second timestamp (%q...):\n%s", bad, out)
	}
	if !regexp.MustCompile(`rsync-ssl-shim\[\d+\]: serving `).MatchString(out) {
		t.Errorf("no start line \"rsync-ssl-shim[PID]: serving ...\" in the journal:\n%s", out)
	}
}

// testInstalledModuleLoad: the package loads the tls module when one of its
// services starts (modprobe@tls.service, run by systemd as root, outside the
// sandbox), not at boot on every host that has it installed.
func testInstalledModuleLoad(t *testing.T, c *container) {
	files := c.must(t, "dpkg", "-L", "rsync-ssl-shim")
	if strings.Contains(files, "modules-load.d") {
		t.Errorf("the package ships a modules-load.d file, which loads the module at boot on every host:\n%s", files)
	}
	for _, svc := range []string{"rsync-ssl.service", "rsync-ssl-isolated@probe.service"} {
		out := c.must(t, "systemctl", "show", "-p", "Wants", "-p", "After", svc)
		if strings.Count(out, "modprobe@tls.service") != 2 {
			t.Errorf("%s does not want and follow modprobe@tls.service:\n%s", svc, out)
		}
	}
}
