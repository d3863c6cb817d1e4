package activation

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lf, _ := l.(*net.TCPListener).File()
	defer lf.Close()
	if k, err := classify(int(lf.Fd())); k != sockListening || err != nil {
		t.Errorf("listener: %v %v", k, err)
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cf, _ := c.(*net.TCPConn).File()
	defer cf.Close()
	if k, err := classify(int(cf.Fd())); k != sockConnected || err != nil {
		t.Errorf("connection: %v %v", k, err)
	}
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if k, err := classify(fds[0]); k != sockNone || err == nil || !strings.Contains(err.Error(), "not a TCP one") {
		t.Errorf("unix socket: %v %v", k, err)
	}
	p := make([]int, 2)
	unix.Pipe(p)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if k, err := classify(p[0]); k != sockNone || err != nil {
		t.Errorf("pipe: %v %v", k, err)
	}
}

func TestDetectListen(t *testing.T) {
	t.Setenv("LISTEN_PID", "")
	src, err := Detect([]string{"127.0.0.1:0", "[::1]:0"})
	if err != nil {
		if strings.Contains(err.Error(), "[::1]") {
			t.Skip("no IPv6 loopback")
		}
		t.Fatal(err)
	}
	defer src.Close()
	if len(src.Listeners) != 2 || src.Mode != "--listen" {
		t.Fatalf("got %+v", src)
	}
	if _, err := Detect(nil); err != ErrNoConnection {
		t.Fatalf("Detect(nil) = %v, want ErrNoConnection", err)
	}
}

func TestServeMaxConnsAndExitIdle(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var active, peak atomic.Int32
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		Serve(context.Background(), []net.Listener{l}, LoopConfig{MaxConns: 2, ExitIdle: 300 * time.Millisecond},
			func(ctx context.Context, c net.Conn) {
				n := active.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				<-release
				active.Add(-1)
				c.Close()
			})
		close(done)
	}()
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond)
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
	close(release)
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not exit when idle")
	}
}

// TestServeDrain: once drained, the loop ends as soon as the connection in
// flight is done, long before ExitIdle, and that connection is not cut.
func TestServeDrain(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	release := make(chan struct{})
	started := make(chan struct{})
	var cut atomic.Bool
	done := make(chan struct{})
	go func() {
		Serve(context.Background(), []net.Listener{l}, LoopConfig{ExitIdle: time.Hour, Drain: drain},
			func(ctx context.Context, c net.Conn) {
				close(started)
				select {
				case <-release:
				case <-ctx.Done():
					cut.Store(true)
				}
				c.Close()
			})
		close(done)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-started
	close(drain)
	select {
	case <-done:
		t.Fatal("the loop ended with a connection in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the drained loop did not end once its last connection was done")
	}
	if cut.Load() {
		t.Error("the connection in flight saw its context cancelled")
	}
}

// TestServeDrainStopsAccepting: once drained, the loop accepts no one
// more, so that new connections (a silent one every few seconds, say)
// cannot keep it in flight for ever; the one in flight still ends it.
func TestServeDrainStopsAccepting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	release := make(chan struct{})
	var handled atomic.Int32
	done := make(chan struct{})
	go func() {
		Serve(context.Background(), []net.Listener{l}, LoopConfig{ExitIdle: time.Hour, Drain: drain},
			func(ctx context.Context, c net.Conn) {
				if handled.Add(1) == 1 {
					<-release
				}
				c.Close()
			})
		close(done)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for end := time.Now().Add(5 * time.Second); handled.Load() == 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	close(drain)
	time.Sleep(100 * time.Millisecond)
	if c2, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c2.Close()
		time.Sleep(100 * time.Millisecond)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("%d connections handled after the drain began, want only the one before it", n-1)
	}
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the drained loop did not end once its last connection was done")
	}
}
