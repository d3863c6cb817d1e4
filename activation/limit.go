package activation

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// LimitError says which limit turned a connection away. Its text is rsyncd's
// own for "max connections", so that a client shows it as rsync would.
type LimitError struct {
	Limit     int
	PerSource bool // the per-client-address limit, not the total
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("max connections (%d) reached -- try again later", e.Limit)
}

// Limiter admits connections up to a total and a per-client-address count,
// letting a connection over either wait up to Wait for a slot. The address is
// the client's real one: behind a trusted load balancer, the one from its
// PROXY header, never the balancer's. Zero limits are no limit.
type Limiter struct {
	Total, PerSource int
	Wait             time.Duration

	mu     sync.Mutex
	active int
	per    map[netip.Addr]int
	freed  chan struct{} // closed and replaced whenever a slot is released
}

// Acquire takes a slot for a connection from addr, waiting up to l.Wait for
// one. It returns the release function, or a *LimitError when the wait ran
// out (or ctx ended) with the limit still reached.
func (l *Limiter) Acquire(ctx context.Context, addr netip.Addr) (release func(), err error) {
	addr = addr.Unmap()
	var timeout <-chan time.Time
	for {
		l.mu.Lock()
		if l.per == nil {
			l.per = map[netip.Addr]int{}
			l.freed = make(chan struct{})
		}
		switch {
		case l.Total > 0 && l.active >= l.Total:
			err = &LimitError{Limit: l.Total}
		case l.PerSource > 0 && l.per[addr] >= l.PerSource:
			err = &LimitError{Limit: l.PerSource, PerSource: true}
		default:
			l.active++
			l.per[addr]++
			l.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { l.release(addr) }) }, nil
		}
		freed := l.freed
		l.mu.Unlock()
		if timeout == nil {
			if l.Wait <= 0 {
				return nil, err
			}
			t := time.NewTimer(l.Wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
		case <-timeout:
			return nil, err
		case <-ctx.Done():
			return nil, err
		}
	}
}

func (l *Limiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.per[addr]--; l.per[addr] <= 0 {
		delete(l.per, addr)
	}
	close(l.freed)
	l.freed = make(chan struct{})
}

// ConnAddr is the address a connection counts against: its remote address,
// which a ProxiedConn reports as the client's from the PROXY header.
func ConnAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
