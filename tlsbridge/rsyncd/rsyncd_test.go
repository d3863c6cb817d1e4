package rsyncd

import (
	"strings"
	"testing"
)

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
		info := &Info{Path: "rsync"}
		ScanBinary([]byte(tc.data), info)
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
	unreadable := &Info{Path: "/usr/local/bin/rsync-wrapper"}
	if _, err := unreadable.AutoProxyMode(); err == nil || !strings.Contains(err.Error(), "--proxy-protocol hosts") {
		t.Errorf("wrapper script: %v", err)
	}
}

func TestArgvGuardsStandaloneMode(t *testing.T) {
	r := Command{Path: "/usr/bin/rsync", Conf: "/etc/conf", Args: []string{"--log-file=/x"}, Proxy: ProxyHosts}
	got := strings.Join(r.Argv("127.0.0.1"), " ")
	want := "/usr/bin/rsync --daemon --no-detach --address=0.0.0.1 --config=/etc/conf --dparam=proxyprotocol=yes --dparam=proxyprotocolhosts=127.0.0.1 --log-file=/x"
	if got != want {
		t.Errorf("argv\n got %s\nwant %s", got, want)
	}
	r.Proxy = ProxyOff
	if strings.Contains(strings.Join(r.Argv("x"), " "), "proxy") {
		t.Error("ProxyOff passes proxy parameters to an rsync that does not know them")
	}
	// An rsync that knows the parameter gets an explicit "no", so that
	// "proxy protocol = yes" in rsyncd.conf cannot stay in force.
	r.KnowsProxyProtocol = true
	if got := strings.Join(r.Argv("x"), " "); !strings.HasSuffix(got, " --dparam=proxyprotocol=no --log-file=/x") {
		t.Errorf("ProxyOff with a binary that knows the parameter: %s", got)
	}
}

// An rsync handed the client's own socket (kernel TLS) reads no PROXY
// header, so "proxy protocol" must be off on its command line wherever the
// rsync knows the parameter: read off the binary, or implied by the mode
// the admin named for a binary that could not be read (a wrapper script).
func TestOwnSocketTurnsProxyProtocolOff(t *testing.T) {
	for _, c := range []struct {
		name   string
		cmd    Command
		wantNo bool
	}{
		{"probed 3.5", Command{Path: "rsync", Proxy: ProxyHosts, KnowsProxyProtocol: true}, true},
		{"wrapper, hosts", Command{Path: "/usr/local/bin/rsync-wrapper", Proxy: ProxyHosts}, true},
		{"wrapper, plain", Command{Path: "/usr/local/bin/rsync-wrapper", Proxy: ProxyPlain}, true},
		{"wrapper, off", Command{Path: "/usr/local/bin/rsync-wrapper", Proxy: ProxyOff}, false},
		{"old rsync, off", Command{Path: "rsync", Proxy: ProxyOff}, false},
	} {
		own := c.cmd.OwnSocket()
		got := strings.Join(own.Argv("127.0.0.1"), " ")
		if strings.Contains(got, "proxyprotocol=yes") || strings.Contains(got, "proxyprotocolhosts") {
			t.Errorf("%s: %q turns the PROXY header on for an rsync that gets none", c.name, got)
		}
		if has := strings.Contains(got, "--dparam=proxyprotocol=no"); has != c.wantNo {
			t.Errorf("%s: %q: proxyprotocol=no present %v, want %v", c.name, got, has, c.wantNo)
		}
		if c.cmd.Proxy != own.Proxy && c.cmd.Proxy == ProxyOff {
			t.Errorf("%s: OwnSocket changed its receiver", c.name)
		}
	}
}
