package tests

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeClientAlert: a client that ends the handshake with an alert is
// named by its alert in serve's log line, whatever state crypto/tls's record
// layer was in: OpenSSL's plaintext alert after our TLS 1.3 ServerHello
// (crypto/tls alone says "bad record MAC"), and testssl.sh's alert record of
// legacy version 0x0301 after our reply (crypto/tls alone: a record header
// error, which was logged as "not a TLS client hello").
func TestServeClientAlert(t *testing.T) {
	p := newPKI(t)
	other := newNamedPKI(t, "another CA")
	rd := newRsyncd(t)
	openssl := needTool(t, "openssl")
	sClient := func(args ...string) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			cmd := exec.Command(openssl, append([]string{"s_client", "-connect", addr, "-verify_return_error"}, args...)...)
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			return string(out)
		}
	}
	cases := []struct {
		name   string
		client func(t *testing.T, addr string) string
		want   string
	}{
		{"openssl-tls13-unknown-ca", sClient("-tls1_3", "-CAfile", other.CA), `alert "unknown certificate authority" \(does it trust`},
		{"openssl-tls13-wrong-name", sClient("-tls1_3", "-CAfile", p.CA, "-verify_hostname", "wrong.example"), `alert "(bad certificate|unknown certificate)" \(does it trust`},
		{"openssl-tls12-unknown-ca", sClient("-tls1_2", "-CAfile", other.CA), `alert "unknown certificate authority" \(does it trust`},
		{"hello-then-legacy-alert", helloThenAlert([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x00}), `alert "close notify"`},
		{"hello-then-tls13-alert", helloThenAlert([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x30}), `alert "unknown certificate authority"`},
	}
	for _, dp := range []string{"bridge", "auto"} {
		for _, tc := range cases {
			t.Run(dp+"/"+tc.name, func(t *testing.T) {
				args := serveArgs(p, rd, rsyncPath(t), "--datapath", dp, "--handshake-timeout", "5s")
				res := serveOne(t, "127.0.0.1", args, tc.client)
				re := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: tls handshake with 127\.0\.0\.1:\d+: client rejected the handshake with ` + tc.want)
				if !re.MatchString(res.log) || res.code != 1 {
					t.Errorf("exit %d, log does not match %q:\n%s\nclient:\n%s", res.code, re, res.log, res.client)
				}
				if strings.Contains(res.log, "bad record MAC") || strings.Contains(res.log, "not a TLS client hello") {
					t.Errorf("log names crypto/tls's view, not the client's alert:\n%s", res.log)
				}
			})
		}
	}
}

// helloThenAlert is a client that sends a real ClientHello (made by
// crypto/tls), reads the server's reply, then writes alert as a record of
// its own, the way testssl.sh ends a probe.
func helloThenAlert(alert []byte) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		hello := clientHello(t)
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(hello); err != nil {
			t.Error(err)
			return ""
		}
		// The ServerHello's record header, and its body.
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 0x16 {
			t.Errorf("server's reply: % x, %v", hdr, err)
			return ""
		}
		io.ReadFull(c, make([]byte, int(hdr[3])<<8|int(hdr[4])))
		c.Write(alert)
		io.Copy(io.Discard, c)
		return "sent hello, read the ServerHello, sent alert"
	}
}

// clientHello is the first flight of a crypto/tls client (TLS 1.2 and
// 1.3), caught on its way out. It runs in the client's goroutine: errors,
// not Fatal.
func clientHello(t *testing.T) []byte {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		tls.Client(b, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}).Handshake()
		b.Close()
	}()
	a.SetDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(a, hdr); err != nil {
		t.Errorf("catching a client hello: %v", err)
	}
	buf.Write(hdr)
	if _, err := io.CopyN(&buf, a, int64(int(hdr[3])<<8|int(hdr[4]))); err != nil {
		t.Errorf("catching a client hello: %v", err)
	}
	return buf.Bytes()
}
