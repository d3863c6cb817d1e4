package batchconn

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// session is a TLS 1.3 server over a Conn over a counted loopback socket,
// and its client.
type session struct {
	srv   *tls.Conn
	bc    *Conn
	count *countConn
	cli   *tls.Conn
}

func newSession(t *testing.T) *session {
	t.Helper()
	ca := testpki.NewCA(t, "", "unit CA", nil)
	_, cert := ca.ServerLeaf(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := &session{count: &countConn{Conn: <-acc}}
	if s.count.Conn == nil {
		t.Fatal("accept failed")
	}
	s.bc = New(s.count)
	s.srv = tls.Server(s.bc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	s.cli = tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	t.Cleanup(func() { s.srv.Close(); s.cli.Close() })
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Handshake() }()
	if err := s.cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	s.srv.SetDeadline(time.Now().Add(10 * time.Second))
	s.cli.SetDeadline(time.Now().Add(10 * time.Second))
	return s
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The records of one held tls.Conn.Write leave in one write, sent when the
// hold is released; without a hold, crypto/tls's one write per record.
func TestHoldOneWritePerTLSWrite(t *testing.T) {
	s := newSession(t)
	data := random(8 * MaxPlaintext)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(s.cli); got <- b }()

	s.srv.Write(data[:MaxPlaintext]) // past Go's small first records
	before := s.count.writes.Load()
	s.bc.Hold()
	if _, err := s.srv.Write(data[MaxPlaintext:]); err != nil {
		t.Fatal(err)
	}
	if n := s.count.writes.Load() - before; n != 0 {
		t.Fatalf("%d writes reached the socket before the release", n)
	}
	if err := s.bc.Release(); err != nil {
		t.Fatal(err)
	}
	if n := s.count.writes.Load() - before; n != 1 {
		t.Errorf("7 records took %d writes, want 1", n)
	}
	before = s.count.writes.Load()
	s.srv.Write(data[:4*MaxPlaintext])
	if n := s.count.writes.Load() - before; n != 4 {
		t.Errorf("without a hold 4 records took %d writes, want crypto/tls's 4", n)
	}
	s.srv.CloseWrite()
	if b := <-got; !bytes.Equal(b, append(append([]byte(nil), data...), data[:4*MaxPlaintext]...)) {
		t.Errorf("client got %d bytes, not the %d sent", len(b), len(data)+4*MaxPlaintext)
	}
}

// close_notify written inside a hold leaves, after the data, when the hold
// is released; written after it, it leaves at once: either way the peer
// sees every byte and a clean end.
func TestCloseNotifyFlushed(t *testing.T) {
	for _, inside := range []bool{false, true} {
		s := newSession(t)
		data := random(3*MaxPlaintext + 5)
		got := make(chan error, 1)
		go func() {
			b, err := io.ReadAll(s.cli) // nil only on close_notify
			if err == nil && !bytes.Equal(b, data) {
				err = errors.New("wrong bytes")
			}
			got <- err
		}()
		s.bc.Hold()
		s.srv.Write(data)
		if inside {
			s.srv.CloseWrite()
		}
		if err := s.bc.Release(); err != nil {
			t.Fatal(err)
		}
		if !inside {
			s.srv.CloseWrite()
		}
		if err := <-got; err != nil {
			t.Errorf("close_notify inside the hold %v: client read: %v", inside, err)
		}
	}
}

// Bytes held for a writer that is waiting its turn (here: a hold that is
// never released, the worst case) must not wait on a read: the peer only
// answers once it has them, so holding them across the read would hang.
func TestNoBytesHeldAcrossRead(t *testing.T) {
	s := newSession(t)
	go func() {
		b := make([]byte, 5)
		if _, err := io.ReadFull(s.cli, b); err == nil {
			s.cli.Write([]byte("pong"))
		}
	}()
	s.bc.Hold()
	s.srv.Write([]byte("ping!"))
	s.srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(s.srv, b); err != nil {
		t.Fatalf("no answer: the held bytes never left before the read: %v", err)
	}
}

// The write deadline bounds a release's write: a peer that reads nothing
// ends it with a timeout, not a hang.
func TestDeadlineBoundsRelease(t *testing.T) {
	s := newSession(t)
	buf := random(128 << 10)
	start := time.Now()
	for i := 0; i < 1024; i++ { // 128 MiB, far beyond the socket buffers
		s.srv.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		s.bc.Hold()
		_, werr := s.srv.Write(buf)
		err := s.bc.Release()
		if werr != nil {
			err = werr
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("got %v, want a deadline error", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			return
		}
	}
	t.Fatal("128 MiB written to a peer that reads nothing")
}

// ReadBatch returns the records already received in one call, and does not
// wait for more once it has some.
func TestReadBatch(t *testing.T) {
	s := newSession(t)
	// Three records: they fit the socket before the receiver's window
	// has grown.
	data := random(3 * MaxPlaintext)
	go func() {
		s.cli.Write(data)
		s.cli.Write([]byte("tail"))
	}()
	time.Sleep(200 * time.Millisecond) // all of it in the socket
	s.bc.SetReadAhead(128 << 10)
	buf := make([]byte, 128<<10)
	n, err := ReadBatch(s.srv, s.bc, buf)
	if err != nil {
		t.Fatal(err)
	}
	if n < len(data) {
		t.Errorf("one ReadBatch returned %d bytes of the %d received", n, len(data)+4)
	}
	got := append([]byte(nil), buf[:n]...)
	for len(got) < len(data)+4 {
		n, err := ReadBatch(s.srv, s.bc, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, append(data, "tail"...)) {
		t.Error("bytes differ")
	}
	// One small record and nothing after it: returned at once.
	go s.cli.Write([]byte("one"))
	s.srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err = ReadBatch(s.srv, s.bc, buf)
	if err != nil || string(buf[:n]) != "one" {
		t.Errorf("got %q, %v; want \"one\" without waiting for more", buf[:n], err)
	}
}
