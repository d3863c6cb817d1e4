package tlsbridge

import (
	"encoding/binary"
	"net/netip"
)

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// ProxyV2Header builds a PROXY protocol v2 header for a TCP connection from
// src to dst. IPv4-mapped IPv6 addresses are sent as IPv4 so that rsync's
// "hosts allow" sees the address the admin wrote. If the two families differ
// or an address is missing, a LOCAL header is sent, and rsync falls back to
// the pair's own address.
func ProxyV2Header(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	h := make([]byte, 0, 16+36)
	h = append(h, proxyV2Sig...)
	switch {
	case s.Is4() && d.Is4():
		h = append(h, 0x21, 0x11, 0, 12)
		h = append(h, s.AsSlice()...)
		h = append(h, d.AsSlice()...)
	case s.Is6() && d.Is6():
		h = append(h, 0x21, 0x21, 0, 36)
		h = append(h, s.AsSlice()...)
		h = append(h, d.AsSlice()...)
	default:
		return append(h, 0x20, 0x00, 0, 0)
	}
	h = binary.BigEndian.AppendUint16(h, src.Port())
	h = binary.BigEndian.AppendUint16(h, dst.Port())
	return h
}
