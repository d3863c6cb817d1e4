//go:build linux

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// certPoll is how often the accept loop looks for renewed certificates.
const certPoll = 5 * time.Second

// expiryRecheck is how often a running accept loop repeats the warning
// about a certificate close to its expiry.
const expiryRecheck = 24 * time.Hour

// logCertsInUse logs which certificate each pair serves, and warns about
// one that expires within tlsbridge.ExpirySoon.
func logCertsInUse(srv *servePlan, log *logger, what string) {
	for _, d := range srv.store.Describe() {
		log.Logf("%s %s", what, d)
	}
	for _, w := range srv.store.Expiring(time.Now(), tlsbridge.ExpirySoon) {
		log.Logf("warning: %s", w)
	}
}

// startCertWatch starts watchCerts; SIGHUP is ours before it returns, so
// that a "systemctl reload" from then on cannot end the process.
func startCertWatch(ctx context.Context, srv *servePlan, log *logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		watchCerts(ctx, srv, hup, log)
	}()
}

// watchCerts reloads the certificates (and the client CA bundle and CRLs)
// on SIGHUP (systemctl reload) and when their files change, until ctx is
// done. A handshake in flight keeps the pair it started with; every new one
// gets the new pair. A reload that fails keeps the pair in use and says why.
func watchCerts(ctx context.Context, srv *servePlan, hup <-chan os.Signal, log *logger) {
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
