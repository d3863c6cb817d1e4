package ktls

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"sync"
)

// SecretLog receives crypto/tls's key log for one connection (a
// per-connection tls.Config.KeyLogWriter) and keeps the two application
// traffic secrets; nothing is written anywhere.
type SecretLog struct {
	mu             sync.Mutex
	client, server []byte
}

func (l *SecretLog) Write(p []byte) (int, error) {
	// Parsed in place: a string conversion would leave a copy of the
	// secret that nothing can wipe.
	f := bytes.Fields(p)
	if len(f) == 3 {
		var dst *[]byte
		switch string(f[0]) {
		case "CLIENT_TRAFFIC_SECRET_0":
			dst = &l.client
		case "SERVER_TRAFFIC_SECRET_0":
			dst = &l.server
		}
		if dst != nil {
			s := make([]byte, hex.DecodedLen(len(f[2])))
			if _, err := hex.Decode(s, f[2]); err == nil {
				l.mu.Lock()
				clear(*dst)
				*dst = s
				l.mu.Unlock()
			} else {
				clear(s)
			}
		}
	}
	// The line is crypto/tls's own one-off allocation for this call
	// (writeKeyLog formats it afresh and drops it), and it holds a
	// traffic secret in hex: wipe it rather than leave it to the
	// garbage collector.
	clear(p)
	return len(p), nil
}

// Secrets returns the client and the server application traffic secrets
// (nil until the handshake logged them); Wipe clears them.
func (l *SecretLog) Secrets() (client, server []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client, l.server
}

func (l *SecretLog) Wipe() {
	l.mu.Lock()
	clear(l.client)
	clear(l.server)
	l.mu.Unlock()
}

// RecordReader hands crypto/tls at most the rest of the current TLS record.
// crypto/tls reads its input in large chunks, so the peer's first
// application record (sent right behind its Finished) could end up in its
// buffer, where the kernel would never see it and the session would lose
// its first bytes. Bounded like this, everything after the Finished stays
// in the socket for the kernel to decrypt.
type RecordReader struct {
	r    io.Reader
	off  bool // Stop was called: reads pass straight through
	hdr  [5]byte
	hn   int // header bytes read so far
	left int // body bytes of the current record still unread
}

func (rr *RecordReader) Read(p []byte) (int, error) {
	if rr.off {
		return rr.r.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if rr.left > 0 {
		n, err := rr.r.Read(p[:min(len(p), rr.left)])
		rr.left -= n
		return n, err
	}
	n, err := rr.r.Read(p[:min(len(p), len(rr.hdr)-rr.hn)])
	copy(rr.hdr[rr.hn:], p[:n])
	rr.hn += n
	if rr.hn == len(rr.hdr) {
		rr.left = int(binary.BigEndian.Uint16(rr.hdr[3:5]))
		rr.hn = 0
	}
	return n, err
}

// AtBoundary reports whether everything read so far ends on a record
// boundary.
func (rr *RecordReader) AtBoundary() bool { return rr.hn == 0 && rr.left == 0 }

// ReaderConn reads through R and does everything else on Conn: how
// crypto/tls is made to read its handshake through a RecordReader.
type ReaderConn struct {
	net.Conn
	R io.Reader
}

func (c ReaderConn) Read(p []byte) (int, error) { return c.R.Read(p) }

// NewRecordReader reads r a record at a time.
func NewRecordReader(r io.Reader) *RecordReader { return &RecordReader{r: r} }

// Stop lets reads through unbounded from now on: the session stays in
// user space, where reading a record at a time would only cost syscalls.
// Call it between reads, at a record boundary.
func (rr *RecordReader) Stop() { rr.off = true }
