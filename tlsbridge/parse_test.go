package tlsbridge

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		kind Kind
		more bool
	}{
		{"\x16\x03\x01\x00", KindTLS, false},
		{"@RSYNCD: 32.0\n", KindPlainRsync, false},
		{"@RSY", KindOther, true},
		{"GET / HTTP/1.1\r\n", KindHTTP, false},
		{"GE", KindOther, true},
		{"OPTIONS * HTTP/1.1", KindHTTP, false},
		{"SSH-2.0-OpenSSH_9.2\r\n", KindSSH, false},
		{"\x80\x2e\x01\x00\x02", KindSSLv2, false},
		{"\x80\x2e", KindOther, true},
		{"\x80\x2e\x05", KindOther, false},
		{"hello world", KindOther, false},
		{"", KindOther, true},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", KindProxy, false},
		{"PROXY ", KindProxy, false},
		{"PRO", KindOther, true},
		{"PROXYZ", KindOther, false},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", KindProxy, false},
		{"\r\n\r\n\x00", KindOther, true},
	}
	for _, tc := range tests {
		k, more := Classify([]byte(tc.in))
		if k != tc.kind || more != tc.more {
			t.Errorf("Classify(%q) = %v,%v; want %v,%v", tc.in, k, more, tc.kind, tc.more)
		}
	}
}

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
		v, d := ParseRsyncGreeting(tc.in)
		if v != tc.ver || d != tc.digests {
			t.Errorf("ParseRsyncGreeting(%q) = %q,%q; want %q,%q", tc.in, v, d, tc.ver, tc.digests)
		}
	}
}

func TestPlainRsyncAnswer(t *testing.T) {
	got := string(plainRsyncAnswer([]byte("@RSYNCD: 32.0 sha512 md5\n")))
	want := "@RSYNCD: 32.0 sha512 md5\n@ERROR: this port speaks rsync over TLS; use rsync-ssl or port 873\n"
	if got != want {
		t.Errorf("got %q want %q", got, want)
	}
	got = string(plainRsyncAnswer([]byte("@RSYNCD: 29\n")))
	if !strings.HasPrefix(got, "@RSYNCD: 29\n@ERROR:") {
		t.Errorf("old protocol answer %q", got)
	}
}

func TestSafeEnvValue(t *testing.T) {
	good := []string{"host-a.example.org", "CN=backup01,O=Example Corp", "2001:db8::1", "TLS_AES_128_GCM_SHA256", "a@b"}
	bad := []string{"", "../../etc", "a/b", "$(id)", "`id`", "a;b", "line\nbreak", "-rf", " lead", "trail ", "x%y%", strings.Repeat("a", 300), "tab\t", "quote'"}
	for _, v := range good {
		if !SafeEnvValue(v) {
			t.Errorf("SafeEnvValue(%q) = false, want true", v)
		}
	}
	for _, v := range bad {
		if SafeEnvValue(v) {
			t.Errorf("SafeEnvValue(%q) = true, want false", v)
		}
	}
}

func TestRsyncEnvDropsForgedValues(t *testing.T) {
	base := []string{"PATH=/usr/bin", "SSL_CLIENT_S_DN_CN=forged", "TCPREMOTEIP=6.6.6.6", "LISTEN_FDS=1", "HOME=/root"}
	ci := ConnInfo{Remote: netip.MustParseAddrPort("[::ffff:203.0.113.7]:51234"), Local: netip.MustParseAddrPort("192.0.2.1:874")}
	ci.State.Version = 0x0304
	ci.State.CipherSuite = 0x1301
	ci.State.ServerName = "bad/name"
	env, dropped := RsyncEnv(base, ci)
	joined := strings.Join(env, "\n")
	for _, want := range []string{"PATH=/usr/bin", "HOME=/root", "PROTO=TCP", "TCPREMOTEIP=203.0.113.7", "TCPREMOTEPORT=51234",
		"TCPLOCALIP=192.0.2.1", "TCPLOCALPORT=874", "SSL_PROTOCOL=TLSv1.3", "SSL_CIPHER=TLS_AES_128_GCM_SHA256", "SSL_CLIENT_VERIFY=NONE"} {
		if !strings.Contains(joined+"\n", want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, joined)
		}
	}
	for _, bad := range []string{"forged", "6.6.6.6", "LISTEN_FDS", "SSL_TLS_SNI"} {
		if strings.Contains(joined, bad) {
			t.Errorf("env still has %s:\n%s", bad, joined)
		}
	}
	if len(dropped) != 1 || dropped[0] != "SSL_TLS_SNI" {
		t.Errorf("dropped = %v, want [SSL_TLS_SNI]", dropped)
	}
}

func TestProxyV2Header(t *testing.T) {
	h := ProxyV2Header(netip.MustParseAddrPort("[::ffff:203.0.113.7]:51234"), netip.MustParseAddrPort("192.0.2.1:874"))
	want := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1, 0xc8, 0x22, 0x03, 0x6a)
	if !bytes.Equal(h, want) {
		t.Errorf("v4 header\n got % x\nwant % x", h, want)
	}
	h = ProxyV2Header(netip.MustParseAddrPort("[2001:db8::7]:4000"), netip.MustParseAddrPort("[2001:db8::1]:874"))
	if len(h) != 16+36 || h[13] != 0x21 || h[15] != 36 {
		t.Errorf("v6 header % x", h)
	}
	h = ProxyV2Header(netip.MustParseAddrPort("[2001:db8::7]:4000"), netip.MustParseAddrPort("192.0.2.1:874"))
	if len(h) != 16 || h[12] != 0x20 {
		t.Errorf("mixed families should give LOCAL, got % x", h)
	}
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

func TestScanRsyncBinary(t *testing.T) {
	tests := []struct {
		name          string
		data          string
		ver           string
		proxy, hosts  bool
		unix          bool
		mode          ProxyMode
		modeErrSubstr string
	}{
		{"3.5.0", "\x00zlib\x001.2.13\x003.5.0\x00proxy protocol hosts\x00proxy protocol\x00", "3.5.0", true, true, true, ProxyHosts, ""},
		{"3.2.7", "\x001.2.13\x003.2.7\x00proxy protocol\x00", "3.2.7", true, false, true, ProxyPlain, ""},
		{"dev", "\x003.5.1dev\x00proxy protocol hosts\x00proxy protocol\x00", "3.5.1dev", true, true, false, ProxyHosts, ""},
		{"3.6.0", "\x003.6.0\x00proxy protocol hosts\x00proxy protocol\x00", "3.6.0", true, true, false, ProxyHosts, ""},
		{"3.1.3", "\x003.1.3\x00", "3.1.3", false, false, true, 0, "no \"proxy protocol\" support"},
		{"ambiguous", "\x003.1.3\x003.2.7\x00proxy protocol\x00", "", true, false, false, ProxyPlain, ""},
	}
	for _, tc := range tests {
		info := &RsyncInfo{Path: "rsync"}
		ScanRsyncBinary([]byte(tc.data), info)
		if info.Version != tc.ver || info.HasProxyProtocol != tc.proxy || info.HasProxyHosts != tc.hosts {
			t.Errorf("%s: got %+v", tc.name, info)
		}
		if info.AcceptsUnixPair() != tc.unix {
			t.Errorf("%s: AcceptsUnixPair = %v", tc.name, !tc.unix)
		}
		mode, err := info.AutoProxyMode()
		if tc.modeErrSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.modeErrSubstr) {
				t.Errorf("%s: AutoProxyMode err = %v", tc.name, err)
			}
		} else if err != nil || mode != tc.mode {
			t.Errorf("%s: AutoProxyMode = %v, %v", tc.name, mode, err)
		}
	}
	unreadable := &RsyncInfo{Path: "/usr/local/bin/rsync-wrapper"}
	if _, err := unreadable.AutoProxyMode(); err == nil || !strings.Contains(err.Error(), "--proxy-protocol hosts") {
		t.Errorf("wrapper script: %v", err)
	}
}

func TestHelloVersion(t *testing.T) {
	if v, ok := HelloVersion([]byte{0x16, 3, 0, 0, 50, 1, 0, 0, 46, 3, 0}); !ok || v != 0x0300 {
		t.Errorf("got %x %v", v, ok)
	}
	if _, ok := HelloVersion([]byte{0x16, 3}); ok {
		t.Error("short input parsed")
	}
}

func TestArgvGuardsStandaloneMode(t *testing.T) {
	r := RsyncCommand{Path: "/usr/bin/rsync", Conf: "/etc/rsyncd.conf", Args: []string{"--log-file=/x"}, Proxy: ProxyHosts}
	got := strings.Join(r.Argv("127.0.0.1"), " ")
	want := "/usr/bin/rsync --daemon --no-detach --address=0.0.0.1 --config=/etc/rsyncd.conf --dparam=proxyprotocol=yes --dparam=proxyprotocolhosts=127.0.0.1 --log-file=/x"
	if got != want {
		t.Errorf("argv\n got %s\nwant %s", got, want)
	}
	r.Proxy = ProxyOff
	if strings.Contains(strings.Join(r.Argv("x"), " "), "proxy") {
		t.Error("ProxyOff still passes proxy parameters")
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"\x16\x03\x01", "@RSYNCD: 32.0\n", "GET /", "SSH-2.0", "\x80\x2e\x01", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, more := Classify(b)
		if len(b) > 0 && b[0] == 0x16 && (k != KindTLS || more) {
			t.Fatalf("TLS record classified as %v", k)
		}
		if len(b) >= 16 && more && k == KindOther {
			// sniff stops at 16 bytes; nothing we match is longer.
			for _, c := range append([]string{"@RSYNCD:", "SSH-"}, httpMethods...) {
				if len(c) >= 16 {
					t.Fatalf("candidate %q longer than the sniff window", c)
				}
			}
		}
	})
}

func FuzzParseRsyncGreeting(f *testing.F) {
	for _, s := range []string{"@RSYNCD: 32.0 sha512 md5\n", "@RSYNCD: 29\n", "@RSYNCD: 32.0 $(x)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, d := ParseRsyncGreeting(s)
		if strings.ContainsAny(v+d, "\n\r$`;/") {
			t.Fatalf("unsafe output %q %q from %q", v, d, s)
		}
		ans := string(plainRsyncAnswer([]byte(s)))
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
