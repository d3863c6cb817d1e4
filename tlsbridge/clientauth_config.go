package tlsbridge

import (
	"errors"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
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
	return 0, optUsage(OptClientAuth, "%s %q: give none, optional or require", OptClientAuth, s)
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
	if mode == ClientAuthNone {
		if given := c.given(); len(given) > 0 {
			return 0, nil, optUsage(OptClientAuth, "%s none asks for no client certificate, so %s would do nothing: drop %s none (or those flags)", OptClientAuth, given, OptClientAuth)
		}
		return mode, nil, nil
	}
	if err := c.checkNeeds(mode); err != nil {
		return 0, nil, err
	}
	pins, err := c.parsePins()
	if err != nil {
		return 0, nil, err
	}
	return mode, pins, nil
}

// allowLists are the name allow-lists with their flags.
func (c ClientAuthConfig) allowLists() []struct {
	opt  Option
	vals []string
} {
	return []struct {
		opt  Option
		vals []string
	}{{OptAllowCN, c.AllowCN}, {OptAllowDNS, c.AllowDNS}, {OptAllowURI, c.AllowURI}, {OptAllowEmail, c.AllowEmail}}
}

// given names the client-certificate flags that were given.
func (c ClientAuthConfig) given() []Option {
	var given []Option
	if c.CAFile != "" {
		given = append(given, OptClientCA)
	}
	for _, n := range c.allowLists() {
		if len(n.vals) > 0 {
			given = append(given, n.opt)
		}
	}
	if len(c.AllowSPKI) > 0 {
		given = append(given, OptAllowSPKI)
	}
	if len(c.CRLFiles) > 0 {
		given = append(given, OptCRL)
	}
	if c.CRLStrict {
		given = append(given, OptCRLStrict)
	}
	return given
}

// checkNeeds checks that each flag has what it needs, for a mode that asks
// for a certificate.
func (c ClientAuthConfig) checkNeeds(mode ClientAuthMode) error {
	named := c.allowLists()
	if c.CAFile == "" {
		if len(c.AllowSPKI) == 0 {
			return optUsage(OptClientCA, "%s %s needs %s FILE (the CA that issues client certificates), or %s to pin client keys", OptClientAuth, mode, OptClientCA, OptAllowSPKI)
		}
		for _, n := range named {
			if len(n.vals) > 0 {
				return optUsage(n.opt, "%s needs %s FILE: without a CA anyone can put any name in a certificate; pin keys with %s instead", n.opt, OptClientCA, OptAllowSPKI)
			}
		}
		if len(c.CRLFiles) > 0 {
			return optUsage(OptCRL, "%s needs %s FILE, the CA whose revocations it lists", OptCRL, OptClientCA)
		}
	}
	if c.CRLStrict && len(c.CRLFiles) == 0 {
		return optUsage(OptCRLStrict, "%s needs %s FILE", OptCRLStrict, OptCRL)
	}
	for _, n := range named {
		for _, v := range n.vals {
			if v == "" {
				return optUsage(n.opt, "%s \"\": give a name", n.opt)
			}
		}
	}
	return nil
}

// parsePins reads the --allow-spki values: each pin with the admin's name
// for it ("" for none).
func (c ClientAuthConfig) parsePins() (map[certid.Pin]string, error) {
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
			return nil, optUsage(OptAllowSPKI, "%s: %v; a refused client's log line shows its key's pin, or run\n"+
				"  openssl x509 -in CERT -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64", OptAllowSPKI, err)
		}
		if pin != s {
			switch {
			case c.CAFile != "":
				return nil, optUsage(OptAllowSPKI, "%s %s: a name for a pin is for pin-only mode; with %s the certificate's verified names say who the client is: drop %q", OptAllowSPKI, s, OptClientCA, name+"=")
			case !rsyncd.SafeEnvValue(name):
				return nil, optUsage(OptAllowSPKI, "%s %s: the name %q is exported as SSL_CLIENT_S_DN_CN, so it must be one token of letters, digits and ._-:@+=, not starting with . or -", OptAllowSPKI, s, name)
			}
		}
		if old, dup := pins[h]; dup && old != name {
			return nil, optUsage(OptAllowSPKI, "%s: pin %s is given twice, as %q and %q", OptAllowSPKI, h, old, name)
		}
		pins[h] = name
	}
	return pins, nil
}

// CheckClientAuth reports whether the flags fit together, without reading
// any file; its errors wrap ErrClientAuthUsage.
func CheckClientAuth(c ClientAuthConfig) error {
	_, _, err := c.resolve()
	return err
}
