package activation

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// SourceGroup says which client addresses count as one source: those in
// the same IPv4 /V4 or IPv6 /V6 prefix. One host on IPv6 usually holds a
// whole /64, so counting single addresses would give it 2^64 sources.
type SourceGroup struct{ V4, V6 int }

// DefaultSourceGroup is one IPv4 address, one IPv6 /64.
var DefaultSourceGroup = SourceGroup{V4: 32, V6: 64}

// Key is the source a (unmapped) address belongs to; a prefix length out of
// range counts the whole address. The zero Addr (not an IP connection) is
// one source of its own.
func (g SourceGroup) Key(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := g.V6
	if a.Is4() {
		bits = g.V4
	}
	if bits <= 0 || bits > a.BitLen() {
		bits = a.BitLen()
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// Gate counts the connections that have not finished their TLS handshake,
// in total and per source, apart from the sessions being served: a
// connection costs nothing but a socket and a goroutine until it talks, so
// the accept loop never stops for these. Past a cap a connection is shed
// (closed) to make room for the newcomer: past PerSource, one of the same
// source; past Total, one of the source holding the most. The victim is the
// oldest that has not sent a byte (a client's hello is in the kernel's
// buffer even before its goroutine has looked), else the oldest, and never
// the newcomer itself: a client from a flooding source that talks at once,
// as every TLS client does, keeps its place, and a client from another
// source is never shed while one source holds more than it. Zero caps are
// no cap.
type Gate struct {
	Total, PerSource int
	Group            SourceGroup

	mu   sync.Mutex
	n    int
	srcs map[netip.Prefix]*list.List // of *Ticket, oldest first
	shed map[netip.Prefix]int        // since the last Shed call
}

// Ticket is one connection's place in the gate.
type Ticket struct {
	g       *Gate
	key     netip.Prefix
	c       net.Conn
	el      *list.Element // nil once out of the gate
	talking bool          // under g.mu
	shed    atomic.Bool
}

// Enter counts c, from addr (the client's, behind a trusted load balancer
// the one in its PROXY header), until the ticket's Leave; it may close other
// connections in the gate to make room, never c.
func (g *Gate) Enter(addr netip.Addr, c net.Conn) *Ticket {
	t := &Ticket{g: g, key: g.Group.Key(addr), c: c}
	var victims []*Ticket
	g.mu.Lock()
	if g.srcs == nil {
		g.srcs = map[netip.Prefix]*list.List{}
		g.shed = map[netip.Prefix]int{}
	}
	l := g.srcs[t.key]
	if l == nil {
		l = list.New()
		g.srcs[t.key] = l
	}
	t.el = l.PushBack(t)
	g.n++
	if g.PerSource > 0 && l.Len() > g.PerSource {
		victims = append(victims, g.evictLocked(l))
	}
	if g.Total > 0 && g.n > g.Total {
		victims = append(victims, g.evictLocked(g.fullestLocked()))
	}
	g.mu.Unlock()
	for _, v := range victims {
		// Closing the socket ends whatever its goroutine is blocked in
		// (the first-byte wait, the sniff, the handshake).
		v.c.Close()
	}
	return t
}

// fullestLocked is the list of the source with the most connections.
func (g *Gate) fullestLocked() *list.List {
	var best *list.List
	for _, l := range g.srcs {
		if best == nil || l.Len() > best.Len() {
			best = l
		}
	}
	return best
}

// evictLocked takes the victim out of l (which holds at least two: the
// newcomer is the last and is never chosen).
func (g *Gate) evictLocked(l *list.List) *Ticket {
	var victim *Ticket
	for e := l.Front(); e != nil && e.Next() != nil; e = e.Next() {
		t := e.Value.(*Ticket)
		if !t.talking && !inputPending(t.c) {
			victim = t
			break
		}
	}
	if victim == nil {
		victim = l.Front().Value.(*Ticket)
	}
	g.removeLocked(victim)
	victim.shed.Store(true)
	g.shed[victim.key]++
	return victim
}

func (g *Gate) removeLocked(t *Ticket) {
	l := g.srcs[t.key]
	l.Remove(t.el)
	t.el = nil
	g.n--
	if l.Len() == 0 {
		delete(g.srcs, t.key)
	}
}

// Talking records that the connection has sent its first byte: it is then
// shed only after every silent one of its source. Nil-safe.
func (t *Ticket) Talking() {
	if t == nil {
		return
	}
	t.g.mu.Lock()
	t.talking = true
	t.g.mu.Unlock()
}

// Leave takes the connection out of the gate (its handshake is done, or it
// failed); safe to call more than once, and on nil.
func (t *Ticket) Leave() {
	if t == nil {
		return
	}
	t.g.mu.Lock()
	if t.el != nil {
		t.g.removeLocked(t)
	}
	t.g.mu.Unlock()
}

// Shed reports whether the gate closed this connection. Nil-safe.
func (t *Ticket) Shed() bool { return t != nil && t.shed.Load() }

// Source is the source the connection counts against.
func (t *Ticket) Source() netip.Prefix { return t.key }

// Len is how many connections are in the gate.
func (g *Gate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// Shed returns how many connections were shed since the last call, and the
// source that lost the most of them, and starts counting afresh: shed
// connections are reported in one line now and then, not one line each.
func (g *Gate) Shed() (total int, top netip.Prefix, topN int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, n := range g.shed {
		total += n
		if n > topN {
			top, topN = k, n
		}
		delete(g.shed, k)
	}
	return total, top, topN
}
