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
	"math"
	"net"
	"strings"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
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

// Check walks resolve, TCP, TLS, the rsync greeting and the module list
// (or the answer for module) with d's policy.
func Check(ctx context.Context, d *Dialer, module string) Report {
	r := Report{Target: d.Target(), Module: module}
	timeout := d.Opts.ConnectTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	step := func(name string, f func(ctx context.Context, h *HopReport) error) bool {
		h := HopReport{Hop: name}
		sctx, cancel := context.WithTimeout(ctx, timeout)
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
		r.Hops = append(r.Hops, h)
		return h.OK
	}

	var ips []net.IP
	if !step("resolve", func(ctx context.Context, h *HopReport) error {
		var err error
		ips, err = d.Resolve(ctx)
		for _, ip := range ips {
			h.Addrs = append(h.Addrs, ip.String())
		}
		h.Detail = d.Opts.Host + " -> " + strings.Join(h.Addrs, ", ")
		return err
	}) {
		return r
	}
	var raw net.Conn
	var ip net.IP
	if !step("tcp", func(ctx context.Context, h *HopReport) error {
		var err error
		raw, ip, err = d.DialTCP(ctx, ips)
		if err == nil {
			h.Detail = "connected to " + net.JoinHostPort(ip.String(), d.Opts.Port)
		}
		return err
	}) {
		return r
	}
	defer raw.Close()
	var c *Conn
	if !step("tls", func(ctx context.Context, h *HopReport) error {
		var err error
		c, err = d.Handshake(ctx, raw, ip)
		h.TLS = &TLSReport{Verified: "verified: " + d.Opts.Describe()}
		if d.Opts.Unverified() {
			h.TLS.Verified = "NOT verified (no CA and no pin)"
		}
		var ce *CertError
		switch {
		case err == nil:
			cs := c.ConnectionState()
			h.TLS.Version = tls.VersionName(cs.Version)
			h.TLS.Cipher = tls.CipherSuiteName(cs.CipherSuite)
			h.TLS.fill(cs.PeerCertificates[0])
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
	}) {
		return r
	}
	defer c.Close()

	br := bufio.NewReader(c)
	info := &DaemonAnswer{}
	if !step("rsync", func(ctx context.Context, h *HopReport) error {
		h.Rsync = info
		dl, _ := ctx.Deadline()
		c.SetDeadline(dl)
		if _, err := c.Write([]byte(ClientGreeting)); err != nil {
			return &HopError{Hop: "rsync greeting to", Peer: c.Peer, Kind: FailOther, Err: err}
		}
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, RsyncGreeting) {
			he := &HopError{Hop: "rsync greeting from", Peer: c.Peer, Kind: FailNotRsync,
				Hint: "the TLS service on this port does not lead to rsync --daemon; check the port and the server's log"}
			switch {
			case line != "":
				he.Err = fmt.Errorf("the TLS server is not an rsync daemon: it sent %q", clip(line))
			case err != nil && errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err):
				he.Err = fmt.Errorf("no rsync greeting within %v", timeout)
			default:
				he.Err = errors.New("the TLS server closed the connection without an rsync greeting")
			}
			return he
		}
		info.Greeting = line
		if f := strings.Fields(strings.TrimPrefix(line, RsyncGreeting)); len(f) > 0 {
			info.Protocol = f[0]
		}
		h.Detail = fmt.Sprintf("protocol %s (%q)", info.Protocol, clip(line))
		return nil
	}) {
		return r
	}

	step("module", func(ctx context.Context, h *HopReport) error {
		h.Rsync = info
		dl, _ := ctx.Deadline()
		c.SetDeadline(dl)
		req := "#list"
		if module != "" {
			req = module
		}
		if _, err := c.Write([]byte(req + "\n")); err != nil {
			return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: err}
		}
		for i := 0; i < 100000; i++ {
			line, err := br.ReadString('\n')
			line = strings.TrimRight(line, "\r\n")
			switch {
			case module == "" && line == "@RSYNCD: EXIT":
				h.Detail = fmt.Sprintf("%d modules: %s", len(info.Modules), strings.Join(info.Modules, ", "))
				return nil
			case module != "" && line == "@RSYNCD: OK":
				info.Answer = "open"
				h.Detail = "module " + module + ": open"
				return nil
			case module != "" && strings.HasPrefix(line, "@RSYNCD: AUTHREQD"):
				info.Answer = "needs auth"
				h.Detail = "module " + module + ": needs auth (a user and password: RSYNC_PASSWORD or --password-file)"
				return nil
			case strings.HasPrefix(line, "@ERROR"):
				info.Answer = "denied"
				info.Lines = append(info.Lines, line)
				what := "listing"
				if module != "" {
					what = "module " + module
				}
				hint := "the server's rsyncd.conf refuses it (hosts allow/deny, module name); its log says why"
				if strings.Contains(line, "Unknown module") {
					hint = "run check without MODULE to list the modules"
				}
				return &HopError{Hop: what + " at", Peer: c.Peer, Kind: FailOther,
					Err: fmt.Errorf("denied: %s", clip(line)), Hint: hint}
			case module == "" && line != "" && !strings.HasPrefix(line, "@"):
				name, _, _ := strings.Cut(line, "\t")
				name = strings.TrimSpace(name)
				if name != "" && len(info.Modules) < 1000 {
					info.Modules = append(info.Modules, name)
				}
			case line != "" && len(info.Lines) < 50:
				info.Lines = append(info.Lines, line)
			}
			if err != nil {
				e := errors.New("the daemon closed the connection before answering")
				if isNetTimeout(err) {
					e = fmt.Errorf("no answer within %v", timeout)
				}
				return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: e,
					Hint: "the server's log says why"}
			}
		}
		return &HopError{Hop: "module request to", Peer: c.Peer, Kind: FailOther, Err: errors.New("answer too long")}
	})
	r.OK = true
	for _, h := range r.Hops {
		r.OK = r.OK && h.OK
	}
	return r
}

func (t *TLSReport) fill(leaf *x509.Certificate) {
	t.Subject = leaf.Subject.String()
	t.Issuer = leaf.Issuer.String()
	t.Names = certid.Names(leaf)
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
		fmt.Sprintf("expires %s (%d days)", t.NotAfter.Format("2006-01-02"), t.DaysLeft),
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

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
