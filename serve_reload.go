//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// certPoll is how often the accept loop looks for renewed certificates.
const certPoll = 5 * time.Second

// reload reads the server certificates, and the client CA bundle and CRLs
// if any, again; each set is swapped in only if all of its files load.
func (p *servePlan) reload() (warns []string, err error) {
	warns, err = p.store.Reload()
	if err != nil {
		return nil, withFlags(err)
	}
	if err := p.Client.Reload(); err != nil {
		return warns, withFlags(err)
	}
	return warns, nil
}

// watchChanged returns a channel closed once any of files differs from what
// it was at the start (size, modification time, inode: a renewal that
// replaces the file by a rename counts), checked every poll. For a drop-in
// that passes the certificate and key as LoadCredential= copies, made when
// the service starts: a renewal of the originals only takes effect in a
// fresh service. (The shipped units let serve read the files, and
// reloadLoop takes a renewal in place.) Nil files: a nil channel, which
// never closes.
func watchChanged(ctx context.Context, files []string, poll time.Duration, log *logger) <-chan struct{} {
	if len(files) == 0 {
		return nil
	}
	stamp := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			// Not "missing" for every error: an unreadable path
			// would compare equal before and after a renewal.
			return err.Error()
		}
		ino := uint64(0)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		return fmt.Sprintf("%d %d %d", fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	was := make([]string, len(files))
	for i, f := range files {
		was[i] = stamp(f)
		if why := tlsbridge.PathProblem(f); why != "" {
			log.Logf("warning: --exit-on-change %s: a change to it cannot be seen", why)
		}
	}
	ch := make(chan struct{})
	go func() {
		tick := time.NewTicker(poll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for i, f := range files {
				if stamp(f) != was[i] {
					log.Logf("%s changed: accepting no more, exiting once the connections in flight are done", f)
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}

// expiryRecheck is how often a running accept loop repeats the warning
// about a certificate close to its expiry.
const expiryRecheck = 24 * time.Hour

// logCertsInUse logs which certificate each pair serves (file, serial,
// subject, expiry, pin), and warns about one that expires within
// tlsbridge.ExpirySoon.
func logCertsInUse(srv *servePlan, log *logger, what string) {
	for _, d := range srv.store.Describe() {
		log.Logf("%s %s", what, d)
	}
	for _, w := range srv.store.Expiring(time.Now(), tlsbridge.ExpirySoon) {
		log.Logf("warning: %s", w)
	}
}

// reloadLoop reloads the certificates (and the client CA bundle and CRLs)
// on SIGHUP (systemctl reload) and when their files change (polled every
// certPoll), until ctx is done. A handshake in flight keeps the pair it
// started with; every new one gets the new pair. A reload that fails keeps
// the pair in use and says which.
func (srv *servePlan) reloadLoop(ctx context.Context, hup <-chan os.Signal, log *logger) {
	logCertsInUse(srv, log, "certificate in use:")
	lastErr := ""
	tick := time.NewTicker(certPoll)
	defer tick.Stop()
	daily := time.NewTicker(expiryRecheck)
	defer daily.Stop()
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-daily.C:
			for _, w := range srv.store.Expiring(time.Now(), tlsbridge.ExpirySoon) {
				log.Logf("warning: %s", w)
			}
			continue
		case <-tick.C:
			if !srv.store.Changed() && !srv.Client.Changed() {
				continue
			}
			why = "changed files"
		}
		warns, err := srv.reload()
		if err != nil {
			// The files stay changed, so the poll retries every few
			// seconds (a certificate not yet valid goes in once it
			// is, a key written after its certificate is picked up
			// with it): say so once, not each time.
			if msg := err.Error(); msg != lastErr || why == "SIGHUP" {
				log.Logf("reload certificates (%s): %v; still using the previous ones", why, err)
				for _, d := range srv.store.Describe() {
					log.Logf("certificate kept: %s", d)
				}
				lastErr = msg
			}
			continue
		}
		lastErr = ""
		for _, w := range warns {
			log.Logf("warning: %s", w)
		}
		logCertsInUse(srv, log, "reloaded certificates ("+why+"):")
	}
}
