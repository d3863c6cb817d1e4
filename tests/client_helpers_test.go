package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Servers for the client tests: each starts a real program in the
// foreground, on loopback, stopped by PID at cleanup (startBg).

// startStunnelRsync runs the seed's setup: stunnel terminating TLS on
// host:port and starting "rsync --daemon" per connection (exec/execArgs).
func startStunnelRsync(t *testing.T, certFile, keyFile string, rd *Rsyncd, host string, extra ...string) int {
	t.Helper()
	stunnel := needTool(t, "stunnel4", "stunnel")
	rsync := needTool(t, "rsync")
	port := freePort(t, host)
	dir := t.TempDir()
	conf := filepath.Join(dir, "stunnel.conf")
	text := fmt.Sprintf(`foreground = yes
pid =
debug = 4
[rsync]
accept = %s
cert = %s
key = %s
exec = %s
execArgs = rsync --daemon --config=%s
%s
`, host+":"+strconv.Itoa(port), certFile, keyFile, rsync, rd.Conf, strings.Join(extra, "\n")) // stunnel wants IPv6 unbracketed
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out := startBg(t, exec.Command(stunnel, conf))
	waitPortOr(t, net.JoinHostPort(host, strconv.Itoa(port)), 10*time.Second, out)
	return port
}

// startNginxRsync runs rsyncd.conf(5)'s recommended setup: nginx stream
// TLS with proxy_protocol in front of a TCP rsync daemon on loopback.
func startNginxRsync(t *testing.T, pki *PKI, host string) (port int, rd *Rsyncd) {
	t.Helper()
	nginx := needTool(t, "nginx")
	mod := "/usr/lib/nginx/modules/ngx_stream_module.so"
	if _, err := os.Stat(mod); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nginx stream module missing (%v): install libnginx-mod-stream", err)
		}
		t.Skipf("nginx stream module missing: %v", err)
	}
	rd = newClientRsyncd(t, "proxy protocol = yes", "proxy protocol hosts = 127.0.0.1")
	rport := startPlainRsyncd(t, rd)
	port = freePort(t, host)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	text := fmt.Sprintf(`load_module %s;
daemon off;
master_process on;
worker_processes 1;
pid %s;
error_log stderr info;
events { worker_connections 128; }
stream {
	server {
		listen %s ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		proxy_pass 127.0.0.1:%d;
		proxy_protocol on;
		proxy_timeout 1m;
		proxy_connect_timeout 5s;
	}
}
`, mod, filepath.Join(dir, "nginx.pid"), net.JoinHostPort(host, strconv.Itoa(port)), pki.Cert, pki.Key, rport)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := startBg(t, exec.Command(nginx, "-p", dir, "-c", conf, "-e", "stderr"))
	waitPortOr(t, net.JoinHostPort(host, strconv.Itoa(port)), 10*time.Second, out)
	return port, rd
}

// newClientRsyncd is newRsyncd with symlinks stored as sent: without
// chroot rsync munges pushed symlinks by default, and the round trips
// compare link targets.
func newClientRsyncd(t *testing.T, extra ...string) *Rsyncd {
	return newRsyncd(t, append([]string{"munge symlinks = no"}, extra...)...)
}

// startPlainRsyncd runs a TCP rsync daemon on 127.0.0.1 and returns its port.
func startPlainRsyncd(t *testing.T, rd *Rsyncd) int {
	t.Helper()
	rsync := needTool(t, "rsync")
	port := freePort(t, "127.0.0.1")
	out := startBg(t, exec.Command(rsync, "--daemon", "--no-detach", "--port="+strconv.Itoa(port),
		"--address=127.0.0.1", "--config="+rd.Conf))
	waitPortOr(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second, out)
	return port
}

// shim runs the binary under test with extra environment.
func shim(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	return runCmd(t, 2*time.Minute, env, shimBin, args...)
}

// The rsync-ssl variables a developer's shell may carry would change what
// the tests check; each test states its own.
func init() {
	for _, v := range []string{"RSYNC_SSL_CA_CERT", "RSYNC_SSL_PORT", "RSYNC_PORT", "RSYNC_SSL_CERT",
		"RSYNC_SSL_KEY", "RSYNC_SSL_SKIP_HOSTNAME_CHECK", "RSYNC_SSL_TYPE", "RSYNC_RSH"} {
		os.Unsetenv(v)
	}
}

// roundTrip pulls the "data" module into a fresh directory and pushes a
// fresh tree into "up" through "rsync-ssl-shim rsync", and compares every
// file's SHA-256 both ways. base is a daemon URL prefix such as
// "rsyncs://127.0.0.1:8740/".
func roundTrip(t *testing.T, rd *Rsyncd, base string, env []string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rd.Data, "small")); err != nil {
		makeTree(t, rd.Data, 4, 300)
	}
	dst := t.TempDir()
	out, code := shim(t, env, "rsync", "-a", base+"data/", dst+"/")
	if code != 0 {
		t.Fatalf("pull from %s: exit %d\n%s\nrsyncd log:\n%s", base, code, out, rd.LogText(t))
	}
	sameTree(t, rd.Data, dst)

	src := t.TempDir()
	makeTree(t, src, 3, 200)
	// A daemon without chroot rewrites symlinks that leave the module
	// ("../dangling/target"), whatever carries the bytes.
	if err := os.Remove(filepath.Join(src, "dangling-link")); err != nil {
		t.Fatal(err)
	}
	out, code = shim(t, env, "rsync", "-a", src+"/", base+"up/")
	if code != 0 {
		t.Fatalf("push to %s: exit %d\n%s\nrsyncd log:\n%s", base, code, out, rd.LogText(t))
	}
	sameTree(t, src, rd.Up)
	if strings.Contains(out, "warning") {
		t.Errorf("unexpected warning:\n%s", out)
	}
}
