package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
)

func TestVerifyServer(t *testing.T) {
	ca, other := testpki.NewCA(t, "", "unit CA", nil), testpki.NewCA(t, "", "unit CA", nil)
	now := time.Now()
	good, _ := ca.ServerLeaf(t, now.Add(-time.Hour), now.Add(time.Hour), "localhost", "127.0.0.1", "::1")
	old, _ := ca.ServerLeaf(t, now.Add(-3*time.Hour), now.Add(-2*time.Hour), "localhost")
	future, _ := ca.ServerLeaf(t, now.Add(2*time.Hour), now.Add(3*time.Hour), "localhost")
	cases := []struct {
		name  string
		leaf  *x509.Certificate
		roots *x509.CertPool
		o     Options
		kind  FailKind // "" = accepted
		msg   string
	}{
		{"name", good, ca.Pool, Options{Host: "localhost", Trust: TrustCAFile}, "", ""},
		{"IPv4 SAN", good, ca.Pool, Options{Host: "127.0.0.1", Trust: TrustCAFile}, "", ""},
		{"IPv6 SAN", good, ca.Pool, Options{Host: "::1", Trust: TrustCAFile}, "", ""},
		{"wrong name", good, ca.Pool, Options{Host: "example.org", Trust: TrustCAFile}, FailNameMismatch,
			"certificate is for localhost, 127.0.0.1, ::1, not example.org"},
		{"servername", good, ca.Pool, Options{Host: "192.0.2.1", ServerName: "localhost", Trust: TrustCAFile}, "", ""},
		{"skip name", good, ca.Pool, Options{Host: "example.org", Trust: TrustCAFile, SkipHostnameCheck: true}, "", ""},
		{"unknown CA", good, other.Pool, Options{Host: "localhost", Trust: TrustCAFile, CAFile: "other.pem"}, FailUnknownAuthority,
			`certificate signed by unknown authority "CN=unit CA,O=Test"`},
		{"unknown CA skip name", good, other.Pool, Options{Host: "x", Trust: TrustCAFile, SkipHostnameCheck: true}, FailUnknownAuthority, "unknown authority"},
		{"expired", old, ca.Pool, Options{Host: "localhost", Trust: TrustCAFile}, FailExpired,
			"certificate expired " + old.NotAfter.UTC().Format(dateFmt)},
		{"not yet valid", future, ca.Pool, Options{Host: "localhost", Trust: TrustCAFile}, FailNotYetValid,
			"certificate not valid until " + future.NotBefore.UTC().Format(dateFmt)},
		{"no verification", old, nil, Options{Host: "x", Trust: TrustNone}, "", ""},
		{"pin alone", good, nil, Options{Host: "x", Trust: TrustNone, Pins: []certid.Pin{certid.PinOf(good)}}, "", ""},
		{"pin mismatch", good, nil, Options{Host: "x", Trust: TrustNone, Pins: []certid.Pin{certid.PinOf(old)}}, FailPinMismatch,
			"server key " + certid.PinOf(good).String() + " does not match the pin " + certid.PinOf(old).String()},
		{"pin and unknown CA", good, other.Pool, Options{Host: "localhost", Trust: TrustCAFile, Pins: []certid.Pin{certid.PinOf(good)}}, FailUnknownAuthority, ""},
		{"pin rollover", good, nil, Options{Host: "x", Trust: TrustNone, Pins: []certid.Pin{certid.PinOf(old), certid.PinOf(good)}}, "", ""},
	}
	for _, c := range cases {
		err := verifyServer([]*x509.Certificate{c.leaf}, c.roots, c.o, now)
		var ce *CertError
		switch {
		case c.kind == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.kind != "" && (!errors.As(err, &ce) || ce.Kind != c.kind):
			t.Errorf("%s: got %v, want kind %s", c.name, err, c.kind)
		case c.kind != "" && !strings.Contains(err.Error(), c.msg):
			t.Errorf("%s: %q lacks %q", c.name, err, c.msg)
		}
	}
}

// pumpServer runs one TLS server connection with handle and returns a
// client Conn to it.
func pumpServer(t *testing.T, handle func(raw net.Conn, c *tls.Conn)) *Conn {
	t.Helper()
	ca := testpki.NewCA(t, "", "unit CA", nil)
	leaf, cert := ca.ServerLeaf(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("server handler did not finish")
		}
	})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		c := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
		if c.Handshake() != nil {
			return
		}
		handle(raw, c)
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d, err := NewDialer(Options{Host: "127.0.0.1", Port: port, Trust: TrustNone, Pins: []certid.Pin{certid.PinOf(leaf)}, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPumpHalfClose(t *testing.T) {
	got := make(chan string, 1)
	c := pumpServer(t, func(raw net.Conn, s *tls.Conn) {
		s.Write([]byte("@RS")) // a greeting split across records
		s.Write([]byte("YNCD: 32.0\n"))
		b, _ := io.ReadAll(s) // until the client's close_notify
		got <- string(b)
		// The daemon still talks after the client finished sending.
		s.Write([]byte("after your EOF\n"))
		s.Close()
	})
	var out bytes.Buffer
	if err := Pump(c, strings.NewReader("from rsync\n"), &out, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out.String() != "@RSYNCD: 32.0\nafter your EOF\n" {
		t.Errorf("client got %q", out.String())
	}
	if s := <-got; s != "from rsync\n" {
		t.Errorf("server got %q", s)
	}
}

func TestPumpServerClosesFirst(t *testing.T) {
	c := pumpServer(t, func(raw net.Conn, s *tls.Conn) {
		s.Write([]byte("@RSYNCD: 32.0\n@RSYNCD: EXIT\n"))
		s.Close()
	})
	// rsync keeps its pipe open until the helper exits: Pump must not
	// wait for it.
	pr, pw := io.Pipe()
	defer pw.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Pump(c, pr, &out, 5*time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pump waited for stdin after the server closed")
	}
}

func TestPumpTruncated(t *testing.T) {
	c := pumpServer(t, func(raw net.Conn, s *tls.Conn) {
		s.Write([]byte("@RSYNCD: 32.0\npartial"))
		// FIN without close_notify. Shut down only our sending side and
		// drain: closing with the client's close_notify unread would make
		// the kernel answer with a reset instead of the FIN under test.
		raw.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, raw)
	})
	var out bytes.Buffer
	err := Pump(c, strings.NewReader(""), &out, 5*time.Second)
	if FailKindOf(err) != FailTruncated || !strings.Contains(err.Error(), "without close_notify") {
		t.Fatalf("got %v, want truncation", err)
	}
}

func TestPumpNotRsync(t *testing.T) {
	c := pumpServer(t, func(raw net.Conn, s *tls.Conn) {
		s.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		s.Close()
	})
	var out bytes.Buffer
	err := Pump(c, strings.NewReader(""), &out, 5*time.Second)
	if FailKindOf(err) != FailNotRsync || !strings.Contains(err.Error(), `it sent "SSH-2.0-OpenSSH_9.2\r\n"`) {
		t.Fatalf("got %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("forwarded %q to rsync", out.String())
	}
}

// countWriter counts the writes Pump makes to rsync.
type countWriter struct {
	bytes.Buffer
	writes int
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestPumpBatchesRecords: the plaintext of the records already received
// reaches rsync in one write, not crypto/tls's one write per record.
func TestPumpBatchesRecords(t *testing.T) {
	const total = 4 << 20
	data := make([]byte, total)
	for i := range data {
		data[i] = byte(i * 7)
	}
	greeting := "@RSYNCD: 32.0\n"
	c := pumpServer(t, func(raw net.Conn, s *tls.Conn) {
		s.Write([]byte(greeting))
		s.Write(data)
		s.CloseWrite()
		io.Copy(io.Discard, s) // the client's close_notify: no reset
	})
	var out countWriter
	if err := Pump(c, strings.NewReader(""), &out, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), append([]byte(greeting), data...)) {
		t.Fatalf("rsync got %d bytes, not the %d sent", out.Len(), len(greeting)+total)
	}
	records := total / (16 << 10)
	if out.writes > records/2 {
		t.Errorf("%d records reached rsync in %d writes", records, out.writes)
	}
	t.Logf("%d records in %d writes", records, out.writes)
}
