package activation

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// The PROXY protocol (haproxy.org/download/2.9/doc/proxy-protocol.txt) lets a
// TCP load balancer tell the server who its client is: one header, before
// any of the client's bytes. Version 1 is a text line, version 2 a binary
// block. The parser here is ours rather than a library's: it is small, it
// takes a byte slice and nothing else (so it is easy to fuzz), and the
// policy around it (required from trusted peers, refused from everyone else,
// read under the handshake deadline) is ours in any case.

const (
	// maxV1 is the longest v1 line the specification allows, CRLF included
	// ("PROXY TCP6 " and two full IPv6 addresses and ports).
	maxV1 = 107
	// maxV2 bounds a v2 header, TLVs included. The address block is at most
	// 216 bytes; the rest is TLVs (AWS's VPC endpoint ID, HAProxy's unique
	// ID and TLS details), none of which come near this.
	maxV2   = 4096
	v2Fixed = 16
)

var (
	v1Prefix = []byte("PROXY ")
	v2Sig    = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ProxyHeader is what a PROXY header says about a connection.
type ProxyHeader struct {
	Version int // 1 or 2
	// Local is set for a v2 LOCAL command: the balancer speaking for itself
	// (its health checks), with no client behind it.
	Local bool
	// Src and Dst are the client's address and the address it connected
	// to. They are invalid when the header carries none (LOCAL, v1 UNKNOWN,
	// v2 AF_UNSPEC): then the connection's own addresses stand.
	Src, Dst netip.AddrPort
}

// Command names the header's kind for log lines.
func (h ProxyHeader) Command() string {
	switch {
	case h.Local:
		return "PROXY v2 LOCAL"
	case !h.Src.IsValid():
		return fmt.Sprintf("PROXY v%d without addresses", h.Version)
	}
	return fmt.Sprintf("PROXY v%d", h.Version)
}

// errNeedMore means the bytes so far are a proper prefix of a header that
// may still turn out well formed.
var errNeedMore = errors.New("incomplete PROXY header")

// errNoHeader is returned when the stream does not start with a PROXY
// header at all.
var errNoHeader = errors.New("no PROXY header")

// IsProxyHeaderStart reports whether b starts like a PROXY header (v1 or
// v2), or is too short to say otherwise.
func IsProxyHeaderStart(b []byte) bool {
	return isPrefixEither(b, v1Prefix) || isPrefixEither(b, v2Sig)
}

// isPrefixEither reports whether one of a and p is a prefix of the other.
func isPrefixEither(a, p []byte) bool {
	n := min(len(a), len(p))
	return bytes.Equal(a[:n], p[:n])
}

// ParseProxyHeader parses a PROXY v1 or v2 header at the start of b. It
// returns the header and its length in bytes; what follows belongs to the
// client. errNeedMore means b is too short to decide; errNoHeader (wrapped)
// that b starts with something else; any other error describes a malformed
// header.
func ParseProxyHeader(b []byte) (ProxyHeader, int, error) {
	switch {
	case len(b) == 0:
		return ProxyHeader{}, 0, errNeedMore
	case isPrefixEither(b, v2Sig):
		return parseV2(b)
	case isPrefixEither(b, v1Prefix):
		return parseV1(b)
	}
	return ProxyHeader{}, 0, fmt.Errorf("%w: %s", errNoHeader, describeStart(b))
}

// describeStart names what a stream starts with instead of a header.
func describeStart(b []byte) string {
	if b[0] == 0x16 {
		return "the stream starts with a TLS handshake"
	}
	if len(b) > 8 {
		b = b[:8]
	}
	return fmt.Sprintf("the stream starts with % x", b)
}

func parseV1(b []byte) (ProxyHeader, int, error) {
	end := bytes.IndexByte(b[:min(len(b), maxV1)], '\n')
	if end < 0 {
		if len(b) >= maxV1 {
			return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v1 header: no line end within %d bytes", maxV1)
		}
		return ProxyHeader{}, 0, errNeedMore
	}
	line := b[:end+1]
	if end == 0 || b[end-1] != '\r' {
		return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v1 header %q: the line must end in CRLF", line)
	}
	f := bytes.Split(b[len(v1Prefix):end-1], []byte(" "))
	bad := func(why string) (ProxyHeader, int, error) {
		return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v1 header %q: %s", line, why)
	}
	h := ProxyHeader{Version: 1}
	switch string(f[0]) {
	case "UNKNOWN":
		// The balancer could not tell (a non-TCP client, say); the
		// rest of the line is to be ignored.
		return h, end + 1, nil
	case "TCP4", "TCP6":
	default:
		return bad("protocol must be TCP4, TCP6 or UNKNOWN")
	}
	if len(f) != 5 {
		return bad("want protocol, two addresses and two ports, separated by single spaces")
	}
	v6 := string(f[0]) == "TCP6"
	src, err1 := parseV1Addr(f[1], v6)
	dst, err2 := parseV1Addr(f[2], v6)
	if err1 != nil || err2 != nil {
		return bad("addresses do not match " + string(f[0]))
	}
	sp, err1 := parseV1Port(f[3])
	dp, err2 := parseV1Port(f[4])
	if err1 != nil || err2 != nil {
		return bad("ports must be decimal numbers from 0 to 65535")
	}
	h.Src, h.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return h, end + 1, nil
}

func parseV1Addr(b []byte, v6 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	switch {
	case err != nil:
		return a, err
	case a.Zone() != "", a.Is4() == v6:
		return a, errors.New("wrong family")
	}
	return a, nil
}

func parseV1Port(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, errors.New("bad port")
	}
	n, err := strconv.ParseUint(string(b), 10, 16)
	return uint16(n), err
}

func parseV2(b []byte) (ProxyHeader, int, error) {
	if len(b) < v2Fixed {
		return ProxyHeader{}, 0, errNeedMore
	}
	verCmd, fam := b[12], b[13]
	n := v2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 {
		return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v2 header: version %d, want 2", verCmd>>4)
	}
	if n > maxV2 {
		return ProxyHeader{}, 0, fmt.Errorf("PROXY v2 header of %d bytes is over the limit of %d", n, maxV2)
	}
	h := ProxyHeader{Version: 2}
	switch verCmd & 0x0f {
	case 0:
		h.Local = true
	case 1:
	default:
		return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v2 header: command %d, want LOCAL (0) or PROXY (1)", verCmd&0x0f)
	}
	if len(b) < n {
		return ProxyHeader{}, 0, errNeedMore
	}
	if h.Local {
		// The address block, if any, describes nothing we use.
		return h, n, nil
	}
	block := b[v2Fixed:n]
	switch fam {
	case 0x00:
		// AF_UNSPEC: the balancer does not know; use the connection's
		// own addresses.
		return h, n, nil
	case 0x11:
		if len(block) < 12 {
			return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v2 header: %d-byte address block too short for TCP over IPv4", len(block))
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), binary.BigEndian.Uint16(block[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), binary.BigEndian.Uint16(block[10:12]))
	case 0x21:
		if len(block) < 36 {
			return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v2 header: %d-byte address block too short for TCP over IPv6", len(block))
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), binary.BigEndian.Uint16(block[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), binary.BigEndian.Uint16(block[34:36]))
	default:
		return ProxyHeader{}, 0, fmt.Errorf("malformed PROXY v2 header: family/protocol %#02x is not TCP over IPv4 or IPv6", fam)
	}
	// TLVs after the addresses are skipped: nothing in them changes who
	// the client is.
	return h, n, nil
}
