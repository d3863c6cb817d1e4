//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// certPoll is how often the accept loop looks for renewed certificates.
const certPoll = 5 * time.Second

// reload reads the server certificates, and the client CA bundle and CRLs
// if any, again; each set is swapped in only if all of its files load.
func (p *servePlan) reload() (warns []string, err error) {
	warns, err = p.store.Reload()
	if err != nil {
		return nil, err
	}
	if err := p.Client.Reload(); err != nil {
		return warns, err
	}
	return warns, nil
}

// watchChanged returns a channel closed once any of files differs from what
// it was at the start (size, modification time, inode: a renewal that
// replaces the file by a rename counts), checked every poll. Under systemd
// the certificate and key reach serve as LoadCredential= copies made when
// the service starts, so a renewal of the originals only takes effect in a
// fresh service; serve cannot read the key's original itself. Nil files: a
// nil channel, which never closes.
func watchChanged(ctx context.Context, files []string, poll time.Duration, log *logger) <-chan struct{} {
	if len(files) == 0 {
		return nil
	}
	stamp := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			return "missing"
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
					log.Logf("%s changed: exiting once no connection is in flight", f)
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}

// reloadLoop reloads the certificates on SIGHUP and when their files
// change (polled every certPoll), until ctx is done.
func (srv *servePlan) reloadLoop(ctx context.Context, hup <-chan os.Signal, log *logger) {
	lastErr := ""
	tick := time.NewTicker(certPoll)
	defer tick.Stop()
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-tick.C:
			if !srv.store.Changed() && !srv.Client.Changed() {
				continue
			}
			why = "changed files"
		}
		warns, err := srv.reload()
		if err != nil {
			// The files stay changed, so the poll retries
			// every few seconds (a certificate not yet valid
			// goes in once it is): say so once, not each time.
			if msg := err.Error(); msg != lastErr || why == "SIGHUP" {
				log.Logf("reload certificates (%s): %v; still using the previous ones", why, err)
				lastErr = msg
			}
			continue
		}
		lastErr = ""
		for _, w := range warns {
			log.Logf("warning: %s", w)
		}
		log.Logf("reloaded certificates (%s)", why)
	}
}
