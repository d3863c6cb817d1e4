package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// ClientAuthMode is what the server asks of a client's certificate.
type ClientAuthMode int

const (
	// ClientAuthNone asks for no certificate; rsync sees SSL_CLIENT_VERIFY=NONE.
	ClientAuthNone ClientAuthMode = iota
	// ClientAuthOptional asks for one and checks it if given; a client
	// without one is served with SSL_CLIENT_VERIFY=NONE, so rsyncd.conf or
	// a hook must decide what such a client may do.
	ClientAuthOptional
	// ClientAuthRequire refuses a client without a certificate that passes.
	ClientAuthRequire
)

func (m ClientAuthMode) String() string {
	switch m {
	case ClientAuthOptional:
		return "optional"
	case ClientAuthRequire:
		return "require"
	}
	return "none"
}

// ClientAuthConfig is the client-certificate part of the server's flags.
type ClientAuthConfig struct {
	// Mode is "none", "optional", "require", or "" for the default:
	// require when CAFile or AllowSPKI is given, else none.
	Mode      string
	CAFile    string
	CRLFiles  []string
	CRLStrict bool
	AllowCN   []string
	AllowDNS  []string
	AllowURI  []string
	// AllowEmail matches rfc822Name entries of the subject alternative
	// names, not an emailAddress attribute in the subject.
	AllowEmail []string
	// AllowSPKI pins keys: "sha256:" and the base64 SHA-256 of the
	// certificate's SubjectPublicKeyInfo, optionally after "NAME=" (the
	// admin's name for the key's holder, pin-only mode only), read by
	// ParsePin like the
	// client's --pin.
	// Without CAFile these pins are the whole policy: any certificate,
	// self-signed included, whose key is pinned is admitted.
	AllowSPKI []string
}

// ErrClientAuthUsage marks a ClientAuthConfig whose flags do not fit
// together; the error text names the flag and the fix.
var ErrClientAuthUsage = errors.New("client certificate flags")

type usageErr struct{ msg string }

func (e usageErr) Error() string   { return e.msg }
func (e usageErr) Is(t error) bool { return t == ErrClientAuthUsage }

// ParseClientAuth reads --client-auth.
func ParseClientAuth(s string) (ClientAuthMode, error) {
	switch s {
	case "none":
		return ClientAuthNone, nil
	case "optional":
		return ClientAuthOptional, nil
	case "require":
		return ClientAuthRequire, nil
	}
	return 0, usageErr{fmt.Sprintf("--client-auth %q: give none, optional or require", s)}
}

// resolve checks that the flags fit together and fills in the default mode.
func (c ClientAuthConfig) resolve() (ClientAuthMode, map[certid.Pin]string, error) {
	mode := ClientAuthNone
	if c.CAFile != "" || len(c.AllowSPKI) > 0 {
		mode = ClientAuthRequire
	}
	if c.Mode != "" {
		m, err := ParseClientAuth(c.Mode)
		if err != nil {
			return 0, nil, err
		}
		mode = m
	}
	named := []struct {
		flag string
		vals []string
	}{{"--allow-cn", c.AllowCN}, {"--allow-dns", c.AllowDNS}, {"--allow-uri", c.AllowURI}, {"--allow-email", c.AllowEmail}}
	if mode == ClientAuthNone {
		var given []string
		if c.CAFile != "" {
			given = append(given, "--client-ca")
		}
		for _, n := range named {
			if len(n.vals) > 0 {
				given = append(given, n.flag)
			}
		}
		if len(c.AllowSPKI) > 0 {
			given = append(given, "--allow-spki")
		}
		if len(c.CRLFiles) > 0 {
			given = append(given, "--crl")
		}
		if c.CRLStrict {
			given = append(given, "--crl-strict")
		}
		if len(given) > 0 {
			return 0, nil, usageErr{fmt.Sprintf("--client-auth none asks for no client certificate, so %s would do nothing: drop --client-auth none (or those flags)", strings.Join(given, ", "))}
		}
		return mode, nil, nil
	}
	if c.CAFile == "" {
		if len(c.AllowSPKI) == 0 {
			return 0, nil, usageErr{fmt.Sprintf("--client-auth %s needs --client-ca FILE (the CA that issues client certificates), or --allow-spki to pin client keys", mode)}
		}
		for _, n := range named {
			if len(n.vals) > 0 {
				return 0, nil, usageErr{n.flag + " needs --client-ca FILE: without a CA anyone can put any name in a certificate; pin keys with --allow-spki instead"}
			}
		}
		if len(c.CRLFiles) > 0 {
			return 0, nil, usageErr{"--crl needs --client-ca FILE, the CA whose revocations it lists"}
		}
	}
	if c.CRLStrict && len(c.CRLFiles) == 0 {
		return 0, nil, usageErr{"--crl-strict needs --crl FILE"}
	}
	for _, n := range named {
		for _, v := range n.vals {
			if v == "" {
				return 0, nil, usageErr{n.flag + " \"\": give a name"}
			}
		}
	}
	pins := map[certid.Pin]string{}
	for _, s := range c.AllowSPKI {
		name, pin := "", s
		if !strings.HasPrefix(s, "sha256:") && !strings.HasPrefix(s, "sha256//") {
			if n, rest, ok := strings.Cut(s, "="); ok {
				name, pin = n, rest
			}
		}
		h, err := certid.ParsePin(pin)
		if err != nil {
			return 0, nil, usageErr{fmt.Sprintf("--allow-spki: %v; a refused client's log line shows its key's pin, or run\n"+
				"  openssl x509 -in CERT -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64", err)}
		}
		if pin != s {
			switch {
			case c.CAFile != "":
				return 0, nil, usageErr{fmt.Sprintf("--allow-spki %s: a name for a pin is for pin-only mode; with --client-ca the certificate's verified names say who the client is: drop %q", s, name+"=")}
			case !rsyncd.SafeEnvValue(name):
				return 0, nil, usageErr{fmt.Sprintf("--allow-spki %s: the name %q is exported as SSL_CLIENT_S_DN_CN, so it must be one token of letters, digits and ._-:@+=, not starting with . or -", s, name)}
			}
		}
		if old, dup := pins[h]; dup && old != name {
			return 0, nil, usageErr{fmt.Sprintf("--allow-spki: pin %s is given twice, as %q and %q", h, old, name)}
		}
		pins[h] = name
	}
	return mode, pins, nil
}

// CheckClientAuth reports whether the flags fit together, without reading
// any file; its errors wrap ErrClientAuthUsage.
func CheckClientAuth(c ClientAuthConfig) error {
	_, _, err := c.resolve()
	return err
}

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

type clientMaterial struct {
	roots  *x509.CertPool
	crls   []*loadedCRL
	stamps []fileStamp
}

type loadedCRL struct {
	file   string
	rl     *x509.RevocationList
	issuer *x509.Certificate
	// revoked maps a serial number (decimal) to its revocation time.
	revoked map[string]time.Time
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

// Reload reads the CA bundle and CRLs again and swaps them in only if all
// of them load; on error the ones in use stay.
func (p *ClientPolicy) Reload() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.load()
	if err != nil {
		return err
	}
	p.cur.Store(m)
	return nil
}

// Changed reports whether the CA bundle or a CRL differs in size or
// modification time from when it was loaded: CRLs are reissued on a
// schedule, and a long-running listener must pick them up.
func (p *ClientPolicy) Changed() bool {
	if p == nil {
		return false
	}
	m := p.cur.Load()
	for i, name := range p.files() {
		if stampOf(name) != m.stamps[i] {
			return true
		}
	}
	return false
}

func (p *ClientPolicy) files() []string {
	var f []string
	if p.cfg.CAFile != "" {
		f = append(f, p.cfg.CAFile)
	}
	return append(f, p.cfg.CRLFiles...)
}

func (p *ClientPolicy) load() (*clientMaterial, error) {
	m := &clientMaterial{}
	for _, name := range p.files() {
		m.stamps = append(m.stamps, stampOf(name))
	}
	if p.cfg.CAFile == "" {
		return m, nil
	}
	cas, err := readCABundle(p.cfg.CAFile)
	if err != nil {
		return nil, err
	}
	m.roots = x509.NewCertPool()
	for _, c := range cas {
		m.roots.AddCert(c)
	}
	for _, name := range p.cfg.CRLFiles {
		crls, err := readCRLs(name, p.cfg.CAFile, cas)
		if err != nil {
			return nil, err
		}
		m.crls = append(m.crls, crls...)
	}
	return m, nil
}

func readCABundle(name string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--client-ca: %w", err)
	}
	var cas []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--client-ca %s: certificate %d: %w", name, len(cas)+1, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("--client-ca %s: no PEM certificate in it", name)
	}
	return cas, nil
}

// SplitCRLFile returns the DER CRLs in a file's contents: every "X509 CRL"
// PEM block if there is one, else the whole content as one DER CRL.
func SplitCRLFile(b []byte) [][]byte {
	if !bytes.Contains(b, []byte("-----BEGIN X509 CRL-----")) {
		return [][]byte{b}
	}
	var ders [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return ders
		}
		if blk.Type == "X509 CRL" {
			ders = append(ders, blk.Bytes)
		}
	}
}

// readCRLs parses a CRL file and checks each CRL's signature against the
// certificate in --client-ca that issued it: a CRL nobody we trust signed
// could only be used to deny service, or, worse, be trusted by mistake.
func readCRLs(name, caFile string, cas []*x509.Certificate) ([]*loadedCRL, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--crl: %w", err)
	}
	ders := SplitCRLFile(b)
	if len(ders) == 0 {
		return nil, fmt.Errorf("--crl %s: no CRL in it (PEM \"X509 CRL\" or DER)", name)
	}
	var out []*loadedCRL
	for _, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("--crl %s: not a CRL (PEM \"X509 CRL\" or DER): %w", name, err)
		}
		var issuer *x509.Certificate
		var sigErr error
		for _, ca := range cas {
			if !bytes.Equal(ca.RawSubject, rl.RawIssuer) {
				continue
			}
			if sigErr = rl.CheckSignatureFrom(ca); sigErr == nil {
				issuer = ca
				break
			}
		}
		if issuer == nil {
			dn := certid.LogText(certid.FormatDN(rl.RawIssuer))
			if sigErr != nil {
				return nil, fmt.Errorf("--crl %s: signature does not verify against its issuer %s in --client-ca: %v", name, dn, sigErr)
			}
			return nil, fmt.Errorf("--crl %s: issued by %s, which is not a certificate in --client-ca %s (add the CA that signs it to the bundle)", name, dn, caFile)
		}
		l := &loadedCRL{file: name, rl: rl, issuer: issuer, revoked: map[string]time.Time{}}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber != nil {
				l.revoked[e.SerialNumber.String()] = e.RevocationTime
			}
		}
		out = append(out, l)
	}
	return out, nil
}

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

// ExplainClientCert turns a handshake error caused by the client
// certificate policy into the log message; ok is false for other errors.
func ExplainClientCert(err error) (msg string, ok bool) {
	var ce *ClientCertError
	if errors.As(err, &ce) {
		return ce.Error(), true
	}
	if tlserr.NoClientCertificate(err) {
		return noCertReason, true
	}
	return "", false
}
