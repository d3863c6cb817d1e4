package client

import (
	"strings"
	"testing"
)

func TestParseHelperTail(t *testing.T) {
	cases := []struct {
		args    []string
		host    string
		wantErr string
	}{
		{[]string{"localhost", "rsync", "--server", "--daemon", "."}, "localhost", ""},
		{[]string{"192.0.2.7", "rsync", "--server", "--daemon", "."}, "192.0.2.7", ""},
		{[]string{"::1", "rsync", "--server", "--daemon", "."}, "::1", ""},
		{[]string{"[2001:db8::5]", "rsync", "--server", "--daemon", "."}, "2001:db8::5", ""},
		{[]string{"host.example", "/opt/bin/rsync", "--server", "--daemon", "."}, "host.example", ""},
		{[]string{"host.example"}, "host.example", ""},
		{nil, "", "missing HOST"},
		{[]string{"-oProxyCommand=x", "rsync", "--server", "--daemon", "."}, "", "invalid host"},
		{[]string{"host", "rsync", "--server", "--sender", "."}, "", "unexpected command"},
		{[]string{"host", "--server", "--daemon", "."}, "", "unexpected command"},
		{[]string{"ho st", "rsync", "--server", "--daemon", "."}, "", "invalid host"},
		{[]string{"host:874", "rsync", "--server", "--daemon", "."}, "", "must be an IPv6 address"},
		{[]string{"[::1", "rsync", "--server", "--daemon", "."}, "", "unbalanced"},
		{[]string{"[127.0.0.1]", "rsync", "--server", "--daemon", "."}, "", "only for IPv6"},
		{[]string{"a$(id)", "rsync", "--server", "--daemon", "."}, "", "invalid host"},
	}
	for _, c := range cases {
		got, err := ParseHelperTail(c.args)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: err %v, want %q", c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || got.Host != c.host {
			t.Errorf("%q: got %+v, %v; want host %q", c.args, got, err, c.host)
		}
	}
}

func TestParseRsyncsURL(t *testing.T) {
	cases := []struct {
		in, daemon, port, wantErr string
	}{
		{"rsyncs://host.example/mod/path/x", "rsync://host.example/mod/path/x", "", ""},
		{"rsyncs://host.example:8740/mod/", "rsync://host.example/mod/", "8740", ""},
		{"rsyncs://bob@host.example:8740/mod", "rsync://bob@host.example/mod", "8740", ""},
		{"rsyncs://[::1]:8740/data/", "rsync://[::1]/data/", "8740", ""},
		{"rsyncs://[2001:db8::5]/data", "rsync://[2001:db8::5]/data", "", ""},
		{"RSYNCS://host/", "rsync://host/", "", ""},
		{"rsyncs://host", "rsync://host/", "", ""},
		{"rsyncs://127.0.0.1:874/m/a b", "rsync://127.0.0.1/m/a b", "874", ""},
		{"rsyncs://::1/data/", "", "", "in brackets"},
		{"rsyncs://host:0/m", "", "", "1 to 65535"},
		{"rsyncs://host:99999/m", "", "", "1 to 65535"},
		{"rsyncs://host:x/m", "", "", "1 to 65535"},
		{"rsyncs://[::1/m", "", "", "unbalanced"},
		{"rsyncs://[::1]x/m", "", "", "junk"},
		{"rsyncs:///m", "", "", "invalid host"},
		{"rsyncs://-x/m", "", "", "invalid host"},
		{"rsync://host/m", "", "", "not an rsyncs:// URL"},
	}
	for _, c := range cases {
		u, err := ParseRsyncsURL(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || u.DaemonURL() != c.daemon || u.Port != c.port {
			t.Errorf("%q: got %q port %q err %v; want %q port %q", c.in, u.DaemonURL(), u.Port, err, c.daemon, c.port)
		}
	}
}

func FuzzParseHelperTail(f *testing.F) {
	for _, s := range []string{
		"localhost rsync --server --daemon .", "::1 rsync --server --daemon .", "[::1] rsync --server --daemon .",
		"host", "-x rsync --server --daemon .", "h rsync --server --sender .", "[1.2.3.4]", "a:b", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		tail, err := ParseHelperTail(args)
		if err != nil {
			return
		}
		h := tail.Host
		if h == "" || strings.HasPrefix(h, "-") || strings.ContainsAny(h, "[] \t\n/@$;") {
			t.Fatalf("%q accepted as host %q", s, h)
		}
		// What the parser returns must parse to itself: hosts travel
		// from rsync to the resolver and to error messages unchanged.
		if again, err := ParseHost(h); err != nil || again != h {
			t.Fatalf("host %q does not round-trip: %q, %v", h, again, err)
		}
	})
}

func FuzzParseRsyncsURL(f *testing.F) {
	for _, s := range []string{
		"rsyncs://host/mod/path", "rsyncs://u@h:874/m/", "rsyncs://[::1]:8740/data/", "rsyncs://[::1/x",
		"rsyncs://::1/x", "rsyncs://h:99999/", "RSYNCS://H", "rsyncs://@h/m", "rsyncs://a@b@c/m",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseRsyncsURL(s)
		if err != nil {
			return
		}
		d := u.DaemonURL()
		if !strings.HasPrefix(d, "rsync://") {
			t.Fatalf("%q -> %q", s, d)
		}
		// The rewritten URL names the same user, host, module and path.
		back, err := ParseRsyncsURL("rsyncs://" + strings.TrimPrefix(d, "rsync://"))
		if err != nil {
			t.Fatalf("%q -> %q does not parse back: %v", s, d, err)
		}
		if back.Host != u.Host || back.User != u.User || back.Module != u.Module || back.Path != u.Path || back.Port != "" {
			t.Fatalf("%q -> %q -> %+v, want %+v", s, d, back, u)
		}
	})
}

func TestSplitHelperFlags(t *testing.T) {
	val := map[string]bool{"ca": true, "pin": true}
	boolean := map[string]bool{"insecure-skip-verify": true}
	cases := []struct {
		args        []string
		flags, rest string
		wantErr     string
	}{
		{[]string{"--ca", "c a.pem", "-av", "h::m/", "d/"}, "--ca|c a.pem", "-av|h::m/|d/", ""},
		{[]string{"-av", "--ca=x", "--pin", "sha256:A", "h::m/"}, "--ca=x|--pin|sha256:A", "-av|h::m/", ""},
		{[]string{"--insecure-skip-verify", "--port=9", "h::m"}, "--insecure-skip-verify", "--port=9|h::m", ""},
		{[]string{"-a", "--", "--ca", "x"}, "", "-a|--|--ca|x", ""},
		{[]string{"--ca-file", "x"}, "", "--ca-file|x", ""},
		{[]string{"h::m", "--pin"}, "", "", "--pin needs a value"},
	}
	for _, c := range cases {
		flags, rest, err := SplitHelperFlags(c.args, val, boolean)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: err %v, want %q", c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(flags, "|") != c.flags || strings.Join(rest, "|") != c.rest {
			t.Errorf("%q: flags %q rest %q err %v; want %q and %q", c.args, flags, rest, err, c.flags, c.rest)
		}
	}
}
