package tlsbridge

import (
	"strings"
	"testing"
)

func TestValidHostName(t *testing.T) {
	good := []string{"localhost", "rsync.example.org", "a", "host-a", "_srv.example", "xn--bcher-kva.example", strings.Repeat("a", 63) + ".b"}
	bad := []string{"", ".", "a..b", ".a", "a.", "-a", "a-", "a-.b", "a b", "x client=host-b", "a/b", "a\rb", "\x1b[2J", "ünï.example",
		strings.Repeat("a", 64), strings.Repeat("a.", 127) + "ab", "127.0.0.1:874", "[::1]"}
	for _, s := range good {
		if !ValidHostName(s) {
			t.Errorf("ValidHostName(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidHostName(s) {
			t.Errorf("ValidHostName(%q) = true", s)
		}
	}
	for in, want := range map[string]string{"": "-", "localhost": "localhost", "x client=host-b\r": "(invalid, 16 bytes)"} {
		if got := sniField(in); got != want {
			t.Errorf("sniField(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzValidHostName(f *testing.F) {
	f.Add("rsync.example.org")
	f.Add("x client=host-b")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidHostName(s) && (strings.ContainsAny(s, " /=\r\n\t\x1b\"") || len(s) > 253 || strings.Contains(s, "..")) {
			t.Fatalf("accepted %q", s)
		}
	})
}
