package tlsbridge

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unit CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{c, key, pool}
}

func (ca *testCA) leaf(t *testing.T, dns []string, ips []string, from, to time.Time) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"}, DNSNames: dns,
		NotBefore: from, NotAfter: to, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}
}

func TestVerifyServer(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	good, _ := ca.leaf(t, []string{"localhost"}, []string{"127.0.0.1", "::1"}, now.Add(-time.Hour), now.Add(time.Hour))
	old, _ := ca.leaf(t, []string{"localhost"}, nil, now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	future, _ := ca.leaf(t, []string{"localhost"}, nil, now.Add(2*time.Hour), now.Add(3*time.Hour))
	cases := []struct {
		name  string
		leaf  *x509.Certificate
		roots *x509.CertPool
		o     ClientOptions
		kind  FailKind // "" = accepted
		msg   string
	}{
		{"name", good, ca.pool, ClientOptions{Host: "localhost", Trust: TrustCAFile}, "", ""},
		{"IPv4 SAN", good, ca.pool, ClientOptions{Host: "127.0.0.1", Trust: TrustCAFile}, "", ""},
		{"IPv6 SAN", good, ca.pool, ClientOptions{Host: "::1", Trust: TrustCAFile}, "", ""},
		{"wrong name", good, ca.pool, ClientOptions{Host: "example.org", Trust: TrustCAFile}, FailNameMismatch,
			"certificate is for localhost, 127.0.0.1, ::1, not example.org"},
		{"servername", good, ca.pool, ClientOptions{Host: "192.0.2.1", ServerName: "localhost", Trust: TrustCAFile}, "", ""},
		{"skip name", good, ca.pool, ClientOptions{Host: "example.org", Trust: TrustCAFile, SkipHostnameCheck: true}, "", ""},
		{"unknown CA", good, other.pool, ClientOptions{Host: "localhost", Trust: TrustCAFile, CAFile: "other.pem"}, FailUnknownAuthority,
			`certificate signed by unknown authority "CN=unit CA"`},
		{"unknown CA skip name", good, other.pool, ClientOptions{Host: "x", Trust: TrustCAFile, SkipHostnameCheck: true}, FailUnknownAuthority, "unknown authority"},
		{"expired", old, ca.pool, ClientOptions{Host: "localhost", Trust: TrustCAFile}, FailExpired,
			"certificate expired " + old.NotAfter.UTC().Format(dateFmt)},
		{"not yet valid", future, ca.pool, ClientOptions{Host: "localhost", Trust: TrustCAFile}, FailNotYetValid,
			"certificate not valid until " + future.NotBefore.UTC().Format(dateFmt)},
		{"no verification", old, nil, ClientOptions{Host: "x", Trust: TrustNone}, "", ""},
		{"pin alone", good, nil, ClientOptions{Host: "x", Trust: TrustNone, Pins: []Pin{PinOf(good)}}, "", ""},
		{"pin mismatch", good, nil, ClientOptions{Host: "x", Trust: TrustNone, Pins: []Pin{PinOf(old)}}, FailPinMismatch,
			"server key " + PinOf(good).String() + " does not match --pin " + PinOf(old).String()},
		{"pin and unknown CA", good, other.pool, ClientOptions{Host: "localhost", Trust: TrustCAFile, Pins: []Pin{PinOf(good)}}, FailUnknownAuthority, ""},
		{"pin rollover", good, nil, ClientOptions{Host: "x", Trust: TrustNone, Pins: []Pin{PinOf(old), PinOf(good)}}, "", ""},
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

func TestParsePin(t *testing.T) {
	p := Pin{1, 2, 3}
	for _, s := range []string{p.String(), "sha256//" + strings.TrimPrefix(p.String(), "sha256:")} {
		got, err := ParsePin(s)
		if err != nil || got != p {
			t.Errorf("%q: %v %v", s, got, err)
		}
	}
	for _, s := range []string{"", "sha1:AAAA", "sha256:", "sha256:AAAA", "sha256:!!!"} {
		if _, err := ParsePin(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// pumpServer runs one TLS server connection with handle and returns a
// client Conn to it.
func pumpServer(t *testing.T, handle func(raw net.Conn, c *tls.Conn)) *Conn {
	t.Helper()
	ca := newTestCA(t)
	leaf, cert := ca.leaf(t, nil, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
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
	d, err := NewDialer(ClientOptions{Host: "127.0.0.1", Port: port, Trust: TrustNone, Pins: []Pin{PinOf(leaf)}, ConnectTimeout: 5 * time.Second})
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
