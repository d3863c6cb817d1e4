package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Through each real TLS server, "rsync-ssl-shim rsync" pulls and pushes a
// tree and every file's SHA-256 matches.

func TestClientStunnelIPv4(t *testing.T) {
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	// rsync://HOST:PORT/: rsync itself hands the port over in RSYNC_PORT.
	roundTrip(t, rd, fmt.Sprintf("rsync://127.0.0.1:%d/", port), []string{"RSYNC_SSL_CA_CERT=" + pki.CA})
}

func TestClientStunnelName(t *testing.T) {
	slowTier(t, "client interop")
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	// HOST::MODULE with the port from RSYNC_SSL_PORT, as rsync-ssl users do.
	// "localhost" may resolve to ::1 first; the dialer must fall back.
	env := []string{"RSYNC_SSL_CA_CERT=" + pki.CA, fmt.Sprintf("RSYNC_SSL_PORT=%d", port)}
	roundTrip(t, rd, "localhost::", env)
}

func TestClientStunnelIPv6(t *testing.T) {
	slowTier(t, "client interop")
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "::1")
	// An IPv6 literal checked against the certificate's IP SAN.
	roundTrip(t, rd, fmt.Sprintf("rsyncs://[::1]:%d/", port), []string{"RSYNC_SSL_CA_CERT=" + pki.CA})
}

func TestClientNginxProxyProtocol(t *testing.T) {
	pki := newPKI(t)
	port, rd := startNginxRsync(t, pki, "127.0.0.1")
	// rsync runs with "proxy protocol = yes", so it only served us because
	// nginx's PROXY header came first.
	roundTrip(t, rd, fmt.Sprintf("rsyncs://localhost:%d/", port), []string{"RSYNC_SSL_CA_CERT=" + pki.CA})
}

func TestClientNginxIPv6(t *testing.T) {
	slowTier(t, "client interop")
	pki := newPKI(t)
	port, rd := startNginxRsync(t, pki, "::1")
	roundTrip(t, rd, fmt.Sprintf("rsyncs://[::1]:%d/", port), []string{"RSYNC_SSL_CA_CERT=" + pki.CA})
}

// TestClientAgainstServe runs the same round trip against our own server.
func TestClientAgainstServe(t *testing.T) {
	if out, code := runCmd(t, 10*time.Second, nil, shimBin, "serve", "--help"); code != 0 {
		t.Skipf("rsync-ssl-shim serve is not available in this build (serve --help exit %d): %.200s", code, out)
	}
	needTool(t, "rsync")
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	s := startServeListening(t, []string{"serve", "--cert", pki.Cert, "--key", pki.Key, "--rsyncd-conf", rd.Conf})
	roundTrip(t, rd, fmt.Sprintf("rsyncs://127.0.0.1:%d/", s.Port), []string{"RSYNC_SSL_CA_CERT=" + pki.CA})
}

// rsync splits --rsh itself (quotes group, a doubled quote is one quote),
// so the wrapper must quote its own path that way: run it from a directory
// whose name has a space and a quote.
func TestClientRsyncOddBinaryPath(t *testing.T) {
	pki := newPKI(t)
	rd := newClientRsyncd(t)
	port := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	dir := filepath.Join(t.TempDir(), "it's a dir")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rsync-ssl-shim")
	data, err := os.ReadFile(shimBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := runCmd(t, time.Minute, []string{"RSYNC_SSL_CA_CERT=" + pki.CA}, bin, "rsync", fmt.Sprintf("rsyncs://127.0.0.1:%d/", port))
	if code != 0 || !strings.Contains(out, "data") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
