package tlsbridge

import (
	"encoding/binary"
	"io"
	"net"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// recordTap watches the bytes crypto/tls reads during the handshake and
// keeps only the header and first two body bytes of the record it read
// last. When the handshake fails, that is the record that failed, and
// crypto/tls does not always say what it was: an OpenSSL client that
// rejects our certificate under TLS 1.3 sends its alert unencrypted after
// our ServerHello, which crypto/tls reports as "bad record MAC"; testssl.sh
// ends handshakes with an alert record of legacy version 0x0301, which it
// reports as a RecordHeaderError.
type recordTap struct {
	r    io.Reader
	hdr  [5]byte
	hn   int // header bytes seen of the last record
	body [2]byte
	bn   int // body bytes kept (at most 2)
	left int // body bytes of the last record not yet seen
	// records counts the records whose header was seen.
	records int
}

func (t *recordTap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.observe(p[:n])
	return n, err
}

func (t *recordTap) observe(b []byte) {
	for len(b) > 0 {
		if t.hn == len(t.hdr) && t.left == 0 {
			t.hn, t.bn = 0, 0 // the last record is complete: a new one starts
		}
		if t.hn < len(t.hdr) {
			k := copy(t.hdr[t.hn:], b)
			t.hn += k
			b = b[k:]
			if t.hn == len(t.hdr) {
				t.left = int(binary.BigEndian.Uint16(t.hdr[3:5]))
				t.records++
			}
			continue
		}
		k := min(len(b), t.left)
		if t.bn < len(t.body) {
			t.bn += copy(t.body[t.bn:], b[:k])
		}
		t.left -= k
		b = b[k:]
	}
}

// plainAlertHeader reports whether the last record's header is that of an
// unencrypted alert: type 21, two bytes long (an encrypted one is longer).
func (t *recordTap) plainAlertHeader() bool {
	return t.hn == len(t.hdr) && t.hdr[0] == 0x15 && binary.BigEndian.Uint16(t.hdr[3:5]) == 2
}

// plainAlert returns the alert in the last record, when it is an
// unencrypted alert record read in full.
func (t *recordTap) plainAlert() (tlserr.Alert, bool) {
	if t == nil || !t.plainAlertHeader() || t.bn < 2 {
		return 0, false
	}
	return tlserr.Alert(t.body[1]), true
}

// finishAlert reads the rest of an unencrypted alert record whose header
// crypto/tls read and refused (it reads the header alone when the record
// reader bounds its reads): two bytes at most, in the same segment as the
// header, so a short wait is enough.
func (t *recordTap) finishAlert(c net.Conn) {
	if t == nil || !t.plainAlertHeader() || t.left == 0 {
		return
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [2]byte
	for t.left > 0 {
		n, err := t.Read(b[:t.left])
		if n == 0 || err != nil {
			return
		}
	}
}

// firstRecord reports whether crypto/tls failed on the client's first
// record, its hello.
func (t *recordTap) firstRecord() bool { return t == nil || t.records <= 1 }
