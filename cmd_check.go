package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/client"
)

var checkHelp = commandHelp{
	synopsis: "check [flags] HOST[:PORT] [MODULE]\ncheck [flags] rsyncs://HOST[:PORT]/[MODULE]",
	about: `
Walks every hop to an rsync-over-TLS server and prints one line per hop with
its time: name lookup, TCP connect, TLS (version, cipher, certificate subject,
issuer, names, days to expiry, key pin, verification), the rsync greeting
(protocol version), then the module list, or with MODULE whether the listing
has it. A listing is all the daemon logs no error about, so a health check
leaves the server's log clean; with --open the module is asked for itself
(open, needs auth, denied), and the daemon logs that session. It stops at the
first broken hop and says what to try. IPv6 addresses go in brackets when a
port follows: [::1]:874.

It verifies exactly as "connect" would with the same flags and environment
(RSYNC_PORT, RSYNC_SSL_PORT, RSYNC_SSL_CA_CERT, RSYNC_SSL_CERT, RSYNC_SSL_KEY,
RSYNC_SSL_PIN, RSYNC_SSL_SKIP_HOSTNAME_CHECK).`,
	after: `
Exit status: 0 when every hop works, 1 when one is broken or the certificate
expires within --warn-days, 2 on a usage error. For monitoring:
  rsync-ssl-shim check --warn-days 14 HOST`,
}

// splitTarget reads HOST, HOST:PORT, [V6], [V6]:PORT, a bare IPv6 address,
// or an rsyncs:// URL (whose module counts when MODULE is not given).
func splitTarget(s string) (host, port, module string, err error) {
	if client.IsRsyncsURL(s) {
		u, err := client.ParseRsyncsURL(s)
		return u.Host, u.Port, u.Module, err
	}
	h := s
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end > 0 && strings.HasPrefix(s[end+1:], ":") {
			h, port = s[:end+1], s[end+2:]
		}
	} else if strings.Count(s, ":") == 1 {
		h, port, _ = strings.Cut(s, ":")
	}
	if port != "" {
		if port, err = client.ParsePort(port); err != nil {
			return "", "", "", fmt.Errorf("%q: %w", s, err)
		}
	}
	host, err = client.ParseHost(h)
	return host, port, "", err
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", checkHelp, stderr)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object instead of lines")
	warnDays := fs.Int("warn-days", -1, "fail (exit 1, naming the date) when the server's certificate has `N` whole days\nleft or fewer (0: one that ends within a day); unset, only an expired one fails")
	open := fs.Bool("open", false, "with MODULE: ask the daemon for the module itself instead of looking for it\nin the listing (tells open, needs auth and denied apart; hidden modules need\nit; the daemon logs the session)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "rsync-ssl-shim check: %v\n\n", err)
		fs.Usage()
		return exitUsage
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageErr(fmt.Errorf("want HOST[:PORT] [MODULE], got %d arguments", fs.NArg()))
	}
	host, port, module, err := splitTarget(fs.Arg(0))
	if err != nil {
		return usageErr(err)
	}
	if fs.NArg() == 2 {
		module = fs.Arg(1)
	}
	if strings.ContainsAny(module, "\n\r") || strings.HasPrefix(module, "#") {
		return usageErr(fmt.Errorf("invalid module name %q", module))
	}
	o, warn, err := cf.options(fs, host, port, os.LookupEnv)
	if err != nil {
		return usageErr(err)
	}
	o.DataPath = client.PathUser // check carries no session: no key log, no record-bounded reads
	d, err := client.NewDialer(o)
	if err != nil {
		fmt.Fprintf(stderr, "rsync-ssl-shim check: %v\n", err)
		return exitUsage
	}
	r := client.Check(context.Background(), d, client.CheckOptions{Module: module, Open: *open, WarnDays: *warnDays})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(r)
	} else {
		printReport(stdout, r, warn)
	}
	if !r.OK {
		return exitFailure
	}
	return exitOK
}

func printReport(w io.Writer, r client.Report, warn string) {
	for _, h := range r.Hops {
		status := "ok  "
		if !h.OK {
			status = "FAIL"
		}
		detail := h.Detail
		if !h.OK && detail == "" {
			detail, h.Error = h.Error, ""
		}
		fmt.Fprintf(w, "%s  %-7s %8.2f ms  %s\n", status, h.Hop, h.Millis, detail)
		if h.Error != "" {
			fmt.Fprintf(w, "      error: %s\n", h.Error)
		}
		if h.Hint != "" {
			fmt.Fprintf(w, "      try: %s\n", h.Hint)
		}
	}
	if warn != "" {
		fmt.Fprintf(w, "warning: %s: the server is not verified\n", warn)
	}
	if r.OK {
		fmt.Fprintf(w, "all %d hops work\n", len(r.Hops))
	}
}
