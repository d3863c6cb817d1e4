// Package batchconn is the net.Conn that sits under crypto/tls's tls.Conn on
// both ends of a bulk transfer, so that the records of one write leave in one
// syscall and the records already received are read in one.
//
// crypto/tls writes every record (at most 16 KiB) with its own write() on
// the conn under it, and tls.Conn.Read returns one record's plaintext at a
// time: a GiB is some 65,000 syscalls each way. Conn batches both without
// ever holding bytes that the peer may be waiting for.
package batchconn

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxPlaintext is the most plaintext one TLS record carries.
const MaxPlaintext = 16 << 10

// maxHeld bounds what a hold keeps before it writes anyway: one 128 KiB
// write's records with their headers and tags, and then some.
const maxHeld = 160 << 10

// Conn passes everything to the conn it wraps, except that
//   - between Hold and Release, writes are kept and sent with one write
//     when Release is called (or when maxHeld is reached);
//   - with SetReadAhead, reads fetch as much as the socket has into a
//     buffer, so that records already received cost no further syscall;
//   - inside ReadBatch's extra reads, a read that would have to wait for
//     the socket fails with ErrWouldBlock instead (crypto/tls treats that as
//     temporary, like a deadline, and keeps its state).
//
// Held bytes are never left waiting on a read: Read sends them first, unless
// a writer is inside a hold right now, and that writer sends them when its
// Release comes, which depends on no read.
type Conn struct {
	net.Conn

	wmu     sync.Mutex // orders writes to Conn; guards wbuf
	held    atomic.Int32
	pending atomic.Bool // wbuf has bytes
	wbuf    []byte

	// Read side: used only by the one reader crypto/tls lets in at a time.
	rbuf    []byte
	r, w    int
	rerr    error
	noBlock bool
}

// New wraps c.
func New(c net.Conn) *Conn { return &Conn{Conn: c} }

// Hold starts keeping writes; each Hold needs its Release.
func (c *Conn) Hold() { c.held.Add(1) }

// Release ends a Hold and sends what was kept, in one write bounded by the
// conn's write deadline.
func (c *Conn) Release() error {
	c.held.Add(-1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// Flush sends whatever is kept now.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	c.pending.Store(false)
	_, err := c.Conn.Write(c.wbuf)
	// After a failed write the stream is broken either way (crypto/tls
	// makes a write error permanent): nothing kept is worth retrying.
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.held.Load() > 0 && len(p) <= maxHeld {
		if len(c.wbuf)+len(p) > maxHeld {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if c.wbuf == nil {
			c.wbuf = make([]byte, 0, maxHeld)
		}
		c.wbuf = append(c.wbuf, p...)
		c.pending.Store(true)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline sends what is held first, under the deadline in force
// when it was written: crypto/tls's Close sends close_notify and then sets
// a deadline of now, which would otherwise fail the release. A writer
// blocked in a write keeps the lock, and the new deadline is what ends it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.flushIfIdle()
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetWriteDeadline for both directions.
func (c *Conn) SetDeadline(t time.Time) error {
	c.flushIfIdle()
	return c.Conn.SetDeadline(t)
}

// flushIfIdle sends what is held unless a write is under way (whose
// writer sends it, see Conn).
func (c *Conn) flushIfIdle() error {
	if c.pending.Load() && c.wmu.TryLock() {
		defer c.wmu.Unlock()
		return c.flushLocked()
	}
	return nil
}

// SetReadAhead makes reads fetch up to n bytes at a time (0: off). Call it
// from the reading side, between reads.
func (c *Conn) SetReadAhead(n int) {
	if n > len(c.rbuf) {
		nb := make([]byte, n)
		c.w = copy(nb, c.rbuf[c.r:c.w])
		c.r, c.rbuf = 0, nb
	}
}

// Buffered is how many received bytes wait in the read-ahead buffer.
func (c *Conn) Buffered() int { return c.w - c.r }

// ReadBatch reads from tc, a tls.Conn over c, into p: it waits for the
// first plaintext like any Read, then adds what can be had without waiting
// again (records already in crypto/tls's buffer or in c's) while p has room
// for a whole record. The caller writes what it got before it reads again,
// so received bytes never wait behind a blocked read, and several records
// leave in one write instead of one write each.
func ReadBatch(tc io.Reader, c *Conn, p []byte) (int, error) {
	n, err := tc.Read(p)
	for err == nil && n > 0 && len(p)-n >= MaxPlaintext {
		c.noBlock = true
		m, rerr := tc.Read(p[n:])
		c.noBlock = false
		n += m
		if IsWouldBlock(rerr) || m == 0 {
			break
		}
		err = rerr
	}
	return n, err
}

func (c *Conn) Read(p []byte) (int, error) {
	if err := c.flushIfIdle(); err != nil {
		return 0, err
	}
	if c.r == c.w {
		if c.rerr != nil {
			err := c.rerr
			c.rerr = nil
			return 0, err
		}
		if c.noBlock {
			return 0, ErrWouldBlock
		}
		if len(c.rbuf) == 0 || len(p) >= len(c.rbuf) {
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.r, c.w = 0, n
		if n == 0 {
			return 0, err
		}
		// The bytes first, the error (a deadline, EOF) with the next read.
		c.rerr = err
	}
	n := copy(p, c.rbuf[c.r:c.w])
	c.r += n
	return n, nil
}

// ErrWouldBlock is what a read inside NoBlock returns rather than wait. It
// is a net.Error that is a timeout and temporary, so crypto/tls keeps the
// session usable, as it does after a read deadline.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// IsWouldBlock reports whether err is ErrWouldBlock.
func IsWouldBlock(err error) bool { return errors.Is(err, ErrWouldBlock) }
