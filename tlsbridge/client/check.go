package client

// Client diagnostics: walk every hop to a server, time it, and stop at the
// first one that breaks.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// ClientGreeting is what we announce to the daemon: protocol 32 with the
// digest list, without which a protocol-32 daemon aborts the exchange.
const ClientGreeting = "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n"

// Report is the result of Check.
type Report struct {
	Target string      `json:"target"`
	Module string      `json:"module,omitempty"`
	OK     bool        `json:"ok"`
	Hops   []HopReport `json:"hops"`
}

// HopReport is one hop: what it found, how long it took, or why it broke.
type HopReport struct {
	Hop    string        `json:"hop"` // resolve, tcp, tls, rsync, module
	OK     bool          `json:"ok"`
	Millis float64       `json:"ms"`
	Detail string        `json:"detail"`
	Error  string        `json:"error,omitempty"`
	Kind   FailKind      `json:"kind,omitempty"`
	Hint   string        `json:"hint,omitempty"`
	Addrs  []string      `json:"addresses,omitempty"`
	TLS    *TLSReport    `json:"tls,omitempty"`
	Rsync  *DaemonAnswer `json:"rsync,omitempty"`
}

// TLSReport describes the session and the server certificate.
type TLSReport struct {
	Version  string    `json:"version,omitempty"`
	Cipher   string    `json:"cipher,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Issuer   string    `json:"issuer,omitempty"`
	Names    []string  `json:"names,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitempty"`
	DaysLeft int       `json:"days_left"`
	Pin      string    `json:"pin,omitempty"`
	Verified string    `json:"verified"`
}

// DaemonAnswer is what the daemon said.
type DaemonAnswer struct {
	Greeting string   `json:"greeting,omitempty"`
	Protocol string   `json:"protocol,omitempty"`
	Modules  []string `json:"modules,omitempty"`
	Answer   string   `json:"answer,omitempty"` // open, needs auth, denied
	Lines    []string `json:"lines,omitempty"`  // motd and @ERROR text
}

// CheckOptions says how far Check goes with a module.
type CheckOptions struct {
	// Module is the module to look for; "" lists them all.
	Module string
	// Open asks the daemon for Module itself instead of looking for it
	// in the listing: it tells open from needs-auth from denied, and
	// makes the daemon log a session (see checker.openModule).
	Open bool
	// WarnDays fails the check when the server's certificate has this many
	// whole days left or fewer; 0 still fails one that ends within a day.
	// Negative: no expiry check beyond verification.
	WarnDays int
}

// Check walks resolve, TCP, TLS, the rsync greeting and the module list
// (or the answer for a module) with d's policy, and stops at the first hop
// that breaks. Every hop is bounded by d's ConnectTimeout (30s if unset).
func Check(ctx context.Context, d *Dialer, o CheckOptions) Report {
	ck := &checker{d: d, o: o, r: Report{Target: d.Target(), Module: o.Module}, timeout: d.Opts.ConnectTimeout}
	if ck.timeout <= 0 {
		ck.timeout = 30 * time.Second
	}
	defer ck.close()
	_ = ck.step(ctx, "resolve", ck.resolve) &&
		ck.step(ctx, "tcp", ck.dialTCP) &&
		ck.step(ctx, "tls", ck.handshake) &&
		ck.step(ctx, "rsync", ck.greeting) &&
		ck.step(ctx, "module", ck.module)
	ck.r.OK = len(ck.r.Hops) == 5
	for _, h := range ck.r.Hops {
		ck.r.OK = ck.r.OK && h.OK
		if h.Hop == "tls" && h.OK && h.TLS != nil {
			if e := expiryHop(h.TLS, o.WarnDays); e != nil {
				ck.r.Hops = append(ck.r.Hops, *e)
				ck.r.OK = false
				break
			}
		}
	}
	return ck.r
}

// expiryHop is a failed "expiry" hop when the certificate has warnDays
// whole days left or fewer (a monitoring job's --warn-days), nil when it
// has more. The other hops are still walked: the server works, for now.
func expiryHop(t *TLSReport, warnDays int) *HopReport {
	if warnDays < 0 || t.DaysLeft > warnDays {
		return nil
	}
	return &HopReport{Hop: "expiry", Kind: FailExpiry,
		Error:  fmt.Sprintf("the server's certificate expires %s, in %d days (--warn-days %d)", t.NotAfter.Format(time.DateOnly), t.DaysLeft, warnDays),
		Hint:   "renew it on the server; serve takes the renewed files within seconds, or at once with \"systemctl reload rsync-ssl.service\"",
		Detail: t.NotAfter.Format(time.DateOnly)}
}

// checker carries what one hop hands the next.
type checker struct {
	d       *Dialer
	o       CheckOptions
	r       Report
	timeout time.Duration

	ips  []net.IP
	ip   net.IP
	raw  net.Conn
	c    *Conn
	br   *bufio.Reader
	info DaemonAnswer
}

func (ck *checker) close() {
	if ck.c != nil {
		ck.c.Close() // close_notify first, so the server ends at once
	}
	if ck.raw != nil {
		ck.raw.Close()
	}
}

// step runs one hop under its own timeout and records it; false stops
// the walk.
func (ck *checker) step(ctx context.Context, name string, f func(context.Context, *HopReport) error) bool {
	h := HopReport{Hop: name}
	sctx, cancel := context.WithTimeout(ctx, ck.timeout)
	start := time.Now()
	err := f(sctx, &h)
	cancel()
	h.Millis = math.Round(float64(time.Since(start).Microseconds())/10) / 100
	h.OK = err == nil
	if err != nil {
		h.Error, h.Kind = err.Error(), FailKindOf(err)
		var he *HopError
		if errors.As(err, &he) {
			h.Hint = he.Hint
			he.Hint = ""
			h.Error = he.Error()
		}
	}
	ck.r.Hops = append(ck.r.Hops, h)
	return h.OK
}

func (ck *checker) resolve(ctx context.Context, h *HopReport) error {
	var err error
	ck.ips, err = ck.d.Resolve(ctx)
	for _, ip := range ck.ips {
		h.Addrs = append(h.Addrs, ip.String())
	}
	h.Detail = ck.d.Opts.Host + " -> " + strings.Join(h.Addrs, ", ")
	return err
}

func (ck *checker) dialTCP(ctx context.Context, h *HopReport) error {
	var err error
	ck.raw, ck.ip, err = ck.d.DialTCP(ctx, ck.ips)
	if err == nil {
		h.Detail = "connected to " + net.JoinHostPort(ck.ip.String(), ck.d.Opts.Port)
	}
	return err
}

func (ck *checker) handshake(ctx context.Context, h *HopReport) error {
	c, err := ck.d.Handshake(ctx, ck.raw, ck.ip)
	h.TLS = &TLSReport{Verified: "verified: " + ck.d.Opts.Describe()}
	if ck.d.Opts.Unverified() {
		h.TLS.Verified = "NOT verified (no CA and no pin)"
	}
	var ce *CertError
	switch {
	case err == nil:
		ck.c, ck.br = c, bufio.NewReader(c)
		cs := c.ConnectionState()
		h.TLS.Version = tls.VersionName(cs.Version)
		h.TLS.Cipher = tls.CipherSuiteName(cs.CipherSuite)
		h.TLS.fill(cs.PeerCertificates[0])
		if h.TLS.DaysLeft <= 0 {
			h.Hint = "the server certificate expires within a day: renew it (and reload serve)"
		}
	case errors.As(err, &ce) && ce.Leaf != nil:
		h.TLS.fill(ce.Leaf)
		h.TLS.Verified = "REFUSED"
	default:
		h.TLS = nil
	}
	if h.TLS != nil {
		h.Detail = h.TLS.summary()
	}
	return err
}

func (ck *checker) greeting(ctx context.Context, h *HopReport) error {
	h.Rsync = &ck.info
	c := ck.c
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := c.Write([]byte(ClientGreeting)); err != nil {
		return &HopError{Hop: "rsync greeting to", Peer: c.Peer, Kind: FailOther, Err: err}
	}
	line, err := ck.br.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, RsyncGreeting) {
		he := &HopError{Hop: "rsync greeting from", Peer: c.Peer, Kind: FailNotRsync,
			Hint: "the TLS service on this port does not lead to rsync --daemon; check the port and the server's log"}
		switch {
		case line != "":
			he.Err = fmt.Errorf("the TLS server is not an rsync daemon: it sent %q", clip(line))
		case err != nil && errors.Is(err, context.DeadlineExceeded) || tlserr.IsTimeout(err):
			he.Err = fmt.Errorf("no rsync greeting within %v", ck.timeout)
		default:
			he.Err = errors.New("the TLS server closed the connection without an rsync greeting")
		}
		return he
	}
	ck.info.Greeting = line
	if f := strings.Fields(strings.TrimPrefix(line, RsyncGreeting)); len(f) > 0 {
		ck.info.Protocol = f[0]
	}
	h.Detail = fmt.Sprintf("protocol %s (%q)", ck.info.Protocol, clip(line))
	return nil
}

// module lists the modules, or looks for one: in the listing by default,
// since a listing is all the daemon logs no error about; by asking for it
// with Open.
func (ck *checker) module(ctx context.Context, h *HopReport) error {
	h.Rsync = &ck.info
	dl, _ := ctx.Deadline()
	ck.c.SetDeadline(dl)
	m := ck.o.Module
	if m != "" && ck.o.Open {
		return ck.openModule(h)
	}
	if err := ck.request("#list", "listing"); err != nil {
		return err
	}
	if m == "" {
		h.Detail = fmt.Sprintf("%s: %s", modulesCount(len(ck.info.Modules)), strings.Join(ck.info.Modules, ", "))
		return nil
	}
	for _, name := range ck.info.Modules {
		if name == m {
			ck.info.Answer = "listed"
			h.Detail = "module " + m + ": listed"
			return nil
		}
	}
	return &HopError{Hop: "module " + m + " at", Peer: ck.c.Peer, Kind: FailOther,
		Err:  fmt.Errorf("not in the module listing (%s: %s)", modulesCount(len(ck.info.Modules)), strings.Join(ck.info.Modules, ", ")),
		Hint: "a module with \"list = no\" is hidden: pass --open to ask for it directly"}
}

// openModule asks for the module itself. On "@RSYNCD: OK" it sends the
// arguments "--server --sender --version": the daemon then prints its
// version into its log and exits 0 on its own, where closing the
// connection instead would make it log "module is read only" and an rsync
// error. A module that needs a password is left unanswered (the daemon
// logs that).
func (ck *checker) openModule(h *HopReport) error {
	m := ck.o.Module
	if err := ck.request(m, "module "+m); err != nil {
		return err
	}
	switch ck.info.Answer {
	case "open":
		ck.c.Write([]byte("--server\x00--sender\x00--version\x00\x00"))
		ck.c.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(ck.br, 1<<20))
		h.Detail = "module " + m + ": open"
	case "needs auth":
		h.Detail = "module " + m + ": needs auth (a user and password: RSYNC_PASSWORD or --password-file)"
	}
	return nil
}

// request sends a module line and reads the daemon's answer into ck.info:
// the listing up to "@RSYNCD: EXIT", or the module's first verdict.
func (ck *checker) request(req, what string) error {
	c := ck.c
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: err}
	}
	list := req == "#list"
	for i := 0; i < 100000; i++ {
		line, err := ck.br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		switch {
		case list && line == "@RSYNCD: EXIT":
			return nil
		case !list && line == "@RSYNCD: OK":
			ck.info.Answer = "open"
			return nil
		case !list && strings.HasPrefix(line, "@RSYNCD: AUTHREQD"):
			ck.info.Answer = "needs auth"
			return nil
		case strings.HasPrefix(line, "@ERROR"):
			ck.info.Answer = "denied"
			ck.info.Lines = append(ck.info.Lines, line)
			hint := "the server's rsyncd.conf refuses it (hosts allow/deny, module name); its log says why"
			switch {
			case strings.Contains(line, "Unknown module"):
				hint = "run check without MODULE to list the modules"
			case strings.Contains(line, "max connections"):
				// rsync's words past its "max connections", and
				// serve's past --max-conns: nothing is refused.
				hint = "the server is at its connection limit (rsyncd.conf \"max connections\", or serve --max-conns): try again later"
			}
			return &HopError{Hop: what + " at", Peer: c.Peer, Kind: FailOther,
				Err: fmt.Errorf("denied: %s", clip(line)), Hint: hint}
		case list && line != "" && !strings.HasPrefix(line, "@"):
			name, _, _ := strings.Cut(line, "\t")
			name = strings.TrimSpace(name)
			if name != "" && len(ck.info.Modules) < 1000 {
				ck.info.Modules = append(ck.info.Modules, name)
			}
		case line != "" && len(ck.info.Lines) < 50:
			ck.info.Lines = append(ck.info.Lines, line)
		}
		if err != nil {
			e := errors.New("the daemon closed the connection before answering")
			if tlserr.IsTimeout(err) {
				e = fmt.Errorf("no answer within %v", ck.timeout)
			}
			return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: e,
				Hint: "the server's log says why"}
		}
	}
	return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: errors.New("answer too long")}
}

func (t *TLSReport) fill(leaf *x509.Certificate) {
	t.Subject = leaf.Subject.String()
	t.Issuer = leaf.Issuer.String()
	t.Names = certid.Names(leaf)
	t.Serial = certid.FormatSerial(leaf)
	t.NotAfter = leaf.NotAfter.UTC()
	t.DaysLeft = int(math.Floor(time.Until(leaf.NotAfter).Hours() / 24))
	t.Pin = certid.PinOf(leaf).String()
}

func (t *TLSReport) summary() string {
	var parts []string
	if t.Version != "" {
		parts = append(parts, t.Version+" "+t.Cipher)
	}
	parts = append(parts,
		fmt.Sprintf("subject %q", t.Subject),
		fmt.Sprintf("issuer %q", t.Issuer),
		"names "+strings.Join(t.Names, " "),
		t.expiry(),
		"key "+t.Pin,
		t.Verified)
	return strings.Join(parts, "; ")
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
