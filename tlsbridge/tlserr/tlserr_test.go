package tlserr

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// handshake runs a real crypto/tls handshake over loopback TCP (buffered,
// unlike net.Pipe, so an alert never waits on a blocked write) and returns
// both sides' errors.
func handshake(t *testing.T, srv, cli *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(5 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, srv)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3 reports a refused client certificate on the
			// first read, not in the handshake.
			_, err = s.Read(make([]byte, 1))
		}
		a.Close()
		errc <- err
	}()
	c := tls.Client(b, cli)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	b.Close()
	return <-errc, clientErr
}

func serverConfig(t *testing.T) *tls.Config {
	ca := testpki.NewCA(t, "", "guard CA", nil)
	_, cert := ca.ServerLeaf(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "localhost")
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// TestTextOnlyErrorsStillMatch provokes every crypto/tls error that tlserr
// recognises by its text; if a Go release rewords one, this fails.
func TestTextOnlyErrorsStillMatch(t *testing.T) {
	t.Run("only old versions", func(t *testing.T) {
		srv := serverConfig(t)
		serr, _ := handshake(t, srv, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		vs, ok := OfferedVersions(serr)
		if !ok || len(vs) != 2 || vs[0] != tls.VersionTLS11 && vs[1] != tls.VersionTLS11 {
			t.Fatalf("OfferedVersions(%v) = %x, %v; want TLS 1.0 and 1.1", serr, vs, ok)
		}
	})
	t.Run("no shared cipher", func(t *testing.T) {
		srv := serverConfig(t) // an ECDSA certificate
		srv.MaxVersion = tls.VersionTLS12
		serr, _ := handshake(t, srv, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}})
		if !NoSharedCipher(serr) {
			t.Fatalf("NoSharedCipher(%v) = false", serr)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			srv := serverConfig(t)
			srv.ClientAuth, srv.MaxVersion = tls.RequireAnyClientCert, v
			serr, cerr := handshake(t, srv, &tls.Config{InsecureSkipVerify: true})
			if !NoClientCertificate(serr) {
				t.Errorf("%x: NoClientCertificate(%v) = false", v, serr)
			}
			// And the client hears it as an alert, read by type.
			a, ok := RemoteAlert(cerr)
			if !ok || !a.IsCertificate() && a != AlertHandshakeFailure {
				t.Errorf("%x: RemoteAlert(%v) = %v, %v", v, cerr, a, ok)
			}
		}
	})
	// A renegotiation attempt cannot be started from a Go client;
	// tests/serve_bad_input_test.go's "renegotiation" cases drive openssl
	// s_client into one and assert the log line Renegotiation produces.
	if !Renegotiation(errors.New("tls: received unexpected handshake message of type *tls.clientHelloMsg")) {
		t.Error("Renegotiation does not match crypto/tls's text")
	}
}

func TestRemoteAlertByType(t *testing.T) {
	srv := serverConfig(t)
	other := testpki.NewCA(t, "", "other CA", nil)
	// The client refuses our certificate: the server receives the alert.
	serr, _ := handshake(t, srv, &tls.Config{RootCAs: other.Pool, ServerName: "localhost"})
	a, ok := RemoteAlert(serr)
	if !ok || a != AlertBadCertificate && a != AlertUnknownCA {
		t.Fatalf("RemoteAlert(%v) = %v, %v; want bad certificate or unknown CA", serr, a, ok)
	}
	if a.String() == "" || !a.IsCertificate() {
		t.Errorf("%d: %q IsCertificate=%v", a, a, a.IsCertificate())
	}
	if _, ok := RemoteAlert(errors.New("remote error: tls: bad certificate")); ok {
		t.Error("a plain error with the same text was taken for an alert")
	}
}

func TestIsTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := a.Read(make([]byte, 1))
	if !IsTimeout(err) {
		t.Fatalf("IsTimeout(%v) = false", err)
	}
	if IsTimeout(errors.New("i/o timeout")) {
		t.Error("a plain error with timeout text was taken for a timeout")
	}
}
