package tlsbridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tlsPair returns a connected TLS client and server over loopback TCP, and
// the server's raw socket.
func tlsPair(t *testing.T) (client *tls.Conn, server *tls.Conn, raw net.Conn) {
	t.Helper()
	dir := t.TempDir()
	p := selfSigned(t, dir, "s", time.Now().Add(time.Hour), "localhost")
	store, _, err := LoadCerts([]CertPair{p})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); ch <- c }()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw = <-ch
	server = tls.Server(raw, ServerTLSConfig(store, tls.VersionTLS12, nil))
	client = tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return client, server, raw
}

// TestBridgeHalfClose plays rsync on one end of a real pair: the client's
// close_notify must reach "rsync" as EOF while rsync keeps sending, and
// rsync's close must reach the client as a clean EOF after every byte.
func TestBridgeHalfClose(t *testing.T) {
	for _, kind := range []PairKind{PairTCP, PairUnix} {
		t.Run(kind.String(), func(t *testing.T) {
			client, server, raw := tlsPair(t)
			pair, err := NewPair(kind)
			if err != nil {
				t.Fatal(err)
			}
			rsyncEnd, err := net.FileConn(pair.Theirs)
			pair.Theirs.Close()
			if err != nil {
				t.Fatal(err)
			}
			up := make([]byte, 3<<20)
			down := make([]byte, 5<<20)
			rand.Read(up)
			rand.Read(down)

			// "rsync": read everything up to EOF, then answer, then close.
			rsyncGot := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(rsyncEnd)
				rsyncGot <- b
				rsyncEnd.Write(down)
				rsyncEnd.Close()
			}()
			done := make(chan Stats, 1)
			go func() { done <- Bridge(server, raw, pair.Ours.(halfCloser), time.Second, 0) }()

			if _, err := client.Write(up); err != nil {
				t.Fatal(err)
			}
			client.CloseWrite()
			got, err := io.ReadAll(client)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			if !bytes.Equal(got, down) {
				t.Fatalf("client got %d bytes, want %d identical", len(got), len(down))
			}
			if b := <-rsyncGot; !bytes.Equal(b, up) {
				t.Fatalf("rsync got %d bytes, want %d identical", len(b), len(up))
			}
			client.Close()
			select {
			case st := <-done:
				if st.Err != nil || st.In != int64(len(up)) || st.Out != int64(len(down)) {
					t.Fatalf("stats %+v", st)
				}
				if !bytes.Equal(st.Head, up[:headLen]) {
					t.Fatal("head not recorded")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("bridge did not finish")
			}
		})
	}
}

// TestBridgeClientVanishes: a client reset mid-transfer must end the
// bridge at once and close rsync's side, with the error reported.
func TestBridgeClientVanishes(t *testing.T) {
	client, server, raw := tlsPair(t)
	pair, err := NewPair(PairTCP)
	if err != nil {
		t.Fatal(err)
	}
	rsyncEnd, _ := net.FileConn(pair.Theirs)
	pair.Theirs.Close()
	rsyncEOF := make(chan struct{})
	go func() { io.Copy(io.Discard, rsyncEnd); close(rsyncEOF) }()
	done := make(chan Stats, 1)
	go func() { done <- Bridge(server, raw, pair.Ours.(halfCloser), time.Second, 0) }()
	client.Write([]byte("@RSYNCD: 32.0\n"))
	client.NetConn().(*net.TCPConn).SetLinger(0)
	client.NetConn().Close()
	select {
	case st := <-done:
		if st.Err == nil {
			t.Fatal("a reset client was not reported")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bridge hung after the client vanished")
	}
	select {
	case <-rsyncEOF:
	case <-time.After(5 * time.Second):
		t.Fatal("rsync's side was not closed")
	}
}

// TestBridgeClientStopsReading: rsync keeps sending to a client that never
// reads. Without a stall bound the write would block forever once the
// socket buffers are full; with one the bridge ends, names the cause, and
// closes rsync's side.
func TestBridgeClientStopsReading(t *testing.T) {
	client, server, raw := tlsPair(t)
	defer client.Close()
	pair, err := NewPair(PairTCP)
	if err != nil {
		t.Fatal(err)
	}
	rsyncEnd, _ := net.FileConn(pair.Theirs)
	pair.Theirs.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := rsyncEnd.Write(buf); err != nil {
				return
			}
		}
	}()
	const stall = 300 * time.Millisecond
	start := time.Now()
	done := make(chan Stats, 1)
	go func() { done <- Bridge(server, raw, pair.Ours.(halfCloser), time.Second, stall) }()
	select {
	case st := <-done:
		if !errors.Is(st.Err, ErrStalled) {
			t.Fatalf("bridge ended with %v, want a stall", st.Err)
		}
		if st.Out == 0 {
			t.Fatal("nothing was sent before the stall")
		}
		t.Logf("ended after %v: %v", time.Since(start).Round(time.Millisecond), st.Err)
	case <-time.After(20 * time.Second):
		t.Fatal("bridge hung on a client that stopped reading")
	}
}

// writeCounter counts the writes that reach the client's socket.
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

// TestBridgeRecordsOneWrite: the conn stack Server.handshake builds, then
// Bridge: the records of one bridge write (one read from rsync's end) leave
// in one syscall, not crypto/tls's one per 16 KiB record.
func TestBridgeRecordsOneWrite(t *testing.T) {
	dir := t.TempDir()
	p := selfSigned(t, dir, "s", time.Now().Add(time.Hour), "localhost")
	store, _, err := LoadCerts([]CertPair{p})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); ch <- c }()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sraw := <-ch
	raw := &writeCounter{Conn: sraw}
	client := tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	go client.Handshake()
	s := &Server{TLS: ServerTLSConfig(store, tls.VersionTLS12, nil), HandshakeTimeout: 5 * time.Second}
	tc, err := s.handshake(context.Background(), raw, time.Now().Add(5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := NewPair(PairTCP)
	if err != nil {
		t.Fatal(err)
	}
	rsyncEnd, err := net.FileConn(pair.Theirs)
	pair.Theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	const total = 8 << 20
	down := make([]byte, total)
	rand.Read(down)
	go func() {
		// Read what the client sends to the end, so that closing sends
		// a FIN, not a reset.
		drained := make(chan struct{})
		go func() { io.Copy(io.Discard, rsyncEnd); close(drained) }()
		rsyncEnd.Write(down)
		rsyncEnd.(halfCloser).CloseWrite()
		<-drained
		rsyncEnd.Close()
	}()
	got := make(chan []byte, 1)
	go func() {
		client.Write([]byte("@RSYNCD: 32.0\n"))
		client.CloseWrite()
		b, _ := io.ReadAll(client)
		got <- b
	}()
	before := raw.writes.Load()
	st := Bridge(tc, sraw, pair.Ours.(halfCloser), time.Second, 0)
	writes := raw.writes.Load() - before
	if st.Err != nil {
		t.Fatal(st.Err)
	}
	if b := <-got; !bytes.Equal(b, down) {
		t.Fatalf("client got %d bytes, not the %d sent", len(b), total)
	}
	// crypto/tls alone: one write per record, total/16 KiB = 512. A read
	// from the pair returns what rsync's end has written so far, so not
	// every write carries 128 KiB; a quarter of the records' count is a
	// generous bound.
	if writes > total/(16<<10)/4 {
		t.Errorf("%d MiB left in %d writes to the client (crypto/tls alone: %d)", total>>20, writes, total/(16<<10))
	}
	t.Logf("%d MiB in %d writes", total>>20, writes)
}
