package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kernelHasTLS says whether this kernel lists the TLS upper-layer protocol.
func kernelHasTLS(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(" "+strings.TrimSpace(string(b))+" ", " tls ")
}

// TestKTLSFallbackOnThisKernel: on a kernel without the TLS module (these
// machines), the default --datapath auto serves through the bridge: the
// start line says once why, each summary in a few words; a session with a
// reason of its own (TLS 1.2, a load balancer) names it in its summary; and
// --datapath ktls refuses to start, naming the module.
func TestKTLSFallbackOnThisKernel(t *testing.T) {
	if kernelHasTLS(t) {
		t.Skip("this kernel has the TLS module loaded; tests/ktls_vm_test.go covers the kernel path")
	}
	rsync := rsyncPath(t)
	p := newPKI(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 1, 20)

	t.Run("auto", func(t *testing.T) {
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startServeListening(t, serveArgs(p, rd, rsync))
		for i := 0; i < 2; i++ {
			dst := filepath.Join(t.TempDir(), "pulled")
			out, code := rsyncSSL(t, s, p, "openssl", "-a", s.Host+"::data/", dst+"/")
			if code != 0 {
				t.Fatalf("pull exit %d:\n%s\nserver:\n%s", code, out, s.Log)
			}
			sameTree(t, src, dst)
		}
		log := s.Log.String()
		if !strings.Contains(log, `datapath auto (every session bridged: the kernel has no tls module (setsockopt TCP_ULP "tls": ENOENT;`) {
			t.Errorf("the start line does not say, once, why every session is bridged:\n%s", log)
		}
		served := regexp.MustCompile(`served .* pair=tcp rsync_exit=0 .* datapath=bridge fallback="no kernel TLS module"\n`)
		if n := len(served.FindAllString(log, -1)); n != 2 {
			t.Errorf("%d summary lines with datapath=bridge and the reason, want 2:\n%s", n, log)
		}
		if strings.Contains(log, "datapath bridge:") {
			t.Errorf("a line of its own about the fallback; the summaries carry it:\n%s", log)
		}
	})

	t.Run("auto with a TLS 1.2 client", func(t *testing.T) {
		socat := needTool(t, "socat")
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startMode(t, "inetd", serveArgs(p, rd, rsync))
		dst := filepath.Join(t.TempDir(), "pulled")
		tlsAddr := fmt.Sprintf("OPENSSL:%s:%d,cafile=%s,verify=1,openssl-max-proto-version=TLS1.2", s.Host, s.Port, p.CA)
		rsh := fmt.Sprintf("--rsh=sh -c 'exec %s STDIO %s' sh", socat, tlsAddr)
		out, code := runCmd(t, 2*time.Minute, nil, rsync, rsh, "-a", "rsync://localhost/data/", dst+"/")
		if code != 0 {
			t.Fatalf("pull exit %d:\n%s\nserver:\n%s", code, out, s.Log)
		}
		sameTree(t, src, dst)
		log := s.Log.String()
		want := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: 127\.0\.0\.1:\d+: served .*tls=TLSv1\.2 .* datapath=bridge fallback="the client negotiated TLSv1\.2; the kernel path takes TLS 1\.3 only"\n`)
		if n := len(want.FindAllString(log, -1)); n != 1 || strings.Contains(log, "datapath bridge:") {
			t.Errorf("want one line: the bridged TLSv1.2 session's summary, with its own reason:\n%s", log)
		}
	})

	t.Run("auto behind a trusted proxy", func(t *testing.T) {
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startServeListening(t, serveArgs(p, rd, rsync, "--trusted-proxy", "127.0.0.1"))
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 874\r\n")
		pool := x509.NewCertPool()
		ca, err := os.ReadFile(p.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(ca)
		tc := tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: pool})
		io.WriteString(tc, "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n#list\n")
		// Read up to rsync's end of the listing, then hang up as rsync's
		// client does.
		var listing []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(listing), "@RSYNCD: EXIT") {
			n, err := tc.Read(buf)
			listing = append(listing, buf[:n]...)
			if err != nil {
				break
			}
		}
		tc.Close()
		if !strings.Contains(string(listing), "data") {
			t.Errorf("no module listing through the load balancer: %q", listing)
		}
		mustWaitFor(t, 5*time.Second, "the summary line", func() bool { return strings.Contains(s.Log.String(), "rsync_exit=") })
		log := s.Log.String()
		if !strings.Contains(log, `datapath=bridge fallback="the connection came through a load balancer (--trusted-proxy): rsync must learn the client's address from a PROXY header"`) {
			t.Errorf("no trusted-proxy reason in the summary:\n%s", log)
		}
	})

	t.Run("helper paths", func(t *testing.T) {
		// The helper's --datapath: auto and user carry the pull in user
		// space here; ktls fails before rsync's greeting, naming the hop
		// and the missing module.
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startServeListening(t, serveArgs(p, rd, rsync))
		env := []string{"RSYNC_SSL_CA_CERT=" + p.CA}
		for _, dp := range []string{"auto", "user", "ktls"} {
			dst := filepath.Join(t.TempDir(), "pulled")
			rsh := "--rsh=" + shimBin + " connect --datapath " + dp
			out, code := runCmd(t, 2*time.Minute, env, rsync, rsh, "-a", fmt.Sprintf("rsync://localhost:%d/data/", s.Port), dst+"/")
			if dp != "ktls" {
				if code != 0 {
					t.Fatalf("--datapath %s: pull exit %d:\n%s", dp, code, out)
				}
				sameTree(t, src, dst)
				continue
			}
			want := fmt.Sprintf(`rsync-ssl-shim connect: kernel tls with localhost:%d (127.0.0.1): the kernel has no tls module (setsockopt TCP_ULP "tls": ENOENT;`, s.Port)
			if code == 0 || !strings.Contains(out, want) {
				t.Errorf("--datapath ktls: exit %d, want a failure naming the hop and the module:\n%s", code, out)
			}
		}
		out, code := runCmd(t, 30*time.Second, env, shimBin, "connect", "--datapath", "kernel", "localhost")
		if code != 2 || !strings.Contains(out, `--datapath: data path "kernel": want auto, ktls or user`) {
			t.Errorf("a bad --datapath: exit %d, want 2 and the choices:\n%s", code, out)
		}
	})

	t.Run("ktls refuses to start", func(t *testing.T) {
		rd := newRsyncd(t)
		out, code := runCmd(t, 30*time.Second, nil, shimBin, append(serveArgs(p, rd, rsync, "--datapath", "ktls"), "--listen", "127.0.0.1:0")...)
		if code != 1 || !strings.Contains(out, `serve: --datapath ktls: the kernel has no tls module (setsockopt TCP_ULP "tls": ENOENT;`) {
			t.Errorf("exit %d, want 1 and the missing module named:\n%s", code, out)
		}
	})

	t.Run("ktls with trusted proxy is a usage error", func(t *testing.T) {
		rd := newRsyncd(t)
		out, code := runCmd(t, 30*time.Second, nil, shimBin, append(serveArgs(p, rd, rsync, "--datapath", "ktls", "--trusted-proxy", "127.0.0.1"), "--listen", "127.0.0.1:0")...)
		if code != 2 || !strings.Contains(out, "--datapath ktls cannot serve --trusted-proxy connections") {
			t.Errorf("exit %d, want 2:\n%s", code, out)
		}
	})

	t.Run("bridge logs nothing about the kernel", func(t *testing.T) {
		rd := newRsyncd(t)
		copyTree(t, src, rd.Data)
		s := startMode(t, "inetd", serveArgs(p, rd, rsync, "--datapath", "bridge"))
		dst := filepath.Join(t.TempDir(), "pulled")
		if out, code := rsyncSSL(t, s, p, "openssl", "-a", s.Host+"::data/", dst+"/"); code != 0 {
			t.Fatalf("pull exit %d:\n%s\nserver:\n%s", code, out, s.Log)
		}
		log := s.Log.String()
		if strings.Contains(log, "fallback=") || !strings.Contains(log, "datapath=bridge") {
			t.Errorf("--datapath bridge: want datapath=bridge and no fallback reason:\n%s", log)
		}
	})
}
