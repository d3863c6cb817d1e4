//go:build linux

package main

import (
	"strings"
	"testing"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// The journal field carries the SNI only where the text line would show it
// as is: a valid host name. Anything else is described, never exported raw.
func TestResultFieldsSNIOnlyWhenValid(t *testing.T) {
	for _, c := range []struct {
		sni, want string
	}{
		{"rsync.example.org", "rsync.example.org"},
		{"", ""},
		{"bad name\x01" + strings.Repeat("x", 24), "(invalid, 33 bytes)"},
		{"-leading.example.org", "(invalid, 20 bytes)"},
	} {
		f := resultFields(tlsbridge.Result{Peer: "192.0.2.7:40000", SNI: c.sni, RsyncExit: 0})
		got, ok := f["RSYNC_SSL_SNI"]
		if c.want == "" {
			if ok {
				t.Errorf("SNI %q: RSYNC_SSL_SNI=%q, want no field", c.sni, got)
			}
			continue
		}
		if got != c.want {
			t.Errorf("SNI %q: RSYNC_SSL_SNI=%q, want %q", c.sni, got, c.want)
		}
	}
}
