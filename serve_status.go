//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// loopStatus is what the accept loop tells systemd (sd_notify STATUS=), so
// that "systemctl status rsync-ssl" says what runs now: sessions whose
// rsync runs, sessions served since start, connections that never reached
// rsync, and when the certificate expires. nil outside the accept loop.
type loopStatus struct {
	inFlight, served, refused atomic.Int64
	store                     *tlsbridge.CertStore
	mu                        sync.Mutex // one STATUS= at a time, the newest last
}

// newLoopStatus returns nil when no service manager listens
// (NOTIFY_SOCKET unset): nothing to count for.
func newLoopStatus(store *tlsbridge.CertStore) *loopStatus {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	return &loopStatus{store: store}
}

func (st *loopStatus) text() string {
	exp := "unknown"
	if na := st.store.NotAfter(); !na.IsZero() {
		exp = fmt.Sprintf("%s (%d days)", na.UTC().Format("2006-01-02"), int(time.Until(na).Hours()/24))
	}
	return fmt.Sprintf("%d in flight, %d served since start, %d refused; certificate expires %s",
		st.inFlight.Load(), st.served.Load(), st.refused.Load(), exp)
}

func (st *loopStatus) send() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	daemon.SdNotify(false, "STATUS="+st.text())
}

// started counts a session whose rsync now runs.
func (st *loopStatus) started() {
	if st != nil {
		st.inFlight.Add(1)
		st.send()
	}
}

// ended counts a connection at its end, by whether it reached rsync.
func (st *loopStatus) ended(res tlsbridge.Result) {
	if st == nil {
		return
	}
	if res.RsyncPID > 0 {
		st.inFlight.Add(-1)
		st.served.Add(1)
	} else {
		st.refused.Add(1)
	}
	st.send()
}

// every resends the status each minute, for the expiry's day count and
// a certificate reloaded in between.
func (st *loopStatus) every(ctx context.Context) {
	if st == nil {
		return
	}
	st.send()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st.send()
		}
	}
}
