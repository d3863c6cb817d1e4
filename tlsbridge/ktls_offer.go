package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"sync"
)

// secretLog receives crypto/tls's key log for one connection (a
// per-connection tls.Config.KeyLogWriter) and keeps the two application
// traffic secrets; nothing is written anywhere.
type secretLog struct {
	mu             sync.Mutex
	client, server []byte
}

func (l *secretLog) Write(p []byte) (int, error) {
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

func (l *secretLog) secrets() (client, server []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client, l.server
}

func (l *secretLog) wipe() {
	l.mu.Lock()
	clear(l.client)
	clear(l.server)
	l.mu.Unlock()
}

// recordReader hands crypto/tls at most the rest of the current TLS record.
// crypto/tls reads its input in large chunks, so the client's first
// application record (rsync's greeting, sent right behind the Finished)
// could end up in its buffer, where the kernel would never see it and the
// session would lose its first bytes. Bounded like this, everything after
// the Finished stays in the socket for the kernel to decrypt.
type recordReader struct {
	r    io.Reader
	hdr  [5]byte
	hn   int // header bytes read so far
	left int // body bytes of the current record still unread
}

func (rr *recordReader) Read(p []byte) (int, error) {
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

// atBoundary reports whether everything read so far ends on a record
// boundary.
func (rr *recordReader) atBoundary() bool { return rr.hn == 0 && rr.left == 0 }

// errNoSecrets is a handshake whose key log lacked a secret, which would
// be a crypto/tls change we rely on not happening.
var errNoSecrets = errors.New("crypto/tls logged no application traffic secrets")

// kernelOffer is what the handshake keeps for a session that may go to the
// kernel: the traffic secrets crypto/tls logs, and the record-bounded reader
// it read the handshake through. nil when the data path is the bridge.
type kernelOffer struct {
	log *secretLog
	rr  *recordReader
	pc  *peekedConn
}

// config is tls for one connection that may go to the kernel: the same
// policy with the key log attached. Session tickets stay off (the server's
// first application record must have sequence 0, and a ticket would take
// it); ServerTLSConfig already turns them off.
func (ko *kernelOffer) config(base *tls.Config) *tls.Config {
	if ko == nil {
		return base
	}
	cfg := base.Clone()
	cfg.SessionTicketsDisabled = true
	ko.log = &secretLog{}
	cfg.KeyLogWriter = ko.log
	return cfg
}

// wipe clears the secrets, whichever way the session went.
func (ko *kernelOffer) wipe() {
	if ko != nil && ko.log != nil {
		ko.log.wipe()
	}
}

// input is what crypto/tls reads the handshake from.
func (ko *kernelOffer) input(pc *peekedConn) net.Conn {
	if ko == nil {
		return pc
	}
	ko.pc = pc
	ko.rr = &recordReader{r: pc}
	return readerConn{pc, ko.rr}
}

// readerConn reads through r and does everything else on Conn.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// splitRecord reports whether crypto/tls stopped inside a record, so that
// client bytes it read would be lost to the kernel.
func (ko *kernelOffer) splitRecord() bool {
	return !ko.rr.atBoundary() || len(ko.pc.buf) > 0
}
