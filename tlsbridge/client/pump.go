package client

// Client copy loop: rsync's pipes on one side, the TLS session on the other.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/batchconn"
)

// RsyncGreeting starts every rsync daemon's first line.
const RsyncGreeting = "@RSYNCD:"

// Pump copies in to c and c to out until the server ends the session.
//
// On EOF from in it sends close_notify and keeps reading: rsync's client
// closes its end when it is done sending, while the daemon may still be
// talking. It returns when the server's side ends, without waiting for in:
// rsync waits for its remote-shell helper to exit before it closes the pipe,
// so waiting here would deadlock.
//
// The first bytes from the server must be rsync's greeting, else the error
// names what answered instead. The check reads only what the first Read
// returns (a whole TLS record) plus, rarely, a few more bytes, so the stream
// is never held back; greetTimeout bounds the wait for that first byte.
//
// It returns nil only if the server closed with close_notify and every byte
// was delivered.
func Pump(c *Conn, in io.Reader, out io.Writer, greetTimeout time.Duration) error {
	if c.ko != nil {
		if handled, err := c.kernelPump(in, out, greetTimeout); handled {
			return err
		}
	}
	up := make(chan error, 1)
	if c.bc != nil {
		c.bc.SetReadAhead(pumpBuf)
	}
	go func() {
		err := sendHeld(c, in)
		if err == nil {
			err = c.CloseWrite()
		}
		up <- err
	}()

	down := func() error {
		if err := checkGreeting(greetSource{c, c, c.Peer}, out, greetTimeout); err != nil {
			return err
		}
		return receiveBatched(outWriter{out}, c)
	}()
	return c.verdict(down, up, c.raw.sawEOF.Load())
}

// verdict says how a session ended: down is how the server's direction
// ended, up the direction to the server if it has ended, sawFIN whether the
// TCP stream ended without close_notify.
func (c *Conn) verdict(down error, up <-chan error, sawFIN bool) error {
	var upErr error
	select {
	case upErr = <-up:
	default:
	}
	switch {
	case down == nil && sawFIN:
		return &HopError{Hop: "tls session with", Peer: c.Peer, Kind: FailTruncated,
			Err:  errors.New("server closed the connection without close_notify"),
			Hint: "the data may be cut short; the TLS server's log may say why"}
	case down != nil:
		var he *HopError
		if errors.As(down, &he) {
			return down
		}
		var wErr *writeError
		if errors.As(down, &wErr) {
			return fmt.Errorf("write to rsync: %w", wErr.err)
		}
		return &HopError{Hop: "tls session with", Peer: c.Peer, Kind: FailOther, Err: down}
	case upErr != nil:
		return &HopError{Hop: "tls session with", Peer: c.Peer, Kind: FailOther, Err: fmt.Errorf("send: %w", upErr)}
	}
	return nil
}

// pumpBuf is the most one read or write of the pump moves: eight full
// records.
const pumpBuf = 128 << 10

// sendHeld copies in to the server; what one read of in returns leaves in
// one syscall, its records held under crypto/tls until the write returns
// (crypto/tls would write each record on its own). A read of in returns
// whatever rsync has written so far, so nothing waits for more.
func sendHeld(c *Conn, in io.Reader) error {
	buf := make([]byte, pumpBuf)
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			if c.bc != nil {
				c.bc.Hold()
			}
			_, werr := c.Conn.Write(buf[:n])
			if c.bc != nil {
				if ferr := c.bc.Release(); werr == nil {
					werr = ferr
				}
			}
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// receiveBatched copies the server to out: each write carries the
// plaintext of every record already received, not one record each, and
// happens before the next read could wait on the socket.
func receiveBatched(out io.Writer, c *Conn) error {
	buf := make([]byte, pumpBuf)
	for {
		var n int
		var rerr error
		if c.bc != nil {
			n, rerr = batchconn.ReadBatch(c.Conn, c.bc, buf)
		} else {
			n, rerr = c.Conn.Read(buf)
		}
		if n > 0 {
			if _, err := out.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

type writeError struct{ err error }

func (w *writeError) Error() string { return w.err.Error() }

// outWriter marks errors writing to rsync, so that they are not blamed on
// the server.
type outWriter struct{ w io.Writer }

func (o outWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// greetSource is where checkGreeting reads the server's first bytes: the
// tls.Conn, or a kernel TLS socket's records.
type greetSource struct {
	io.Reader
	dl   interface{ SetReadDeadline(time.Time) error }
	peer string
}

func checkGreeting(c greetSource, out io.Writer, timeout time.Duration) error {
	if timeout > 0 {
		c.dl.SetReadDeadline(time.Now().Add(timeout))
	}
	var got []byte
	buf := make([]byte, 32*1024)
	for len(got) < len(RsyncGreeting) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if !bytes.HasPrefix([]byte(RsyncGreeting), got[:min(len(got), len(RsyncGreeting))]) {
			return notRsync(c.peer, got)
		}
		if err != nil {
			if len(got) >= len(RsyncGreeting) {
				break
			}
			he := &HopError{Hop: "rsync greeting from", Peer: c.peer, Kind: FailNotRsync,
				Hint: "the TLS service on this port does not lead to rsync --daemon; check the port and the server's log"}
			switch {
			case errors.Is(err, io.EOF):
				he.Err = errors.New("the TLS server closed the connection without an rsync greeting")
			case errors.Is(err, os.ErrDeadlineExceeded):
				he.Err = fmt.Errorf("no rsync greeting within %v", timeout)
			case alertHint(err) != "":
				// With TLS 1.3 the server judges our certificate after
				// the handshake has finished on our side, so its refusal
				// arrives with the first read.
				he.Kind, he.Err, he.Hint = FailTLSAlert, fmt.Errorf("server refused the session: %w", err), alertHint(err)
			default:
				he.Kind, he.Err, he.Hint = FailOther, err, ""
			}
			return he
		}
	}
	c.dl.SetReadDeadline(time.Time{})
	if _, err := out.Write(got); err != nil {
		return &writeError{err}
	}
	return nil
}

func notRsync(peer string, got []byte) error {
	if len(got) > 40 {
		got = got[:40]
	}
	return &HopError{Hop: "rsync greeting from", Peer: peer, Kind: FailNotRsync,
		Err:  fmt.Errorf("the TLS server is not an rsync daemon: it sent %q instead of %q", got, RsyncGreeting),
		Hint: "check the port; the TLS service must lead to rsync --daemon"}
}
