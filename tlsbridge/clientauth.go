package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// ClientPolicy decides, during the TLS handshake, whether a client
// certificate may reach rsync. The CA bundle and CRLs are swapped atomically
// on Reload, like the server certificates.
type ClientPolicy struct {
	cfg  ClientAuthConfig
	mode ClientAuthMode
	// pins maps each --allow-spki pin to the admin's name for it ("" for
	// a bare pin).
	pins     map[certid.Pin]string
	allowCN  map[string]bool
	allowDNS map[string]bool
	allowURI map[string]bool
	allowEm  map[string]bool
	// hint is the CA list sent in the CertificateRequest, so a client
	// holding several certificates picks one of ours. Only a hint: the
	// decision uses the current material.
	hint *x509.CertPool
	cur  atomic.Pointer[clientMaterial]
	mu   sync.Mutex // serialises Reload
	// now is the clock; tests set it.
	now func() time.Time
}

// NewClientPolicy checks the flags and reads the CA bundle and CRLs. It
// returns nil (and no error) for --client-auth none.
func NewClientPolicy(c ClientAuthConfig) (*ClientPolicy, error) {
	mode, pins, err := c.resolve()
	if err != nil {
		return nil, err
	}
	if mode == ClientAuthNone {
		return nil, nil
	}
	p := &ClientPolicy{cfg: c, mode: mode, pins: pins, now: time.Now}
	p.allowCN = setOf(c.AllowCN, false)
	p.allowDNS = setOf(c.AllowDNS, true)
	p.allowURI = setOf(c.AllowURI, false)
	p.allowEm = map[string]bool{}
	for _, e := range c.AllowEmail {
		p.allowEm[normalEmail(e)] = true
	}
	m, err := p.load()
	if err != nil {
		return nil, err
	}
	p.hint = m.roots
	p.cur.Store(m)
	return p, nil
}

func setOf(vals []string, fold bool) map[string]bool {
	s := map[string]bool{}
	for _, v := range vals {
		if fold {
			v = strings.ToLower(strings.TrimSuffix(v, "."))
		}
		s[v] = true
	}
	return s
}

// normalEmail lowercases the domain only: the local part is the mail
// server's to interpret.
func normalEmail(e string) string {
	if i := strings.LastIndexByte(e, '@'); i >= 0 {
		return e[:i] + strings.ToLower(e[i:])
	}
	return e
}

// PinOnly reports whether the pins alone decide (--allow-spki without
// --client-ca). Nobody then vouches for anything a client certificate says
// about its holder, only for its key: the holder of a pinned key can sign
// itself a new certificate with any name in it.
func (p *ClientPolicy) PinOnly() bool { return p != nil && p.cfg.CAFile == "" }

// PinName is the admin's name for the pin of c's key (--allow-spki
// NAME=PIN), "" for a bare or unknown pin.
func (p *ClientPolicy) PinName(c *x509.Certificate) string {
	if p == nil || c == nil {
		return ""
	}
	return p.pins[certid.PinOf(c)]
}

// Mode is the policy's --client-auth mode.
func (p *ClientPolicy) Mode() ClientAuthMode { return p.mode }

// ClientCertError is a refusal of the client's certificate: who presented
// what, and which rule refused it.
type ClientCertError struct {
	// Subject is the certificate's subject, formatted like SSL_CLIENT_S_DN
	// and quoted if it is not plain printable text.
	Subject string
	// Serial is the serial number, formatted like SSL_CLIENT_M_SERIAL.
	Serial string
	// Reason names the rule that refused it.
	Reason string
}

func (e *ClientCertError) Error() string {
	if e.Subject == "" && e.Serial == "" {
		return e.Reason
	}
	return fmt.Sprintf("client certificate %s serial=%s refused: %s", e.Subject, e.Serial, e.Reason)
}

// VerifyConnection is the tls.Config hook: it runs inside the handshake, so
// a refusal reaches the client as a TLS alert (bad_certificate), and
// nothing after the handshake, rsync least of all, ever starts. In TLS 1.3
// it runs before the client's CertificateVerify is checked; that only
// matters for admission, and crypto/tls checks it before the handshake
// completes.
func (p *ClientPolicy) VerifyConnection(st tls.ConnectionState) error {
	if len(st.PeerCertificates) == 0 {
		if p.mode == ClientAuthRequire {
			// crypto/tls refuses this itself (RequireAnyClientCert)
			// with the more precise alert; this is the backstop.
			return &ClientCertError{Reason: noCertReason}
		}
		return nil
	}
	return p.Check(st.PeerCertificates)
}

const noCertReason = "client sent no certificate; --client-auth require needs one"

// Check applies the policy to a presented chain, leaf first.
func (p *ClientPolicy) Check(certs []*x509.Certificate) error {
	leaf := certs[0]
	m := p.cur.Load()
	now := p.now()
	refuse := func(format string, args ...any) error {
		return &ClientCertError{Subject: certid.LogText(certid.FormatDN(leaf.RawSubject)), Serial: certid.FormatSerial(leaf), Reason: fmt.Sprintf(format, args...)}
	}
	// The leaf's own dates first, as crypto/x509 does, so that an
	// expired certificate is called expired whoever issued it.
	if now.After(leaf.NotAfter) {
		return refuse("expired %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return refuse("not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if m.roots != nil {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots:         m.roots,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			var ua x509.UnknownAuthorityError
			var ci x509.CertificateInvalidError
			switch {
			case errors.As(err, &ua):
				return refuse("issued by %s, which is not in --client-ca", certid.LogText(certid.FormatDN(leaf.RawIssuer)))
			case errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage:
				return refuse("not meant for client authentication (its extended key usage lacks clientAuth)")
			}
			return refuse("does not verify against --client-ca: %v", strings.TrimPrefix(err.Error(), "x509: "))
		}
		if why := p.revoked(m, chains, now); why != "" {
			return refuse("%s", why)
		}
	}
	if why := p.allowed(leaf); why != "" {
		return refuse("%s", why)
	}
	return nil
}

// revoked looks every issued certificate of every verified chain up in the
// CRLs of its issuer.
func (p *ClientPolicy) revoked(m *clientMaterial, chains [][]*x509.Certificate, now time.Time) string {
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			c, issuer := chain[i], chain[i+1]
			for _, l := range m.crls {
				if !bytes.Equal(l.issuer.RawSubject, issuer.RawSubject) ||
					!bytes.Equal(l.issuer.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
					continue
				}
				if at, ok := l.revoked[c.SerialNumber.String()]; ok {
					who := "revoked"
					if i > 0 {
						who = fmt.Sprintf("its issuer %s is revoked", certid.LogText(certid.FormatDN(c.RawSubject)))
					}
					return fmt.Sprintf("%s %s (--crl %s)", who, at.UTC().Format(time.RFC3339), l.file)
				}
				if p.cfg.CRLStrict && stale(l, now) {
					return fmt.Sprintf("--crl %s is past its next update %s and --crl-strict is set", l.file, l.rl.NextUpdate.UTC().Format(time.RFC3339))
				}
			}
		}
	}
	return ""
}

func stale(l *loadedCRL, now time.Time) bool {
	return !l.rl.NextUpdate.IsZero() && now.After(l.rl.NextUpdate)
}

// allowed applies the allow-lists: none given admits every certificate
// that got this far; otherwise any one match admits.
func (p *ClientPolicy) allowed(leaf *x509.Certificate) string {
	var lists []string
	if len(p.allowCN) > 0 {
		if cn, ok := certid.FirstCN(leaf.RawSubject); ok && p.allowCN[cn] {
			return ""
		}
		lists = append(lists, "--allow-cn")
	}
	if len(p.allowDNS) > 0 {
		for _, d := range leaf.DNSNames {
			if p.allowDNS[strings.ToLower(strings.TrimSuffix(d, "."))] {
				return ""
			}
		}
		lists = append(lists, "--allow-dns")
	}
	if len(p.allowURI) > 0 {
		for _, u := range leaf.URIs {
			if p.allowURI[u.String()] {
				return ""
			}
		}
		lists = append(lists, "--allow-uri")
	}
	if len(p.allowEm) > 0 {
		for _, e := range leaf.EmailAddresses {
			if p.allowEm[normalEmail(e)] {
				return ""
			}
		}
		lists = append(lists, "--allow-email")
	}
	if len(p.pins) > 0 {
		if _, ok := p.pins[certid.PinOf(leaf)]; ok {
			return ""
		}
		lists = append(lists, "--allow-spki")
	}
	if len(lists) == 0 {
		return ""
	}
	why := "not in " + strings.Join(lists, " or ")
	if len(p.pins) > 0 {
		// The admin who means to pin this client reads its pin here.
		why += " (its key is " + certid.PinOf(leaf).String() + ")"
	}
	return why
}

// Warnings returns what an admitted chain's check found worth a log line:
// CRLs of its issuers that are past their next update.
func (p *ClientPolicy) Warnings(certs []*x509.Certificate) []string {
	if p == nil || len(certs) == 0 {
		return nil
	}
	m := p.cur.Load()
	now := p.now()
	var w []string
	for _, l := range m.crls {
		if !stale(l, now) {
			continue
		}
		for _, c := range certs {
			if bytes.Equal(c.RawIssuer, l.issuer.RawSubject) {
				w = append(w, fmt.Sprintf("--crl %s is past its next update %s; revocations since then are unknown (--crl-strict refuses clients instead)",
					l.file, l.rl.NextUpdate.UTC().Format(time.RFC3339)))
				break
			}
		}
	}
	return w
}

// AsClientCertError returns the client-certificate refusal inside a
// handshake error: the policy's own, or one for a client that sent no
// certificate where one is required; ok is false for other errors.
func AsClientCertError(err error) (ce *ClientCertError, ok bool) {
	if errors.As(err, &ce) {
		return ce, true
	}
	if tlserr.NoClientCertificate(err) {
		return &ClientCertError{Reason: noCertReason}, true
	}
	return nil, false
}

// ExplainClientCert turns a handshake error caused by the client
// certificate policy into the log message; ok is false for other errors.
func ExplainClientCert(err error) (msg string, ok bool) {
	if ce, ok := AsClientCertError(err); ok {
		return ce.Error(), true
	}
	return "", false
}
