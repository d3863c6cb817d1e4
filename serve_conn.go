//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// connExit maps one connection's outcome to the process exit status.
func connExit(res tlsbridge.Result) int {
	// On the kernel data path the shim never sees the stream, so a module
	// listing (which rsync ends with 255) cannot be told from the daemon
	// refusing a module (also 255, also a client's error, not ours).
	daemonEnd := res.Listing() || res.DataPath == "ktls"
	switch {
	case res.RsyncExit > 0 && !(daemonEnd && res.RsyncExit == 255 && res.Err == nil):
		return res.RsyncExit
	case res.Err != nil:
		return exitFailure
	}
	return exitOK
}

func serveLoop(ctx context.Context, srv *servePlan, src *activation.Source, o *serveOptions, log *logger) int {
	exitIdle := o.exitIdle
	// rsync reads its configuration per session; the service that
	// outlives them has it read once before the first client, so that a
	// missing or broken file stops the service instead of every session.
	checked := time.Now()
	if err := srv.CheckRsyncdConf(); err != nil {
		log.Logf("serve: %v", err)
		return exitFailure
	}
	ho := newHandover(src, log)
	logServing(srv, src, log, time.Since(checked))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadCtx, cancelReload := context.WithCancel(ctx)
	defer cancelReload()
	go srv.reloadLoop(reloadCtx, hup, log)

	srv.status = newLoopStatus(srv.store)
	go srv.status.every(reloadCtx)
	drain := watchChanged(reloadCtx, o.exitOnChange, certPoll, log)
	drain = ho.watch(reloadCtx, drain)
	srv.startLimits(reloadCtx, o, log)
	// The loop accepts whatever comes: a connection before its handshake
	// costs a socket and a goroutine, the gate bounds how many there are,
	// and the limiter how many sessions run (and wait).
	activation.Serve(ctx, src.Listeners, activation.LoopConfig{ExitIdle: exitIdle, Drain: drain, Logf: log.Logf, Hold: ho.held},
		func(ctx context.Context, c net.Conn) {
			defer ho.session()()
			srv.serveOne(ctx, c, log)
		})
	ho.waitPredecessor(ctx)
	drained := false
	select {
	case <-drain:
		drained = true
	default:
	}
	switch {
	case ctx.Err() != nil:
		log.Logf("stopping: signal received")
	case ho.handedOver():
		log.Logf("exiting: every session has ended; PID %d (version %s) serves", ho.successor, ho.version)
	case drained:
		log.Logf("exiting: %s changed and the connections accepted before are done; the clients waiting start serve afresh", strings.Join(o.exitOnChange, ", "))
	default:
		log.Logf("exiting: idle for %v", exitIdle)
	}
	return exitOK
}

// logServing is the accept loop's first line: what it serves and how.
func logServing(srv *servePlan, src *activation.Source, log *logger, confCheck time.Duration) {
	addrs := ""
	for i, l := range src.Listeners {
		if i > 0 {
			addrs += " "
		}
		addrs += l.Addr().String()
	}
	ver := srv.info.Version
	if ver == "" {
		ver = "unknown"
	}
	datapath := srv.DataPathMode.String()
	if srv.KernelUnavailable != "" {
		datapath += " (every session bridged: " + srv.KernelUnavailable + ")"
	}
	log.Logf("serving %s from %s, version %s; rsync %s (%s), rsyncd.conf %s (rsync read it in %v), pair %s, proxy protocol %s, datapath %s",
		addrs, src.Mode, version, srv.info.Path, ver, srv.RsyncdConf(), confCheck.Round(time.Millisecond), srv.Pair, srv.Rsync.Proxy, datapath)
}
