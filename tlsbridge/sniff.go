package tlsbridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// Kind is what the first bytes of a connection look like.
type Kind int

const (
	KindTLS        Kind = iota // a TLS handshake record
	KindEmpty                  // closed before sending anything
	KindSilent                 // sent nothing before the deadline
	KindPlainRsync             // "@RSYNCD:" greeting: a plain rsync client on the TLS port
	KindHTTP                   // an HTTP request line
	KindSSH                    // an SSH banner
	KindSSLv2                  // an SSLv2-format ClientHello (SSLv2/SSLv3-era clients)
	KindProxy                  // a PROXY protocol v1 or v2 header, from a peer not trusted to send one
	KindOther                  // anything else
)

// proxyV1Prefix starts a PROXY protocol v1 line; proxyV2Sig (in
// proxyheader.go) starts a v2 header.
const proxyV1Prefix = "PROXY "

var httpMethods = []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "CONNECT ", "PATCH ", "TRACE ", "PRI * "}

// Classify says what a connection's first bytes are. more reports whether
// more bytes could change the answer: a prefix of "@RSYNCD:" or of an HTTP
// method is undecided until enough of it has arrived.
func Classify(b []byte) (k Kind, more bool) {
	if len(b) == 0 {
		return KindOther, true
	}
	if b[0] == 0x16 {
		return KindTLS, false
	}
	// SSLv2 record header: high bit set, then length, then msg type 1.
	if b[0]&0x80 != 0 {
		if len(b) < 3 {
			return KindOther, true
		}
		if b[2] == 0x01 {
			return KindSSLv2, false
		}
		return KindOther, false
	}
	candidates := append([]string{"@RSYNCD:", "SSH-", proxyV1Prefix, string(proxyV2Sig)}, httpMethods...)
	undecided := false
	for _, c := range candidates {
		n := min(len(b), len(c))
		if string(b[:n]) != c[:n] {
			continue
		}
		if n < len(c) {
			undecided = true
			continue
		}
		switch {
		case c == "@RSYNCD:":
			return KindPlainRsync, false
		case c == "SSH-":
			return KindSSH, false
		case c == proxyV1Prefix || c == string(proxyV2Sig):
			return KindProxy, false
		default:
			return KindHTTP, false
		}
	}
	return KindOther, undecided
}

// peekedConn replays the bytes read while sniffing, then reads the
// connection directly, so the TLS stack sees the stream unchanged.
type peekedConn struct {
	net.Conn
	buf []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// sniff reads the first bytes under deadline and classifies them.
func sniff(c net.Conn, deadline time.Time) (*peekedConn, Kind, error) {
	c.SetReadDeadline(deadline)
	buf := make([]byte, 0, 512)
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		k, more := Classify(buf)
		if len(buf) > 0 && (!more || len(buf) >= 16) {
			return &peekedConn{Conn: c, buf: buf}, k, nil
		}
		if err != nil {
			pc := &peekedConn{Conn: c, buf: buf}
			switch {
			case len(buf) > 0:
				return pc, k, nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return pc, KindSilent, nil
			case errors.Is(err, io.EOF):
				return pc, KindEmpty, nil
			}
			return pc, KindOther, err
		}
	}
}

const httpAnswer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 56\r\n\r\nthis port speaks rsync over TLS (rsync-ssl), not HTTP.\r\n"

// describeFirstBytes shows the first bytes of an unrecognised stream.
func describeFirstBytes(b []byte) string {
	if len(b) > 8 {
		b = b[:8]
	}
	return fmt.Sprintf("% x", b)
}
