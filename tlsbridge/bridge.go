package tlsbridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// copyBuf is large enough that one read from the pair becomes one TLS
// write of several full records (sent in one syscall by heldWriter) under
// bulk transfer. A read returns what the pair has: the bridge never waits
// for more once rsync has written something.
const copyBuf = 128 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// halfCloser is what both ends of the bridge can do: *tls.Conn sends
// close_notify, *net.TCPConn and *net.UnixConn shut down their write side.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// Stats counts application bytes each way.
type Stats struct {
	In, Out int64 // client→rsync, rsync→client
	// Err is the first error that ended a direction, with the direction
	// named; nil when both ended cleanly. Errors caused by our own teardown
	// after that first one are not reported.
	Err error
	// Head is the first bytes the client sent: its greeting and the module
	// it asked for.
	Head []byte
}

// headLen is how much of the client's stream Bridge keeps for the log: the
// rsync greeting and the module line fit easily.
const headLen = 256

// Bridge copies client↔rsync until both directions are done.
//
// A clean EOF in one direction is passed on as a half-close: the client's
// close_notify (or FIN) becomes a shutdown(SHUT_WR) on the pair, so rsync
// reads EOF; rsync closing its socket becomes close_notify and a FIN to the
// client. Once rsync is done sending, nothing the client still sends can
// matter, so the client direction then gets linger to finish before the
// connection is torn down. An error in either direction (a reset, a bad
// record, a write to a dead peer) aborts both at once: rsync reads EOF and
// exits, the client sees the connection close.
//
// stall, when positive, bounds each write: a peer that stops reading (a
// client suspended or behind a dead link, an rsync stuck on its disk) fills
// the socket buffers, and nothing else would ever end the blocked write.
// Silence is not a stall: rsync may think for a long time between writes,
// and that is bounded by rsync's own "timeout" setting, not here.
func Bridge(client halfCloser, raw net.Conn, rs halfCloser, linger, stall time.Duration) Stats {
	var (
		st    Stats
		once  sync.Once
		errMu sync.Mutex
		done  bool // rsync finished sending and the client was told
	)
	abort := func(err error) {
		errMu.Lock()
		if st.Err == nil && err != nil && !(done && tlserr.IsTimeout(err)) {
			st.Err = err
		}
		errMu.Unlock()
		once.Do(func() {
			// Unblock both copies; Close on the raw socket also
			// wakes a tls.Conn blocked in Read or Write.
			raw.Close()
			rs.Close()
		})
	}
	head := &headRecorder{r: client}
	bc := batchUnder(client)
	if bc != nil {
		bc.SetReadAhead(bridgeReadAhead)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		st.In, err = pump(rsyncWriter{stallWriter{rs, stall, "rsync"}}, batchReader{head, bc})
		if err != nil {
			abort(fmt.Errorf("client to rsync: %w", err))
			return
		}
		rs.CloseWrite()
	}()

	var err error
	st.Out, err = pump(stallWriter{heldWriter{client, bc}, stall, "client"}, resetIsEOF{rs})
	if err != nil {
		abort(fmt.Errorf("rsync to client: %w", err))
	} else {
		// close_notify, then FIN: the client's rsync sees a clean end.
		errMu.Lock()
		done = true
		errMu.Unlock()
		client.CloseWrite()
		if tc, ok := raw.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		client.SetReadDeadline(time.Now().Add(linger))
	}
	wg.Wait()
	abort(nil)
	client.Close()
	st.Head = head.buf
	return st
}

// headRecorder keeps the first headLen bytes read through it.
type headRecorder struct {
	r   io.Reader
	buf []byte
}

func (h *headRecorder) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if len(h.buf) < headLen && n > 0 {
		h.buf = append(h.buf, p[:min(n, headLen-len(h.buf))]...)
	}
	return n, err
}

// resetIsEOF reads rsync's end of the pair. rsync exiting with our bytes
// still unread makes the kernel reset the pair (AF_UNIX and TCP alike); that
// is rsync's normal end, not a transport failure, and rsync's exit status
// says how it went.
type resetIsEOF struct{ r io.Reader }

func (r resetIsEOF) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if errors.Is(err, syscall.ECONNRESET) {
		err = io.EOF
	}
	return n, err
}

// pump copies src to dst with a pooled buffer. Our own loop rather than
// io.Copy: tls.Conn has no ReadFrom, and net's fallbacks would copy in
// 32 KiB pieces, so each TLS write would carry two records, not eight.
func pump(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		r, rerr := src.Read(buf)
		if r > 0 {
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return n, nil
			}
			return n, rerr
		}
	}
}

// ErrStalled is the cause when a write made no progress within the stall
// bound.
var ErrStalled = errors.New("stopped reading")

// stallWriter puts a fresh write deadline before every write, so that a
// write which makes no progress for d fails, while a long transfer that
// keeps moving never does.
type stallWriter struct {
	c    net.Conn
	d    time.Duration
	peer string
}

func (w stallWriter) Write(p []byte) (int, error) {
	if w.d <= 0 {
		return w.c.Write(p)
	}
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	n, err := w.c.Write(p)
	if err != nil && tlserr.IsTimeout(err) {
		err = fmt.Errorf("%s %w: no progress writing to it for %v", w.peer, ErrStalled, w.d)
	}
	return n, err
}

// ErrRsyncClosed marks a write to rsync that failed because rsync had
// already closed its end (exited): a consequence of rsync's end, which its
// exit status explains, not a fault of the bridge.
var ErrRsyncClosed = errors.New("rsync closed its end")

// rsyncWriter is the client-to-rsync direction's destination.
type rsyncWriter struct{ stallWriter }

func (w rsyncWriter) Write(p []byte) (int, error) {
	n, err := w.stallWriter.Write(p)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		err = fmt.Errorf("%w: %w", ErrRsyncClosed, err)
	}
	return n, err
}

// KeepAlive makes the kernel probe an idle client so that a peer gone
// without a FIN or reset (a cut link, a crashed host) is noticed within
// about d even while the bridge is only reading. A client that is merely
// silent still answers the probes from its kernel and is left alone.
func KeepAlive(c net.Conn, d time.Duration) {
	kc, ok := c.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	})
	if !ok || d <= 0 {
		return
	}
	idle := min(d/2, time.Minute)
	interval := max(min(d/8, 15*time.Second), time.Second)
	kc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: max(idle, time.Second), Interval: interval, Count: 4})
}
