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
	PerSource bool // the per-source limit, not the total
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("max connections (%d) reached -- try again later", e.Limit)
}

// Answer is the line the client is told after "@ERROR: ".
func (e *LimitError) Answer() string { return e.Error() }

// Limiter admits sessions (connections past their handshake) up to a total
// and a per-source count. A session over the total waits up to Wait for a
// slot, but only as many wait at once as the total allows; one over its
// source's count is refused at once: waiting would only let one source
// queue up ahead of the others. The address is the client's real one:
// behind a trusted load balancer, the one from its PROXY header, never the
// balancer's; sources are grouped by Group. Zero limits are no limit.
type Limiter struct {
	Total, PerSource int
	Wait             time.Duration
	Group            SourceGroup
	// Refusals caps the refusals being answered at once (in rsync's words,
	// which takes a moment of the client's): past it a refusal is cut
	// short. 0: no cap.
	Refusals int

	mu       sync.Mutex
	active   int
	waiting  int
	refusing int
	per      map[netip.Prefix]int
	freed    chan struct{} // closed and replaced whenever a slot is released
}

// Acquire takes a slot for a session from addr, waiting up to l.Wait for
// one when only the total is reached. It returns the release function, or
// a *LimitError when the wait ran out (or ctx ended) with the limit still
// reached.
func (l *Limiter) Acquire(ctx context.Context, addr netip.Addr) (release func(), err error) {
	key := l.Group.Key(addr)
	var timeout <-chan time.Time
	waiting := false
	defer func() {
		if waiting {
			l.mu.Lock()
			l.waiting--
			l.mu.Unlock()
		}
	}()
	for {
		l.mu.Lock()
		if l.per == nil {
			l.per = map[netip.Prefix]int{}
			l.freed = make(chan struct{})
		}
		switch {
		case l.PerSource > 0 && l.per[key] >= l.PerSource:
			l.mu.Unlock()
			return nil, &LimitError{Limit: l.PerSource, PerSource: true}
		case l.Total > 0 && l.active >= l.Total:
			err = &LimitError{Limit: l.Total}
		default:
			l.active++
			l.per[key]++
			l.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { l.release(key) }) }, nil
		}
		if !waiting {
			if l.Wait <= 0 || l.waiting >= l.Total {
				l.mu.Unlock()
				return nil, err
			}
			l.waiting++
			waiting = true
		}
		freed := l.freed
		l.mu.Unlock()
		if timeout == nil {
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

func (l *Limiter) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.per[key]--; l.per[key] <= 0 {
		delete(l.per, key)
	}
	close(l.freed)
	l.freed = make(chan struct{})
}

// Refusing takes a place among the refusals being answered; ok is false
// when l.Refusals are already under way, and the refusal must be cut short.
func (l *Limiter) Refusing() (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Refusals > 0 && l.refusing >= l.Refusals {
		return nil, false
	}
	l.refusing++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.refusing--
			l.mu.Unlock()
		})
	}, true
}

// ConnAddr is the address a connection counts against: its remote address,
// which a ProxiedConn reports as the client's from the PROXY header.
func ConnAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
