//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// limitFlags declares the flags that bound connections and sessions.
func limitFlags(fs *flag.FlagSet, o *serveOptions) {
	fs.IntVar(&o.maxConns, "max-conns", 64, "with a listening socket: at most `N` sessions (connections past their TLS\n"+
		"handshake) served at once; one more waits up to --max-conns-wait for a slot,\n"+
		"then is told rsync's \"@ERROR: max connections (N) reached -- try again\n"+
		"later\" (0: no cap)")
	fs.IntVar(&o.maxPerSource, "max-conns-per-source", 8, "with a listening socket: at most `N` sessions from one source (see\n"+
		"--source-prefix-v4; behind --trusted-proxy, the address in the PROXY header);\n"+
		"one more is told the same at once, without waiting (0: no cap)")
	fs.DurationVar(&o.maxWait, "max-conns-wait", 5*time.Second, "how long (`DURATION`) a session over --max-conns waits for a slot before it is\n"+
		"told to try again later")
	fs.IntVar(&o.maxHandshakes, "max-handshakes", 256, "with a listening socket: at most `N` connections still before the end of their\n"+
		"TLS handshake, apart from --max-conns; past it the oldest silent one (else the\n"+
		"oldest) of the source holding the most is closed. The accept loop never stops\n"+
		"for them (0: no cap)")
	fs.IntVar(&o.maxHandshakesPerSource, "max-handshakes-per-source", 16, "with a listening socket: at most `N` of those from one source; past it the\n"+
		"oldest silent one (else the oldest) of that source is closed (0: no cap)")
	fs.IntVar(&o.prefixV4, "source-prefix-v4", 32, "IPv4 clients in one /`BITS` count as one source for the per-source limits")
	fs.IntVar(&o.prefixV6, "source-prefix-v6", 64, "IPv6 clients in one /`BITS` count as one source (one host usually holds a /64)")
	fs.DurationVar(&o.firstByte, "first-byte-timeout", 5*time.Second, "close a connection that has sent nothing (no TLS hello; behind\n"+
		"--trusted-proxy, no PROXY header) within `DURATION` of its accept (0: only\n"+
		"--handshake-timeout bounds it)")
}

func checkLimitFlags(o *serveOptions) error {
	if o.maxConns < 0 || o.maxPerSource < 0 || o.maxHandshakes < 0 || o.maxHandshakesPerSource < 0 {
		return usage("--max-conns, --max-conns-per-source, --max-handshakes and --max-handshakes-per-source must be 0 (no cap) or more")
	}
	if o.firstByte < 0 {
		return usage("--first-byte-timeout must be 0 (the handshake timeout alone) or more")
	}
	if o.prefixV4 < 0 || o.prefixV4 > 32 || o.prefixV6 < 0 || o.prefixV6 > 128 {
		return usage("--source-prefix-v4 takes 1 to 32 and --source-prefix-v6 1 to 128 (0: the whole address)")
	}
	return nil
}

// firstByteBound is the time from accept to the first byte: never more than
// the handshake's.
func firstByteBound(o *serveOptions) time.Duration {
	if o.firstByte <= 0 || o.firstByte > o.handshake {
		return o.handshake
	}
	return o.firstByte
}

// refusalsAtOnce bounds the refusals answered in rsync's words at once; past
// it a refusal is cut short (see tlsbridge's answerRefusal).
const refusalsAtOnce = 64

// shedReport is how often the connections the gate shed are reported.
const shedReport = 10 * time.Second

// startLimits sets up the accept loop's limiter and gate.
func (srv *servePlan) startLimits(ctx context.Context, o *serveOptions, log *logger) {
	group := activation.SourceGroup{V4: o.prefixV4, V6: o.prefixV6}
	srv.limits = &activation.Limiter{Total: o.maxConns, PerSource: o.maxPerSource, Wait: o.maxWait, Group: group, Refusals: refusalsAtOnce}
	srv.gate = &activation.Gate{Total: o.maxHandshakes, PerSource: o.maxHandshakesPerSource, Group: group}
	go reportShed(ctx, srv.gate, o, log)
}

// serveOne runs one connection: the PROXY header first when the peer is a
// trusted load balancer, then TLS and rsync. It logs the outcome and
// returns the exit status for per-connection mode. Every bound counts from
// the accept: the first byte, the handshake; a session slot is taken only
// after the handshake.
func (srv *servePlan) serveOne(ctx context.Context, c net.Conn, log *logger) int {
	accepted := time.Now()
	firstBy := accepted.Add(srv.firstByte)
	if srv.proxies != nil && srv.proxies.Trusts(activation.ConnAddr(c)) {
		// The load balancer's header is its first byte; the client's
		// hello, if not read along with it, must follow by the same time.
		if err := activation.WaitFirstByte(c, firstBy, srv.firstByte); err != nil {
			c.Close()
			log.Logf("%v", err)
			return exitFailure
		}
	}
	pc, err := srv.proxies.Intake(c, accepted.Add(srv.HandshakeTimeout))
	if err != nil {
		c.Close()
		log.Logf("%v", err)
		if errors.Is(err, activation.ErrHealthCheck) {
			return exitOK
		}
		return exitFailure
	}
	addr := activation.ConnAddr(pc)
	var ticket *activation.Ticket
	if srv.gate != nil {
		ticket = srv.gate.Enter(addr, c)
		defer ticket.Leave()
	}
	if err := activation.WaitFirstByte(pc, firstBy, srv.firstByte); err != nil {
		c.Close()
		if !ticket.Shed() {
			log.Logf("%v", err)
		}
		return exitFailure
	}
	ticket.Talking()
	res := srv.ServeAdmitted(ctx, pc, tlsbridge.Intake{AcceptedAt: accepted, Admit: srv.admitter(addr, ticket)})
	srv.status.ended(res)
	if ticket.Shed() {
		// Counted in the periodic "shed" line, not one line each.
		return exitFailure
	}
	logResult(log, res)
	return connExit(res)
}

// admitter is what runs between a connection's handshake and its rsync: it
// leaves the gate, and takes a session slot or says why not.
func (srv *servePlan) admitter(addr netip.Addr, ticket *activation.Ticket) func(context.Context) (func(), error) {
	return func(ctx context.Context) (func(), error) {
		ticket.Leave()
		if srv.limits == nil {
			return nil, nil
		}
		release, err := srv.limits.Acquire(ctx, addr)
		if err == nil {
			return release, nil
		}
		why := err
		var le *activation.LimitError
		if errors.As(err, &le) && le.PerSource {
			why = fmt.Errorf("%w (from %s)", err, sourceName(srv.limits.Group.Key(addr)))
		}
		refusing, _ := srv.limits.Refusing()
		return refusing, why
	}
}

// sourceName is a source for the log: the address when the source is one
// address, else the prefix.
func sourceName(p netip.Prefix) string {
	if p.IsValid() && p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// reportShed logs, every shedReport, how many connections the gate closed
// to make room: one line, however many, so that a flood cannot flood the
// log.
func reportShed(ctx context.Context, g *activation.Gate, o *serveOptions, log *logger) {
	tick := time.NewTicker(shedReport)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, top, topN := g.Shed(); n > 0 {
			log.Logf("shed %d connection(s) before their TLS handshake in the last %v (most from %s: %d), past --max-handshakes-per-source %d or --max-handshakes %d",
				n, shedReport, sourceName(top), topN, o.maxHandshakesPerSource, o.maxHandshakes)
		}
	}
}
