package tests

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startLineRE is the text of a session's start line (docs/server.md):
// peer, then the summary's known part and rsync's PID.
var startLineRE = regexp.MustCompile(`^(\S+): started sni=\S+ tls=(\S+) cipher=(\S+) client=\S+ datapath=(\S+) pair=(\S+) rsync_pid=(\d+)$`)

// certExpiry is the "certificate expires DATE (N days)" that the accept
// loop's STATUS= should name for the certificate file at p, for each day
// count that the time between the service's reading and ours allows.
func certExpiry(t *testing.T, p string) []string {
	t.Helper()
	blk, _ := pem.Decode([]byte(readFileT(t, p)))
	if blk == nil {
		t.Fatalf("%s: no PEM block", p)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	days := int(time.Until(cert.NotAfter).Hours() / 24)
	var out []string
	for _, d := range []int{days, days + 1} {
		out = append(out, fmt.Sprintf("certificate expires %s (%d days)", cert.NotAfter.UTC().Format("2006-01-02"), d))
	}
	return out
}

// statusText is systemd's StatusText= of rsync-ssl.service: the accept
// loop's last sd_notify STATUS=.
func statusText(t *testing.T, c *container) string {
	t.Helper()
	out, _ := c.exec(t, time.Minute, "systemctl", "show", "-P", "StatusText", "rsync-ssl.service")
	return strings.TrimSpace(out)
}

// waitStatus polls StatusText (bounded) until it is one of want, and
// returns the last text seen.
func waitStatus(t *testing.T, c *container, d time.Duration, want []string) (string, bool) {
	t.Helper()
	var got string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		got = statusText(t, c)
		for _, w := range want {
			if got == w {
				return got, true
			}
		}
	}
	return got, false
}

// sessionStatus is the STATUS= text for these counts, one per day count.
func sessionStatus(inFlight, served int, expiry []string) []string {
	var out []string
	for _, e := range expiry {
		out = append(out, fmt.Sprintf("%d in flight, %d served since start, 0 refused; %s", inFlight, served, e))
	}
	return out
}

// testInstalledStatus: what an operator reads about a transfer while it
// runs. A slow pull shows in "systemctl status rsync-ssl.service" (one in
// flight, the certificate's expiry) and, once over, as served; its start
// entry is in the journal while it runs, names the rsync that serves it,
// and carries the same session fields as the summary; no line of the
// service carries journald's prefix twice.
func testInstalledStatus(t *testing.T, c *container, env []string, data string) {
	rsyncSSL := needTool(t, "rsync-ssl")
	// A fresh accept loop, started by the pull: its counts start at zero.
	c.must(t, "systemctl", "stop", "rsync-ssl.service")
	expiry := certExpiry(t, filepath.Join(c.root, "etc/rsync-ssl/cert.pem"))
	since := time.Now()

	// 8 MiB and 300 small files at 1 MiB/s: about 8 s in flight.
	dest := t.TempDir()
	type res struct {
		out  string
		code int
	}
	pulled := make(chan res, 1)
	go func() {
		out, code := c.client(t, env, rsyncSSL, "-a", "--bwlimit=1024", "rsync://localhost/data/", dest+"/")
		pulled <- res{out, code}
	}()
	waitPull := func() res {
		select {
		case r := <-pulled:
			return r
		case <-time.After(2 * time.Minute):
			t.Fatal("the slow pull did not end within 2 minutes")
			return res{}
		}
	}

	// (a) While it runs: one in flight, nothing served yet, the expiry.
	during, ok := waitStatus(t, c, 20*time.Second, sessionStatus(1, 0, expiry))
	if !ok {
		r := waitPull()
		t.Fatalf("while the pull ran, StatusText was %q, want %q (the pull: exit %d)", during, sessionStatus(1, 0, expiry)[0], r.code)
	}
	st, _ := c.exec(t, time.Minute, "systemctl", "status", "--no-pager", "rsync-ssl.service")
	if !strings.Contains(st, `Status: "`+during+`"`) {
		t.Errorf("systemctl status rsync-ssl.service does not show %q:\n%s", during, st)
	}
	// (b) The start entry is there while the session runs, and names the
	// rsync that serves it.
	start := firstEntry(t, c, 10*time.Second, func(e map[string]any) bool {
		m, _ := e["MESSAGE"].(string)
		return entryTime(e).After(since) && strings.Contains(m, ": started ")
	}, "_SYSTEMD_UNIT=rsync-ssl.service")
	if start == nil {
		journal, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-n", "20", "-o", "cat", "-u", "rsync-ssl.service")
		t.Fatalf("no start entry (\": started \") in the journal while the pull runs:\n%s", journal)
	}
	startPID, _ := start["RSYNC_SSL_RSYNC_PID"].(string)
	if comm, _ := c.exec(t, time.Minute, "cat", "/proc/"+startPID+"/comm"); strings.TrimSpace(comm) != "rsync" {
		t.Errorf("RSYNC_SSL_RSYNC_PID=%q of the start entry is not a running rsync (comm %q)", startPID, strings.TrimSpace(comm))
	}

	r := waitPull()
	if r.code != 0 {
		t.Fatalf("the slow pull failed (exit %d):\n%s", r.code, r.out)
	}
	sameTree(t, data, dest)
	if after, ok := waitStatus(t, c, 15*time.Second, sessionStatus(0, 1, expiry)); !ok {
		t.Errorf("after the pull, StatusText is %q, want %q", after, sessionStatus(0, 1, expiry)[0])
	}

	// (b) The summary and the start entry describe the same session.
	port, _ := start["RSYNC_SSL_CLIENT_PORT"].(string)
	summary := firstEntry(t, c, 10*time.Second, func(e map[string]any) bool { return entryTime(e).After(since) },
		"_SYSTEMD_UNIT=rsync-ssl.service", "RSYNC_SSL_CLIENT_PORT="+port, "RSYNC_SSL_MODULE=data", "RSYNC_SSL_EXIT=0")
	if summary == nil {
		t.Fatalf("no summary entry (RSYNC_SSL_MODULE=data, RSYNC_SSL_EXIT=0) for the client port %q of the start entry %v", port, start)
	}
	checkSessionFields(t, start, summary)

	// (c) One prefix per line: journald's, never ours as well.
	c.exec(t, time.Minute, "journalctl", "--sync")
	out, _ := c.exec(t, time.Minute, "journalctl", "--no-pager", "-o", "short", "-u", "rsync-ssl.service")
	if bad := doubledPrefix.FindAllString(out, 5); len(bad) > 0 {
		t.Errorf("journal lines of rsync-ssl.service with a doubled prefix or a second timestamp (%q...):\n%s", bad, out)
	}
	if n := strings.Count(out, ": started sni="); n == 0 || !strings.Contains(out, start["MESSAGE"].(string)) {
		t.Errorf("journalctl -u rsync-ssl.service does not show the start line %q:\n%s", start["MESSAGE"], out)
	}
	if n := countMessages(journalEntries(t, c, "_SYSTEMD_UNIT=rsync-ssl.service"), start["MESSAGE"].(string)); n != 1 {
		t.Errorf("the start line is in the journal %d times, want once", n)
	}
	t.Logf("in flight: %q; start: %s; summary: %s", during, start["MESSAGE"], summary["MESSAGE"])
}

// checkSessionFields checks a session's start entry and summary entry:
// the data path the host's kernel allows, its pair, a cipher, rsync's PID,
// each the same in both entries and in the start line's text.
func checkSessionFields(t *testing.T, start, summary map[string]any) {
	t.Helper()
	wantPath, wantPair := "bridge", "tcp"
	if kernelHasTLS(t) {
		wantPath, wantPair = "ktls", "-"
	}
	msg, _ := start["MESSAGE"].(string)
	m := startLineRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("the start line %q is not \"PEER: started sni= tls= cipher= client= datapath= pair= rsync_pid=\"", msg)
	}
	text := map[string]string{"RSYNC_SSL_TLS": m[2], "RSYNC_SSL_CIPHER": m[3], "RSYNC_SSL_DATAPATH": m[4],
		"RSYNC_SSL_PAIR": m[5], "RSYNC_SSL_RSYNC_PID": m[6]}
	want := map[string]string{"RSYNC_SSL_DATAPATH": wantPath, "RSYNC_SSL_PAIR": wantPair}
	for k, tv := range text {
		sv, _ := start[k].(string)
		uv, _ := summary[k].(string)
		switch {
		case sv == "" || uv == "":
			t.Errorf("%s: start entry %q, summary entry %q, want both set (start line %q)", k, sv, uv, msg)
		case sv != tv || uv != tv:
			t.Errorf("%s: start entry %q, summary entry %q, start line's text %q: want one value", k, sv, uv, tv)
		case want[k] != "" && tv != want[k]:
			t.Errorf("%s=%s, want %s", k, tv, want[k])
		}
	}
	client, _ := start["RSYNC_SSL_CLIENT"].(string)
	port, _ := start["RSYNC_SSL_CLIENT_PORT"].(string)
	if m[1] != net.JoinHostPort(client, port) {
		t.Errorf("the start line's peer %q is not RSYNC_SSL_CLIENT=%q RSYNC_SSL_CLIENT_PORT=%q", m[1], client, port)
	}
	if entryTime(start).After(entryTime(summary)) {
		t.Errorf("the start entry (%v) comes after the summary (%v)", entryTime(start), entryTime(summary))
	}
}
