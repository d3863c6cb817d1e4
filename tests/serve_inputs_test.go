package tests

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// runInetd accepts one connection from client and hands it to serve on fd 0,
// exactly as inetd and systemd's Accept=yes with StandardInput=socket do,
// then reports serve's exit status and log (see serveOne).
func runInetd(t *testing.T, args []string, client func(t *testing.T, addr string) string) serveOneResult {
	t.Helper()
	return serveOne(t, "127.0.0.1", args, client)
}

// rawClient sends data, optionally waits, then reads what comes back until
// the server closes (bounded).
func rawClient(data []byte, pause time.Duration, closeEarly bool) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		if len(data) > 0 {
			c.Write(data)
		}
		if closeEarly {
			return ""
		}
		time.Sleep(pause)
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
}

// helloRecord builds a TLS-record-framed ClientHello offering only
// version v, with a cipher list of classic RSA/ECDHE suites and no
// extensions: what an SSLv3 or TLS 1.0-only client sends.
func helloRecord(v uint16) []byte {
	var body []byte
	body = binary.BigEndian.AppendUint16(body, v)
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	suites := []uint16{0xc013, 0xc014, 0x002f, 0x0035, 0x000a}
	body = binary.BigEndian.AppendUint16(body, uint16(2*len(suites)))
	for _, s := range suites {
		body = binary.BigEndian.AppendUint16(body, s)
	}
	body = append(body, 1, 0) // compression: null
	hs := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{0x16, byte(v >> 8), byte(v)}
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(hs)))
	return append(rec, hs...)
}

// goodListing lists modules through stock rsync-ssl (openssl type).
func goodListing(t *testing.T, p *PKI, addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	out, code := rsyncSSL(t, &server{Host: "localhost", Port: n}, p, "openssl", "localhost::")
	if code != 0 {
		return fmt.Sprintf("exit %d: %s", code, out)
	}
	return out
}

// socatPull runs rsync with a real socat as its TLS transport, bound to the
// source address from, so the client can come from another loopback
// address than the one serve uses towards rsync.
func socatPull(t *testing.T, s *server, p *PKI, from string, args ...string) (string, int) {
	t.Helper()
	socat := needTool(t, "socat")
	rsync := rsyncPath(t)
	tlsAddr := fmt.Sprintf("OPENSSL:%s:%d,cafile=%s,bind=%s,verify=1,commonname=localhost", s.Host, s.Port, p.CA, from)
	rsh := fmt.Sprintf("--rsh=sh -c 'exec %s STDIO %s' sh", socat, tlsAddr)
	return runCmd(t, 2*time.Minute, nil, rsync, append([]string{rsh}, args...)...)
}

// copyTree copies src into dst (which exists), keeping symlinks as links.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
