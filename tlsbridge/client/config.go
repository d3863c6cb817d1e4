package client

// Client side: the TLS policy for "connect" and "check" in one place.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
)

// Trust says how the server certificate chain is checked.
type Trust int

const (
	// TrustSystem verifies against the system roots (RSYNC_SSL_CA_CERT unset).
	TrustSystem Trust = iota
	// TrustCAFile verifies against the CAs in Options.CAFile.
	TrustCAFile
	// TrustNone checks no chain: RSYNC_SSL_CA_CERT set but empty, or only
	// --pin given (then the pin is the whole check).
	TrustNone
)

// Options is what the user asked for, after flags have overridden the
// environment.
type Options struct {
	Host              string // name or IP literal, brackets already removed
	Port              string
	ServerName        string // overrides Host for SNI and the name check
	Trust             Trust
	CAFile            string
	CertFile, KeyFile string
	SkipHostnameCheck bool
	Pins              []certid.Pin
	ConnectTimeout    time.Duration
	DataPath          DataPath // who seals the records after the handshake
}

// HostIsIP reports whether the host is an address literal: such a host gets
// no SNI (RFC 6066 forbids it) and is matched against the IP SANs.
func (o *Options) HostIsIP() bool { return net.ParseIP(o.Host) != nil }

// checkName is the name the certificate must carry.
func (o *Options) checkName() string {
	if o.ServerName != "" {
		return o.ServerName
	}
	return o.Host
}

// Describe says in a few words how the server is verified, for check and
// for warnings.
func (o *Options) Describe() string {
	var parts []string
	switch o.Trust {
	case TrustSystem:
		parts = append(parts, "chain against the system roots")
	case TrustCAFile:
		parts = append(parts, "chain against "+o.CAFile)
	}
	if o.Trust != TrustNone {
		if o.SkipHostnameCheck {
			parts = append(parts, "name not checked")
		} else {
			parts = append(parts, "name "+o.checkName())
		}
	}
	if len(o.Pins) > 0 {
		parts = append(parts, "key pin")
	}
	if len(parts) == 0 {
		return "nothing (no verification)"
	}
	return strings.Join(parts, ", ")
}

// Unverified reports whether nothing at all checks the server's identity.
func (o *Options) Unverified() bool { return o.Trust == TrustNone && len(o.Pins) == 0 }

// TLSConfig is the whole client TLS policy: TLS 1.2 or newer, Go's
// default suites, SNI only for names, and the server checked as the options
// say.
func TLSConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if name := o.checkName(); net.ParseIP(name) == nil {
		cfg.ServerName = name
	}
	if o.CertFile != "" || o.KeyFile != "" {
		certFile, keyFile := o.CertFile, o.KeyFile
		if certFile == "" {
			return nil, errors.New("--key (RSYNC_SSL_KEY) needs --cert (RSYNC_SSL_CERT)")
		}
		if keyFile == "" {
			// openssl s_client -cert accepts a file holding both, and
			// rsync-ssl users rely on it.
			keyFile = certFile
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s: %w (check --cert/--key or RSYNC_SSL_CERT/RSYNC_SSL_KEY)", certFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	switch o.Trust {
	case TrustSystem:
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("load system roots: %w (pass --ca FILE)", err)
		}
	case TrustCAFile:
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w (check --ca or RSYNC_SSL_CA_CERT)", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read CA file %s: no PEM certificate in it (check --ca or RSYNC_SSL_CA_CERT)", o.CAFile)
		}
	}
	// Go's built-in check cannot verify the chain without the name
	// (RSYNC_SSL_SKIP_HOSTNAME_CHECK), check a pin, or say which date or
	// which names were wrong, so the check is ours and runs on every
	// handshake through VerifyConnection.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyServer(cs.PeerCertificates, roots, o, time.Now())
	}
	return cfg, nil
}

// CertError is a server certificate the policy refused; Leaf lets check
// still show what the server presented.
type CertError struct {
	Kind FailKind
	Leaf *x509.Certificate
	Err  error
	Hint string
}

func (e *CertError) Error() string { return e.Err.Error() }
func (e *CertError) Unwrap() error { return e.Err }

const dateFmt = "2006-01-02 15:04:05 UTC"

func verifyServer(certs []*x509.Certificate, roots *x509.CertPool, o Options, now time.Time) error {
	if len(certs) == 0 {
		return &CertError{Kind: FailOther, Err: errors.New("server sent no certificate")}
	}
	leaf := certs[0]
	if len(o.Pins) > 0 {
		got := certid.PinOf(leaf)
		ok := false
		for _, p := range o.Pins {
			ok = ok || p == got
		}
		if !ok {
			want := make([]string, len(o.Pins))
			for i, p := range o.Pins {
				want[i] = p.String()
			}
			return &CertError{Kind: FailPinMismatch, Leaf: leaf,
				Err:  fmt.Errorf("server key %s does not match the pin %s", got, strings.Join(want, ", ")),
				Hint: "if the server's key changed on purpose, pass --pin " + got.String() + " or set RSYNC_SSL_PIN=" + got.String()}
		}
	}
	if o.Trust == TrustNone {
		return nil
	}
	// Dates first: x509 reports an expired leaf from an unknown CA as
	// "unknown authority", which hides the problem the admin can fix.
	for i, c := range certs {
		if err := checkDates(c, i == 0, now); err != nil {
			err.Leaf = leaf
			return err
		}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			hint := "pass --ca FILE or set RSYNC_SSL_CA_CERT"
			if o.Trust == TrustCAFile {
				hint = o.CAFile + " did not sign it: pass the CA that did with --ca or RSYNC_SSL_CA_CERT"
			}
			return &CertError{Kind: FailUnknownAuthority, Leaf: leaf,
				Err:  fmt.Errorf("certificate signed by unknown authority %q", leaf.Issuer.String()),
				Hint: hint}
		}
		return &CertError{Kind: FailOther, Leaf: leaf, Err: fmt.Errorf("certificate: %w", err)}
	}
	if o.SkipHostnameCheck {
		return nil
	}
	name := o.checkName()
	if err := leaf.VerifyHostname(name); err != nil {
		names := certid.Names(leaf)
		var have string
		if len(names) == 0 {
			have = fmt.Sprintf("certificate has no DNS or IP names (subject %q)", leaf.Subject.String())
		} else {
			have = "certificate is for " + strings.Join(names, ", ")
		}
		return &CertError{Kind: FailNameMismatch, Leaf: leaf,
			Err:  fmt.Errorf("%s, not %s", have, name),
			Hint: "connect with one of its names, pass --servername NAME, or set RSYNC_SSL_SKIP_HOSTNAME_CHECK=1"}
	}
	return nil
}

func checkDates(c *x509.Certificate, isLeaf bool, now time.Time) *CertError {
	what := "certificate"
	if !isLeaf {
		what = fmt.Sprintf("issuing certificate %q", c.Subject.String())
	}
	switch {
	case now.After(c.NotAfter):
		return &CertError{Kind: FailExpired,
			Err: fmt.Errorf("%s expired %s (valid %s to %s, now %s)", what,
				c.NotAfter.UTC().Format(dateFmt), c.NotBefore.UTC().Format(dateFmt),
				c.NotAfter.UTC().Format(dateFmt), now.UTC().Format(dateFmt)),
			Hint: "the server must renew it; if it is not old, check this machine's clock"}
	case now.Before(c.NotBefore):
		return &CertError{Kind: FailNotYetValid,
			Err: fmt.Errorf("%s not valid until %s (valid %s to %s, now %s)", what,
				c.NotBefore.UTC().Format(dateFmt), c.NotBefore.UTC().Format(dateFmt),
				c.NotAfter.UTC().Format(dateFmt), now.UTC().Format(dateFmt)),
			Hint: "check the clocks of this machine and of the server"}
	}
	return nil
}
