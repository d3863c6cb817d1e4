package activation

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// LoopConfig bounds the accept loop used with listening sockets.
type LoopConfig struct {
	// MaxConns caps connections served at once; 0 means no cap. When the cap
	// is reached the loop stops accepting, so further clients wait in the
	// kernel's backlog instead of being accepted and dropped.
	MaxConns int
	// ExitIdle ends the loop after this long with no connection; 0 never.
	ExitIdle time.Duration
	// Drain, once closed, stops accepting and ends the loop once no
	// connection is in flight (at once if none is). New clients wait in
	// the kernel's backlog meanwhile (under systemd the next service
	// instance accepts them), so a stream of connections, honest or silent
	// ones made to hold the loop open, cannot keep it from ending: only
	// those already accepted count, each bounded by the handler's own
	// timeouts. Nil: never.
	Drain <-chan struct{}
	// Logf reports accept errors; it must be safe for concurrent use.
	Logf func(format string, args ...any)
	// Hold, while it returns true, keeps the loop from exiting idle; the
	// idle time counts from when it last did. Nil: nothing holds.
	Hold func() bool
}

// Serve accepts on every listener and runs handle for each connection in
// its own goroutine, until ctx is cancelled or the loop has been idle for
// ExitIdle, or drained (Drain). It then closes the listeners and waits for the
// running handlers, which receive ctx and are expected to wind down when it is
// done.
func Serve(ctx context.Context, ls []net.Listener, cfg LoopConfig, handle func(context.Context, net.Conn)) {
	// Handlers get the caller's ctx, not the loop's: a connection accepted
	// in the instant the loop decides to end (idle, drained) is served to
	// its end, not cut.
	lp := &loop{cfg: cfg, parent: ctx, handle: handle, lastIdle: time.Now(), ls: ls}
	lp.ctx, lp.cancel = context.WithCancel(ctx)
	defer lp.cancel()
	if cfg.MaxConns > 0 {
		lp.slots = make(chan struct{}, cfg.MaxConns)
	}
	for _, l := range ls {
		lp.loops.Add(1)
		go lp.acceptOn(l)
	}
	if cfg.Drain != nil {
		go lp.drainOn(cfg.Drain)
	}
	if cfg.ExitIdle > 0 {
		go lp.exitWhenIdle(cfg.ExitIdle)
	}
	<-lp.ctx.Done()
	for _, l := range ls {
		l.Close()
	}
	lp.loops.Wait()
	lp.handlers.Wait()
}

// loop is one Serve's state.
type loop struct {
	cfg    LoopConfig
	parent context.Context // what handlers get
	ctx    context.Context // the loop's own, cancelled when it ends
	cancel context.CancelFunc
	handle func(context.Context, net.Conn)
	ls     []net.Listener
	// slots holds one token per connection served, when capped.
	slots chan struct{}

	mu       sync.Mutex
	active   int
	lastIdle time.Time
	draining bool

	handlers, loops sync.WaitGroup
}

// acceptOn accepts on l until the loop ends, one handler goroutine per
// connection.
func (lp *loop) acceptOn(l net.Listener) {
	defer lp.loops.Done()
	backoff := 5 * time.Millisecond
	for {
		if lp.slots != nil {
			select {
			case lp.slots <- struct{}{}:
			case <-lp.ctx.Done():
				return
			}
		}
		c, err := l.Accept()
		if err != nil {
			if lp.slots != nil {
				<-lp.slots
			}
			if lp.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE, ENFILE, ECONNABORTED and friends: the listener
			// is still good, so back off and keep serving.
			if lp.cfg.Logf != nil {
				lp.cfg.Logf("accept on %s: %v", l.Addr(), err)
			}
			select {
			case <-time.After(backoff):
			case <-lp.ctx.Done():
				return
			}
			if backoff < time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 5 * time.Millisecond
		lp.mu.Lock()
		lp.active++
		lp.mu.Unlock()
		lp.handlers.Add(1)
		go func() {
			defer lp.done()
			lp.handle(lp.parent, c)
		}()
	}
}

// done is a handler's end: its slot is free, and a draining loop whose
// last connection this was ends.
func (lp *loop) done() {
	lp.mu.Lock()
	lp.active--
	if lp.active == 0 {
		lp.lastIdle = time.Now()
		if lp.draining {
			lp.cancel()
		}
	}
	lp.mu.Unlock()
	if lp.slots != nil {
		<-lp.slots
	}
	lp.handlers.Done()
}

// drainOn stops accepting once drain is closed, and ends the loop when no
// connection is in flight.
func (lp *loop) drainOn(drain <-chan struct{}) {
	select {
	case <-lp.ctx.Done():
	case <-drain:
		for _, l := range lp.ls {
			l.Close()
		}
		lp.mu.Lock()
		lp.draining = true
		if lp.active == 0 {
			lp.cancel()
		}
		lp.mu.Unlock()
	}
}

// exitWhenIdle ends the loop once no connection has been in flight for d.
func (lp *loop) exitWhenIdle(d time.Duration) {
	tick := time.NewTicker(idleTick(d))
	defer tick.Stop()
	for {
		select {
		case <-lp.ctx.Done():
			return
		case <-tick.C:
			held := lp.cfg.Hold != nil && lp.cfg.Hold()
			lp.mu.Lock()
			if held {
				lp.lastIdle = time.Now()
			}
			idle := !held && lp.active == 0 && time.Since(lp.lastIdle) >= d
			lp.mu.Unlock()
			if idle {
				lp.cancel()
				return
			}
		}
	}
}

func idleTick(d time.Duration) time.Duration {
	t := d / 10
	if t < 10*time.Millisecond {
		t = 10 * time.Millisecond
	}
	if t > time.Second {
		t = time.Second
	}
	return t
}
