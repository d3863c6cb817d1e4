package tlsbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// A client the certificate policy refuses ends the session with the
// policy's own typed error in Result.Err (the log and exit status classify
// it by type), and rsync is never started.
func TestServeConnKeepsClientCertErrorTyped(t *testing.T) {
	dir := t.TempDir()
	store, _, err := LoadCerts([]CertPair{selfSigned(t, dir, "srv", time.Now().Add(time.Hour), "localhost")})
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, dir, "Client CA", nil)
	other, otherKey := ca.Issue(t, testpki.Leaf{CN: "host-b"})
	policy, err := NewClientPolicy(ClientAuthConfig{CAFile: ca.File, AllowCN: []string{"host-a"}})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{TLS: ServerTLSConfig(store, tls.VersionTLS12, policy), Client: policy, HandshakeTimeout: 5 * time.Second,
		DataPathMode: DataPathBridge, Logf: t.Logf}
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		reason string
	}{
		{"no certificate", nil, noCertReason},
		{"not allowed", []tls.Certificate{{Certificate: [][]byte{other.Raw}, PrivateKey: otherKey}}, "not in --allow-cn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := loopbackPair(t)
			go func() {
				client.SetDeadline(time.Now().Add(10 * time.Second))
				cl := tls.Client(client, &tls.Config{InsecureSkipVerify: true, Certificates: tc.certs})
				if cl.Handshake() == nil {
					cl.Read(make([]byte, 1))
				}
				client.Close()
			}()
			res := s.ServeConn(context.Background(), server)
			var ce *ClientCertError
			if !errors.As(res.Err, &ce) || ce.Reason != tc.reason {
				t.Fatalf("Result.Err = %v (%T), want a *ClientCertError with reason %q", res.Err, errors.Unwrap(res.Err), tc.reason)
			}
			if res.RsyncExit != -1 {
				t.Errorf("rsync exit %d: rsync was started", res.RsyncExit)
			}
		})
	}
}
