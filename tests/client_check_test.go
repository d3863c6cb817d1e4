package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func checkOut(t *testing.T, env []string, wantCode int, args ...string) string {
	t.Helper()
	out, code := shim(t, env, append([]string{"check"}, args...)...)
	if code != wantCode {
		t.Fatalf("check %v: exit %d, want %d:\n%s", args, code, wantCode, out)
	}
	return out
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestClientCheck(t *testing.T) {
	pki := newPKI(t)
	secrets := filepath.Join(t.TempDir(), "secrets")
	if err := os.WriteFile(secrets, []byte("bob:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Sections given as "global" lines come before [data], which is fine
	// for rsyncd.conf.
	rd := newClientRsyncd(t, "[secret]", "path = "+t.TempDir(), "auth users = bob", "secrets file = "+secrets,
		"[closed]", "path = "+t.TempDir(), "hosts deny = *")
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	target := fmt.Sprintf("localhost:%d", port)
	ca := []string{"RSYNC_SSL_CA_CERT=" + pki.CA}

	// What "localhost" resolves to is the machine's own business (one
	// address or both families, in its resolver's order): the check must
	// print exactly that.
	addrs, err := net.LookupHost("localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("this machine cannot resolve localhost: %v", err)
	}
	t.Run("healthy listing", func(t *testing.T) {
		out := checkOut(t, ca, 0, target)
		wantLines(t, out, "ok    resolve", "localhost -> "+strings.Join(addrs, ", "), "ok    tcp", "ok    tls", "TLS 1.3",
			`subject "CN=localhost"`, `issuer "CN=rsync-ssl-shim test CA"`, "names localhost 127.0.0.1 ::1",
			"verified: chain against "+pki.CA+", name localhost", "ok    rsync", "protocol 32.0",
			"ok    module", "modules: secret, closed, data, up", "all 5 hops work")
	})
	t.Run("listed module", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 0, target, "data"), "module data: listed", "all 5 hops work")
	})
	t.Run("open module", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 0, "--open", target, "data"), "module data: open")
	})
	t.Run("module needs auth", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 0, "--open", target, "secret"), "module secret: needs auth")
	})
	t.Run("module denied", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 1, "--open", target, "closed"), "FAIL  module", "denied: @ERROR: access denied to closed")
	})
	t.Run("module not listed", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 1, target, "hidden"), "FAIL  module", "not in the module listing", "try: a module with \"list = no\" is hidden: pass --open")
	})
	t.Run("unknown module", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 1, fmt.Sprintf("rsyncs://127.0.0.1:%d/nope", port)), "FAIL  module", "not in the module listing")
		wantLines(t, checkOut(t, ca, 1, "--open", fmt.Sprintf("rsyncs://127.0.0.1:%d/nope", port)), "FAIL  module", "Unknown module 'nope'",
			"try: run check without MODULE")
	})
	t.Run("json", func(t *testing.T) {
		out := checkOut(t, ca, 0, "--json", target)
		var r struct {
			OK   bool
			Hops []struct {
				Hop string
				OK  bool
				TLS *struct {
					Version  string
					Names    []string
					DaysLeft int `json:"days_left"`
				}
				Rsync *struct{ Modules []string }
			}
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if !r.OK || len(r.Hops) != 5 || r.Hops[2].TLS == nil || r.Hops[2].TLS.Version != "TLS 1.3" || len(r.Hops[4].Rsync.Modules) != 4 {
			t.Errorf("unexpected report:\n%s", out)
		}
	})
	t.Run("unknown CA stops at tls", func(t *testing.T) {
		out := checkOut(t, nil, 1, target)
		wantLines(t, out, "ok    tcp", "FAIL  tls", `issuer "CN=rsync-ssl-shim test CA"`,
			"error: tls handshake with localhost:"+strconv.Itoa(port)+" (127.0.0.1): certificate signed by unknown authority",
			"try: pass --ca FILE or set RSYNC_SSL_CA_CERT")
		if strings.Contains(out, "rsync ") || strings.Contains(out, "all 5") {
			t.Errorf("went past the broken hop:\n%s", out)
		}
	})
	t.Run("plain rsync port", func(t *testing.T) {
		p := startPlainRsyncd(t, newClientRsyncd(t))
		wantLines(t, checkOut(t, ca, 1, fmt.Sprintf("127.0.0.1:%d", p)), "FAIL  tls", "speaks plain rsync, not TLS")
	})
	t.Run("refused IPv6", func(t *testing.T) {
		p := freePort(t, "::1")
		wantLines(t, checkOut(t, ca, 1, fmt.Sprintf("[::1]:%d", p)), "FAIL  tcp", fmt.Sprintf("[::1]:%d: connection refused", p))
	})
	t.Run("unresolvable", func(t *testing.T) {
		wantLines(t, checkOut(t, ca, 1, "no-such-host.invalid"), "FAIL  resolve", "no such host")
	})
	t.Run("usage", func(t *testing.T) {
		checkOut(t, nil, 2, "--no-such-flag", target)
		checkOut(t, nil, 2)
		checkOut(t, nil, 2, "host:notaport")
	})
}

// TestClientCheckLeavesRsyncLogClean runs the health checks an admin would
// schedule against a healthy module and reads rsync's own log: no error or
// warning may appear, and each rsync must have ended by itself.
func TestClientCheckLeavesRsyncLogClean(t *testing.T) {
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	target := fmt.Sprintf("localhost:%d", port)
	ca := []string{"RSYNC_SSL_CA_CERT=" + pki.CA}
	checkOut(t, ca, 0, target)
	wantLines(t, checkOut(t, ca, 0, target, "data"), "module data: listed")
	wantLines(t, checkOut(t, ca, 0, "--open", target, "data"), "module data: open")
	// rsync writes its last log line as it exits, after the client has
	// seen the end: wait (bounded) for the --open session's last line.
	var log string
	for i := 0; i < 50; i++ {
		b, _ := os.ReadFile(rd.Log)
		log = string(b)
		if strings.Count(log, "module-list request") >= 2 && strings.Contains(log, "sent 0 bytes") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(log, "module-list request") < 2 || !strings.Contains(log, "rsync allowed access on module data") {
		t.Fatalf("rsync's log does not show the three checks:\n%s", log)
	}
	for _, bad := range []string{"error", "warning", "unexpectedly", "read only", "failed"} {
		if strings.Contains(strings.ToLower(log), bad) {
			t.Errorf("rsync's log mentions %q after healthy checks:\n%s", bad, log)
		}
	}
}
