package rsyncd

import (
	"strings"
	"testing"
)

func TestParseRsyncGreeting(t *testing.T) {
	tests := []struct{ in, ver, digests string }{
		{"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n", "32.0", "sha512 sha256 sha1 md5 md4"},
		{"@RSYNCD: 31.0\n", "31.0", ""},
		{"@RSYNCD: 30\r\n", "30", ""},
		{"@RSYNCD: 32.0 xxh128 md5", "32.0", "xxh128 md5"},
		{"@RSYNCD: 32.0 $(id)", "", ""},
		{"@RSYNCD: 3a.0", "", ""},
		{"@RSYNCD: ", "", ""},
		{"@RSYNCD: 1234.0", "", ""},
		{"RSYNCD: 32.0", "", ""},
	}
	for _, tc := range tests {
		v, d := ParseGreeting(tc.in)
		if v != tc.ver || d != tc.digests {
			t.Errorf("ParseGreeting(%q) = %q,%q; want %q,%q", tc.in, v, d, tc.ver, tc.digests)
		}
	}
}

func TestPlainRsyncAnswer(t *testing.T) {
	got := string(PlainClientAnswer([]byte("@RSYNCD: 32.0 sha512 md5\n")))
	want := "@RSYNCD: 32.0 sha512 md5\n@ERROR: this port speaks rsync over TLS; use rsync-ssl or port 873\n"
	if got != want {
		t.Errorf("got %q want %q", got, want)
	}
	got = string(PlainClientAnswer([]byte("@RSYNCD: 29\n")))
	if !strings.HasPrefix(got, "@RSYNCD: 29\n@ERROR:") {
		t.Errorf("old protocol answer %q", got)
	}
}

// checkPredicate asserts that f holds for every good value and for no bad one.
func checkPredicate(t *testing.T, name string, f func(string) bool, good, bad []string) {
	t.Helper()
	for _, v := range good {
		if !f(v) {
			t.Errorf("%s(%q) = false, want true", name, v)
		}
	}
	for _, v := range bad {
		if f(v) {
			t.Errorf("%s(%q) = true, want false", name, v)
		}
	}
}

func TestSafeEnvValue(t *testing.T) {
	good := []string{"host-a.example.org", "CN=backup01,O=Example", "2001:db8::1", "TLS_AES_128_GCM_SHA256", "a@b", "host-a.", "a.b_c"}
	bad := []string{"", "../../etc", "a/b", "$(id)", "`id`", "a;b", "line\nbreak", "-rf", " lead", "trail ", "x%y%", strings.Repeat("a", 300), "tab\t", "quote'",
		".", "..", ".hidden", "host-a --delete-everything", "a b", "CN=backup01,O=Example Corp"}
	checkPredicate(t, "SafeEnvValue", SafeEnvValue, good, bad)
}

func TestSafeEnvText(t *testing.T) {
	good := []string{"CN=backup01,O=Example Corp", "Mar  4 05:06:07 2026 GMT", "CN=.,O=x", "CN=host-a"}
	bad := []string{"", " lead", "trail ", "CN=host-a --delete-everything", "CN=a .hidden", "CN=a/b", "CN=$(id)", "CN=..", ".x", "-x",
		"CN=a\tb", "CN=a\nb", strings.Repeat("a ", 200)}
	checkPredicate(t, "SafeEnvText", SafeEnvText, good, bad)
}

func TestModuleRequested(t *testing.T) {
	tests := []struct{ head, want string }{
		{"@RSYNCD: 32.0 md5\ndata\n--server", "data"},
		{"@RSYNCD: 32.0 md5\n#list\n", "#list"},
		{"@RSYNCD: 30.0\n\n", "#list"},
		{"@RSYNCD: 32.0 md5\nda", ""},
		{"garbage\ndata\n", ""},
		{"@RSYNCD: 32.0\n../etc\n", "(unprintable)"},
	}
	for _, tc := range tests {
		if got := ModuleRequested([]byte(tc.head)); got != tc.want {
			t.Errorf("ModuleRequested(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

func FuzzParseRsyncGreeting(f *testing.F) {
	for _, s := range []string{"@RSYNCD: 32.0 sha512 md5\n", "@RSYNCD: 29\n", "@RSYNCD: 32.0 $(x)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, d := ParseGreeting(s)
		if strings.ContainsAny(v+d, "\n\r$`;/") {
			t.Fatalf("unsafe output %q %q from %q", v, d, s)
		}
		ans := string(PlainClientAnswer([]byte(s)))
		if strings.Count(ans, "\n") != 2 || !strings.HasPrefix(ans, "@RSYNCD: ") {
			t.Fatalf("answer %q for %q", ans, s)
		}
	})
}

func FuzzSafeEnvValue(f *testing.F) {
	for _, s := range []string{"host.example", "../x", "$(id)", "a\nb", "CN=x,O=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !SafeEnvValue(s) {
			return
		}
		if strings.ContainsAny(s, " /\\$`;&|<>\"'\n\r\t%*?()[]{}!#~") || strings.Contains(s, "..") || len(s) > maxEnvValue ||
			s[0] == '.' || s[0] == '-' {
			t.Fatalf("unsafe value accepted: %q", s)
		}
	})
}

func FuzzSafeEnvText(f *testing.F) {
	for _, s := range []string{"CN=x,O=y z", "Mar  4 05:06:07 2026 GMT", "a -b", "a .b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !SafeEnvText(s) {
			return
		}
		for _, w := range strings.Fields(s) {
			if w[0] == '-' || w[0] == '.' {
				t.Fatalf("value %q splits into an unsafe word %q", s, w)
			}
		}
		if strings.ContainsAny(s, "/\\$`;&|<>\"'\n\r\t%*?()[]{}!#~") || strings.Contains(s, "..") || len(s) > maxEnvValue {
			t.Fatalf("unsafe value accepted: %q", s)
		}
	})
}

func FuzzModuleRequested(f *testing.F) {
	f.Add([]byte("@RSYNCD: 32.0 md5\ndata\n"))
	f.Add([]byte("@RSYNCD: 32.0\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ModuleRequested(b)
		if m != "" && m != "#list" && m != "(unprintable)" && !SafeEnvValue(m) {
			t.Fatalf("unsafe module %q", m)
		}
	})
}
