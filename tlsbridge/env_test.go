package tlsbridge

import (
	"net/netip"
	"strings"
	"testing"
)

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
