package client

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestParseDataPath(t *testing.T) {
	for in, want := range map[string]DataPath{"auto": PathAuto, "ktls": PathKernel, "user": PathUser} {
		got, err := ParseDataPath(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseDataPath(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "kernel", "KTLS", "bridge"} {
		if _, err := ParseDataPath(in); err == nil || !strings.Contains(err.Error(), "want auto, ktls or user") {
			t.Errorf("ParseDataPath(%q) = %v, want the choices named", in, err)
		}
	}
}

func TestKernelRefusal(t *testing.T) {
	aesOnly := func(s uint16) bool { return s == tls.TLS_AES_128_GCM_SHA256 }
	for _, c := range []struct {
		version, suite uint16
		want           string
	}{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, ""},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "TLS 1.3 only"},
		{tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256 is not one"},
	} {
		got := kernelRefusal(tls.ConnectionState{Version: c.version, CipherSuite: c.suite}, aesOnly)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("kernelRefusal(%x, %x) = %q, want %q", c.version, c.suite, got, c.want)
		}
	}
}
