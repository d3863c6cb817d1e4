package tlsbridge

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CertPair names one certificate chain and its private key on disk.
type CertPair struct {
	CertFile, KeyFile string
}

// CertStore holds the server certificates, chosen by SNI with the first pair
// as the default. The set is swapped atomically on Reload, so handshakes in
// flight keep the certificate they started with.
type CertStore struct {
	pairs []CertPair
	cur   atomic.Pointer[certSet]
	mu    sync.Mutex // serialises Reload
}

type certSet struct {
	certs  []*tls.Certificate
	stamps []fileStamp
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
	err   string // why the file could not be stat'ed, "" if it could
}

// LoadCerts reads every pair and checks that each key matches its
// certificate. Warnings (an expired or not yet valid certificate) are
// returned for the log; they do not stop the server, since a renewal may be
// on its way and refusing to start would take the service down with it.
func LoadCerts(pairs []CertPair) (*CertStore, []string, error) {
	if len(pairs) == 0 {
		return nil, nil, optUsage(OptCert, "no certificate: pass %s FILE %s FILE", OptCert, OptKey)
	}
	s := &CertStore{pairs: pairs}
	set, warns, err := loadSet(pairs)
	if err != nil {
		return nil, nil, err
	}
	s.cur.Store(set)
	return s, warns, nil
}

// Reload reads the files again and swaps them in only if all of them load;
// on error the certificates in use stay.
//
// A renewal gone wrong must not take down a working server either: a new
// certificate that is expired or not yet valid is refused (a
// *CertValidityError) while the one in use for that pair is valid, and the
// old set stays. Only when the one in use is no better is the new one
// taken, with a warning, as at start.
func (s *CertStore) Reload() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, warns, err := loadSet(s.pairs)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	cur := s.cur.Load()
	for i, c := range set.certs {
		if why := validity(c.Leaf, now); why != "" && validity(cur.certs[i].Leaf, now) == "" {
			return nil, &CertValidityError{File: s.pairs[i].CertFile, Why: why}
		}
	}
	s.cur.Store(set)
	return warns, nil
}

// CertValidityError is a reload refused because a new certificate is
// outside its validity period while the one in use is not.
type CertValidityError struct {
	File string
	Why  string // "expired 2026-01-02" or "is not valid before ..."
}

func (e *CertValidityError) Error() string { return e.Render(nil) }

// Render is the error's text with the certificate option named by n.
func (e *CertValidityError) Render(n Namer) string {
	return n.name(OptCert) + " " + e.File + " " + e.Why
}

// validity says why leaf cannot be served at now, "" if it can.
func validity(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return "expired " + leaf.NotAfter.UTC().Format(time.DateOnly)
	case now.Before(leaf.NotBefore):
		return "is not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339)
	}
	return ""
}

// Changed reports whether any file differs in size, modification time or
// inode from when it was loaded. stat follows symlinks, so a certbot-style
// "live/" link switched to a new version counts as a change, and so does a
// file that became unreadable (Reload then says why).
func (s *CertStore) Changed() bool {
	set := s.cur.Load()
	for i, p := range s.pairs {
		for j, name := range []string{p.CertFile, p.KeyFile} {
			st := stampOf(name)
			if st != set.stamps[2*i+j] {
				return true
			}
		}
	}
	return false
}

// Default returns the first certificate.
func (s *CertStore) Default() *tls.Certificate { return s.cur.Load().certs[0] }

// GetCertificate picks the certificate for the client's SNI: the first whose
// names cover it and whose key the client can use, else the first whose names
// cover it, else the default.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.cur.Load()
	if hello.ServerName != "" && len(set.certs) > 1 {
		var nameOnly *tls.Certificate
		for _, c := range set.certs {
			if c.Leaf == nil || c.Leaf.VerifyHostname(hello.ServerName) != nil {
				continue
			}
			if hello.SupportsCertificate(c) == nil {
				return c, nil
			}
			if nameOnly == nil {
				nameOnly = c
			}
		}
		if nameOnly != nil {
			return nameOnly, nil
		}
	}
	return set.certs[0], nil
}

func loadSet(pairs []CertPair) (*certSet, []string, error) {
	set := &certSet{}
	var warns []string
	now := time.Now()
	for _, p := range pairs {
		set.stamps = append(set.stamps, stampOf(p.CertFile), stampOf(p.KeyFile))
		c, err := loadPair(p)
		if err != nil {
			return nil, nil, err
		}
		if why := validity(c.Leaf, now); why != "" {
			warns = append(warns, "--cert "+p.CertFile+" "+why)
		}
		set.certs = append(set.certs, c)
	}
	return set, warns, nil
}

// loadPair reads one pair and names the file at fault in every error.
func loadPair(p CertPair) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, optErr(OptCert, "%s: %w%s", OptCert, err, accessHint(err))
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, optErr(OptKey, "%s: %w%s", OptKey, err, accessHint(err))
	}
	if !bytes.Contains(certPEM, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, optErr(OptCert, "%s %s: no PEM certificate in it", OptCert, p.CertFile)
	}
	if encryptedPEM(keyPEM) {
		return nil, optErr(OptKey, "%s %s is encrypted with a passphrase; give an unencrypted key and protect it with file permissions or systemd's LoadCredential=", OptKey, p.KeyFile)
	}
	if !bytes.Contains(keyPEM, []byte("PRIVATE KEY-----")) {
		return nil, optErr(OptKey, "%s %s: no PEM private key in it", OptKey, p.KeyFile)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if keyMismatch(certPEM, keyPEM) {
			return nil, optErr(OptKey, "%s %s does not belong to %s %s (its public key is not the certificate's)", OptKey, p.KeyFile, OptCert, p.CertFile)
		}
		return nil, optErr(OptCert, "%s %s / %s %s: %s", OptCert, p.CertFile, OptKey, p.KeyFile, strings.TrimPrefix(err.Error(), "tls: "))
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, optErr(OptCert, "%s %s: %w", OptCert, p.CertFile, err)
		}
	}
	return &c, nil
}

func encryptedPEM(b []byte) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return true
		}
	}
}

// keyMismatch reports a well-formed certificate and key that are not a
// pair, told apart from other X509KeyPair failures by comparing the keys
// rather than by crypto/tls's message.
func keyMismatch(certPEM, keyPEM []byte) bool {
	cb := firstPEM(certPEM, func(t string) bool { return t == "CERTIFICATE" })
	kb := firstPEM(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") })
	if cb == nil || kb == nil {
		return false
	}
	leaf, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return false
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			if key, err = x509.ParsePKCS1PrivateKey(kb.Bytes); err != nil {
				return false
			}
		}
	}
	signer, ok := key.(crypto.Signer)
	pub, ok2 := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ok2 && !pub.Equal(signer.Public())
}

// firstPEM returns the first block of b whose type is wanted.
func firstPEM(b []byte, want func(string) bool) *pem.Block {
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil || want(blk.Type) {
			return blk
		}
	}
}
