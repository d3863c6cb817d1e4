//go:build linux

package main

import (
	"errors"
	"io"
	"os/exec"
	"testing"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/runas"
)

// A usage mistake found by a package keeps its chain through buildServer:
// main classifies it with errors.Is (exit status 2), and the package's own
// error is still there to match.
func TestBuildServerUsageKeepsChain(t *testing.T) {
	rsync, err := exec.LookPath("rsync")
	if err != nil {
		t.Skip("rsync not installed")
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "CA", nil)
	leaf, key := ca.Issue(t, testpki.Leaf{CN: "localhost", DNS: []string{"localhost"}})
	certFile, keyFile := testpki.WritePair(t, dir, "srv", leaf, key)
	for _, tc := range []struct {
		name  string
		set   func(o *serveOptions)
		match error
	}{
		{"rsync-user", func(o *serveOptions) { o.rsyncUser = "no-such-user-here" }, runas.ErrUsage},
		{"client-auth", func(o *serveOptions) { o.client.Mode = "sometimes" }, tlsbridge.ErrClientAuthUsage},
		{"pair", func(o *serveOptions) { o.pairName = "pipe" }, errUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := serveOptions{certs: listFlag{certFile}, keys: listFlag{keyFile}, minTLS: "1.2", rsyncPath: rsync,
				pairName: "auto", proxyName: "auto", dataPath: "bridge", handshake: 1e9}
			tc.set(&o)
			_, err := buildServer(&o, newLogger(io.Discard))
			if !isUsage(err) || !errors.Is(err, tc.match) {
				t.Fatalf("buildServer: %v: usage %v, matches %v: want both", err, isUsage(err), errors.Is(err, tc.match))
			}
		})
	}
}
