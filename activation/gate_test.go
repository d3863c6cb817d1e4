package activation

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSourceGroupKey(t *testing.T) {
	g := DefaultSourceGroup
	for _, tc := range []struct{ in, want string }{
		{"198.51.100.7", "198.51.100.7/32"},
		{"::ffff:198.51.100.7", "198.51.100.7/32"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := g.Key(netip.MustParseAddr(tc.in)).String(); got != tc.want {
			t.Errorf("Key(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := (SourceGroup{V4: 24, V6: 48}).Key(netip.MustParseAddr("203.0.113.77")).String(); got != "203.0.113.0/24" {
		t.Errorf("/24 grouping: %s", got)
	}
	if got := (SourceGroup{}).Key(netip.MustParseAddr("2001:db8::1")).String(); got != "2001:db8::1/128" {
		t.Errorf("zero grouping counts whole addresses: %s", got)
	}
}

// pairFrom is a connected loopback pair: the server's end (which the gate
// holds) and the client's.
func pairFrom(t *testing.T, l net.Listener, src string) (server, client net.Conn) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

func closed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, net.ErrClosed)
}

func TestGateShedsSilentFromTheFullestSource(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g := &Gate{Total: 5, PerSource: 3, Group: DefaultSourceGroup}
	flood := netip.MustParseAddr("127.0.0.2")

	// A client from the flooding source whose hello is in the kernel's
	// buffer, then silent ones from the same source.
	talker, tc := pairFrom(t, l, "127.0.0.2")
	tc.Write([]byte{0x16})
	time.Sleep(50 * time.Millisecond)
	tTalker := g.Enter(flood, talker)
	var silent []net.Conn
	var tickets []*Ticket
	for i := 0; i < 4; i++ {
		s, _ := pairFrom(t, l, "127.0.0.2")
		silent = append(silent, s)
		tickets = append(tickets, g.Enter(flood, s))
	}
	// Per source 3: the two oldest silent ones went, never the talker.
	if tTalker.Shed() || closed(talker) {
		t.Fatal("the connection that had sent its hello was shed")
	}
	for i, want := range []bool{true, true, false, false} {
		if tickets[i].Shed() != want || closed(silent[i]) != want {
			t.Errorf("silent %d: shed %v, want %v", i, tickets[i].Shed(), want)
		}
	}
	if n := g.Len(); n != 3 {
		t.Fatalf("gate holds %d, want 3", n)
	}

	// Two other sources fill the total; a third one's newcomer then sheds
	// from the fullest source (127.0.0.2), not from the small ones.
	a, _ := pairFrom(t, l, "127.0.0.3")
	ta := g.Enter(netip.MustParseAddr("127.0.0.3"), a)
	b, _ := pairFrom(t, l, "127.0.0.4")
	tb := g.Enter(netip.MustParseAddr("127.0.0.4"), b)
	c, _ := pairFrom(t, l, "127.0.0.5")
	tcn := g.Enter(netip.MustParseAddr("127.0.0.5"), c)
	if ta.Shed() || tb.Shed() || tcn.Shed() {
		t.Fatal("a connection from a small source was shed while 127.0.0.2 held the most")
	}
	if !tickets[2].Shed() || tTalker.Shed() {
		t.Fatalf("want 127.0.0.2's oldest silent one shed (got %v), its talker kept (shed %v)", tickets[2].Shed(), tTalker.Shed())
	}
	if n := g.Len(); n != 5 {
		t.Fatalf("gate holds %d, want its total 5", n)
	}
	total, top, topN := g.Shed()
	if total != 3 || top.String() != "127.0.0.2/32" || topN != 3 {
		t.Errorf("Shed() = %d, %s, %d; want 3 from 127.0.0.2/32", total, top, topN)
	}
	if total, _, _ := g.Shed(); total != 0 {
		t.Errorf("Shed() counts afresh after a call, got %d", total)
	}

	// Leaving is idempotent and frees the place.
	ta.Leave()
	ta.Leave()
	tb.Talking()
	tb.Leave()
	if n := g.Len(); n != 3 {
		t.Fatalf("after two leave: %d, want 3", n)
	}
	var nilTicket *Ticket
	nilTicket.Leave()
	nilTicket.Talking()
	if nilTicket.Shed() {
		t.Fatal("nil ticket shed")
	}
}

func TestWaitFirstByte(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	s, c := pairFrom(t, l, "127.0.0.1")
	start := time.Now()
	err = WaitFirstByte(s, time.Now().Add(200*time.Millisecond), 200*time.Millisecond)
	var fe *FirstByteError
	if !errors.As(err, &fe) || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("silent: %v after %v, want a FirstByteError at the bound", err, time.Since(start))
	}
	if want := "client sent nothing within 200ms"; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
	// The bound is cleared: a later read is not cut by it.
	time.AfterFunc(100*time.Millisecond, func() { c.Write([]byte("x")) })
	if err := WaitFirstByte(s, time.Now().Add(5*time.Second), 5*time.Second); err != nil {
		t.Fatalf("a byte after 100ms: %v", err)
	}
	b := make([]byte, 1)
	if n, _ := s.Read(b); n != 1 || b[0] != 'x' {
		t.Fatal("the first byte was consumed by the wait")
	}

	// A peer that closes is not an error of the wait.
	s2, c2 := pairFrom(t, l, "127.0.0.1")
	c2.Close()
	if err := WaitFirstByte(s2, time.Now().Add(5*time.Second), 5*time.Second); err != nil {
		t.Fatalf("closed by the peer: %v", err)
	}
	// Closed under it (the gate shed it): returns at once.
	s3, _ := pairFrom(t, l, "127.0.0.1")
	time.AfterFunc(50*time.Millisecond, func() { s3.Close() })
	start = time.Now()
	if err := WaitFirstByte(s3, time.Now().Add(5*time.Second), 5*time.Second); err == nil || time.Since(start) > time.Second {
		t.Fatalf("closed meanwhile: %v after %v", err, time.Since(start))
	}
}

func TestLimiterPerSourceRefusesAtOnceAndGroups(t *testing.T) {
	l := &Limiter{Total: 10, PerSource: 1, Wait: 5 * time.Second, Group: DefaultSourceGroup}
	ctx := context.Background()
	if _, err := l.Acquire(ctx, netip.MustParseAddr("2001:db8::1")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var le *LimitError
	if _, err := l.Acquire(ctx, netip.MustParseAddr("2001:db8::ffff:2")); !errors.As(err, &le) || !le.PerSource {
		t.Fatalf("another address in the same /64: %v, want the per-source limit", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("per-source refusal waited %v, want at once", d)
	}
	if _, err := l.Acquire(ctx, netip.MustParseAddr("2001:db8:0:1::1")); err != nil {
		t.Fatalf("the next /64 is another source: %v", err)
	}
	if le.Answer() != "max connections (1) reached -- try again later" {
		t.Fatalf("answer %q", le.Answer())
	}
}

func TestLimiterBoundsWaitersAndRefusals(t *testing.T) {
	l := &Limiter{Total: 1, Wait: 300 * time.Millisecond, Refusals: 1}
	ctx := context.Background()
	if _, err := l.Acquire(ctx, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	// One may wait (the total is 1); a second over the total at the same
	// time is refused at once.
	waited := make(chan time.Duration)
	go func() {
		start := time.Now()
		l.Acquire(ctx, netip.MustParseAddr("192.0.2.2"))
		waited <- time.Since(start)
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if _, err := l.Acquire(ctx, netip.MustParseAddr("192.0.2.3")); err == nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("second waiter: %v after %v, want refused at once", err, time.Since(start))
	}
	if d := <-waited; d < 250*time.Millisecond {
		t.Fatalf("the first waiter gave up after %v, want the full wait", d)
	}
	r, ok := l.Refusing()
	if !ok {
		t.Fatal("first refusal over budget")
	}
	if _, ok := l.Refusing(); ok {
		t.Fatal("second refusal at once, budget 1: want cut short")
	}
	r()
	r()
	if _, ok := l.Refusing(); !ok {
		t.Fatal("budget not given back")
	}
}
