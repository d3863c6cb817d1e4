package tlsbridge

import (
	"bytes"
	"net/netip"
	"testing"
)

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
