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
	// Drain, once closed, ends the loop at the first moment no connection
	// is in flight (at once if none is), however busy it has been: under
	// systemd the next connection then starts a fresh service. Nil: never.
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
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var slots chan struct{}
	if cfg.MaxConns > 0 {
		slots = make(chan struct{}, cfg.MaxConns)
	}
	var (
		mu       sync.Mutex
		active   int
		lastIdle = time.Now()
		handlers sync.WaitGroup
		loops    sync.WaitGroup
	)
	draining := false
	done := func() {
		mu.Lock()
		active--
		if active == 0 {
			lastIdle = time.Now()
			if draining {
				cancel()
			}
		}
		mu.Unlock()
		if slots != nil {
			<-slots
		}
		handlers.Done()
	}

	for _, l := range ls {
		loops.Add(1)
		go func(l net.Listener) {
			defer loops.Done()
			backoff := 5 * time.Millisecond
			for {
				if slots != nil {
					select {
					case slots <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
				c, err := l.Accept()
				if err != nil {
					if slots != nil {
						<-slots
					}
					if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
						return
					}
					// EMFILE, ENFILE, ECONNABORTED and friends: the listener
					// is still good, so back off and keep serving.
					if cfg.Logf != nil {
						cfg.Logf("accept on %s: %v", l.Addr(), err)
					}
					select {
					case <-time.After(backoff):
					case <-ctx.Done():
						return
					}
					if backoff < time.Second {
						backoff *= 2
					}
					continue
				}
				backoff = 5 * time.Millisecond
				mu.Lock()
				active++
				mu.Unlock()
				handlers.Add(1)
				go func() {
					defer done()
					handle(parent, c)
				}()
			}
		}(l)
	}

	if cfg.Drain != nil {
		go func() {
			select {
			case <-ctx.Done():
			case <-cfg.Drain:
				mu.Lock()
				draining = true
				if active == 0 {
					cancel()
				}
				mu.Unlock()
			}
		}()
	}

	if cfg.ExitIdle > 0 {
		go func() {
			tick := time.NewTicker(idleTick(cfg.ExitIdle))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					held := cfg.Hold != nil && cfg.Hold()
					mu.Lock()
					if held {
						lastIdle = time.Now()
					}
					idle := !held && active == 0 && time.Since(lastIdle) >= cfg.ExitIdle
					mu.Unlock()
					if idle {
						cancel()
						return
					}
				}
			}
		}()
	}

	<-ctx.Done()
	for _, l := range ls {
		l.Close()
	}
	loops.Wait()
	handlers.Wait()
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
