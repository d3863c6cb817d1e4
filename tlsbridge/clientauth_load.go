package tlsbridge

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
)

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
		return nil, optErr(OptClientCA, "%s: %w", OptClientCA, err)
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
			return nil, optErr(OptClientCA, "%s %s: certificate %d: %w", OptClientCA, name, len(cas)+1, err)
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, optErr(OptClientCA, "%s %s: no PEM certificate in it", OptClientCA, name)
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
		return nil, optErr(OptCRL, "%s: %w", OptCRL, err)
	}
	ders := SplitCRLFile(b)
	if len(ders) == 0 {
		return nil, optErr(OptCRL, "%s %s: no CRL in it (PEM \"X509 CRL\" or DER)", OptCRL, name)
	}
	var out []*loadedCRL
	for _, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, optErr(OptCRL, "%s %s: not a CRL (PEM \"X509 CRL\" or DER): %w", OptCRL, name, err)
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
				return nil, optErr(OptCRL, "%s %s: signature does not verify against its issuer %s in %s: %v", OptCRL, name, dn, OptClientCA, sigErr)
			}
			return nil, optErr(OptCRL, "%s %s: issued by %s, which is not a certificate in %s %s (add the CA that signs it to the bundle)", OptCRL, name, dn, OptClientCA, caFile)
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
