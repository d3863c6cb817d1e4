package tlsbridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// RefusedError is a connection turned away after its handshake (a limit
// was reached); Why says which.
type RefusedError struct {
	Peer string
	Why  error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused %s after the tls handshake: %v; answered with @ERROR", e.Peer, e.Why)
}

func (e *RefusedError) Unwrap() error { return e.Why }

// ModuleTimeoutError is a client that completed the handshake and then did
// not name a module (or ask for the list) in time: it held a connection slot
// and an rsync while saying nothing.
type ModuleTimeoutError struct {
	Peer, Identity string
	After          time.Duration
}

func (e *ModuleTimeoutError) Error() string {
	id := e.Identity
	if id == "" {
		id = "-"
	}
	return fmt.Sprintf("module line from %s (client=%s): none within %v of the handshake; connection ended and rsync stopped", e.Peer, id, e.After)
}

// Intake is what the caller knows of a connection before its handshake.
type Intake struct {
	// AcceptedAt is when the connection was accepted: the handshake
	// deadline counts from here, whatever came before ServeAdmitted.
	AcceptedAt time.Time
	// Admit runs once the handshake is complete, before rsync starts. It
	// returns the release of what the session holds (nil for nothing), or
	// an error to refuse it in rsync's words: the error's Answer() (or its
	// text) is the @ERROR line, the error itself the log's reason. A
	// refusal with a nil release is cut short: the refusals under way are
	// at their cap.
	Admit func(ctx context.Context) (release func(), err error)

	cutShort bool
}

// ServeAdmitted is ServeConn with the caller's intake: the handshake bound
// from in.AcceptedAt, and in.Admit between the handshake and rsync.
func (s *Server) ServeAdmitted(ctx context.Context, raw net.Conn, in Intake) Result {
	return s.serve(ctx, raw, "", nil, in)
}

// refusalAnswer is what a refused client is told after "@ERROR: ".
func refusalAnswer(err error) string {
	var a interface{ Answer() string }
	if errors.As(err, &a) {
		return a.Answer()
	}
	return err.Error()
}

// Bounds of a refusal, from its start: rsync clients send their greeting at
// once and their module line right after our greeting.
const (
	refusalBound    = 5 * time.Second
	refusalModule   = 2 * time.Second
	refusalCutShort = 500 * time.Millisecond
	refusalWrite    = time.Second
)

// answerRefusal reads the client's greeting (rsync clients send theirs
// first thing), answers in its protocol with the @ERROR line, and closes
// with close_notify, so that the client prints the line as rsyncd's own.
//
// Like rsyncd, it sends the @ERROR line only after the client's module line
// (bounded: a client that sends none gets it anyway). A client still writing
// that line when the connection ends fails on its own write first: through
// rsync-ssl, openssl has exited on the close, rsync's write to it breaks
// ("Broken pipe", exit 12), and the @ERROR line is never read. Everything
// is over within refusalBound (plus a second per write and lingerClose's
// 2 s); cutShort (too many
// refusals at once) waits for neither line longer than refusalCutShort and
// does not linger.
func answerRefusal(tc *tls.Conn, raw net.Conn, answer string, cutShort bool) {
	end := time.Now().Add(refusalBound)
	read := refusalModule
	if cutShort {
		end, read = time.Now().Add(refusalCutShort), refusalCutShort
	}
	// Reads share the bound; each write (two short lines, which the
	// kernel takes at once unless the client stopped reading) gets a
	// second of its own.
	raw.SetReadDeadline(end)
	br := bufio.NewReaderSize(tc, 512)
	line, _ := br.ReadSlice('\n')
	greeting, errLine, _ := bytes.Cut(rsyncd.ErrorAnswer(line, answer), []byte("\n"))
	raw.SetWriteDeadline(time.Now().Add(refusalWrite))
	if _, err := tc.Write(append(greeting, '\n')); err == nil {
		raw.SetReadDeadline(earliest(time.Now().Add(read), end))
		br.ReadSlice('\n')
		raw.SetWriteDeadline(time.Now().Add(refusalWrite))
		tc.Write(errLine)
	}
	tc.CloseWrite()
	if cutShort {
		raw.Close()
		return
	}
	lingerClose(raw)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// moduleWatch passes the client's stream through to the bridge and ends the
// connection if the client has not finished its module line (the second
// line it sends, after its greeting) within the bound. Closing the raw
// socket makes the bridge abort both ways, and rsync, reading EOF where it
// waits for the module name, exits.
type moduleWatch struct {
	halfCloser
	lines   int // newlines seen; only read by the bridge's reading goroutine
	done    atomic.Bool
	timeout atomic.Bool
	timer   *time.Timer
}

func watchModule(c halfCloser, raw net.Conn, d time.Duration) *moduleWatch {
	m := &moduleWatch{halfCloser: c}
	m.timer = time.AfterFunc(d, func() {
		if !m.done.Load() {
			m.timeout.Store(true)
			raw.Close()
		}
	})
	return m
}

func (m *moduleWatch) Read(p []byte) (int, error) {
	n, err := m.halfCloser.Read(p)
	if !m.done.Load() {
		for _, b := range p[:n] {
			if b == '\n' {
				m.lines++
			}
		}
		if m.lines >= 2 {
			m.done.Store(true)
			m.timer.Stop()
		}
	}
	return n, err
}

// stop ends the watch once the bridge is done; nil-safe.
func (m *moduleWatch) stop() {
	if m != nil {
		m.done.Store(true)
		m.timer.Stop()
	}
}

// expired reports whether the watch ended the connection; nil-safe.
func (m *moduleWatch) expired() bool { return m != nil && m.timeout.Load() }
