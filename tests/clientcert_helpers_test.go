package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// ClientOpts describes a client certificate: what CertOpts has, plus the
// names and serials the client-certificate tests need.
type ClientOpts struct {
	CN        string
	DNS       []string
	URIs      []string
	Emails    []string
	NotBefore time.Time
	NotAfter  time.Time
	// Serial is the serial number; 0 picks a random one.
	Serial int64
}

// clientCert is an issued client certificate on disk.
type clientCert struct {
	Cert, Key string
	X509      *x509.Certificate
}

// IssueClient makes a client certificate (extended key usage clientAuth)
// signed by the CA.
func (p *PKI) IssueClient(t testing.TB, name string, o ClientOpts) clientCert {
	t.Helper()
	return p.issueClient(t, name, o, false)
}

// SelfSignedClient makes a self-signed client certificate, for key pinning.
func (p *PKI) SelfSignedClient(t testing.TB, name string, o ClientOpts) clientCert {
	t.Helper()
	return p.issueClient(t, name, o, true)
}

func (p *PKI) issueClient(t testing.TB, name string, o ClientOpts, self bool) clientCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(o.Serial)
	if o.Serial == 0 {
		serial, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: o.CN},
		DNSNames:       o.DNS,
		EmailAddresses: o.Emails,
		NotBefore:      o.NotBefore,
		NotAfter:       o.NotAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	parent, signer := p.caCert, any(p.caKey)
	if self {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c := clientCert{Cert: filepath.Join(p.Dir, name+".pem"), Key: filepath.Join(p.Dir, name+".key")}
	c.X509, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, c.Cert, "CERTIFICATE", der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, c.Key, "PRIVATE KEY", kder)
	return c
}

// WriteCRL writes a PEM CRL signed by the CA that revokes serials.
func (p *PKI) WriteCRL(t testing.TB, name string, nextUpdate time.Time, serials ...*big.Int) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	thisUpdate := time.Now().Add(-time.Hour)
	if nextUpdate.Before(thisUpdate) {
		thisUpdate = nextUpdate.Add(-24 * time.Hour)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(time.Now().UnixNano()),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
	}, p.caCert, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(p.Dir, name)
	writePEM(t, f, "X509 CRL", der)
	return f
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// serialHex spells a serial as the shim and mod_ssl do (whole bytes, upper case).
func serialHex(c *x509.Certificate) string {
	return fmt.Sprintf("%X", c.SerialNumber.Bytes())
}

// sslClient runs stock rsync-ssl (openssl type) against addr with a client
// certificate (none if cert is empty) and returns its output and status.
func sslClient(t *testing.T, p *PKI, addr string, cert clientCert, args ...string) (string, int) {
	t.Helper()
	needTool(t, "rsync-ssl")
	needTool(t, "openssl")
	_, port, _ := net.SplitHostPort(addr)
	env := []string{
		"RSYNC_SSL_TYPE=openssl",
		"RSYNC_SSL_CA_CERT=" + p.CA,
		"RSYNC_SSL_PORT=" + port,
		"RSYNC_PORT=0",
		"RSYNC_SSL_CERT=" + cert.Cert,
		"RSYNC_SSL_KEY=" + cert.Key,
	}
	return runCmd(t, 2*time.Minute, env, "rsync-ssl", args...)
}

// sslPull returns a runInetd client that pulls module "data" with cert.
func sslPull(p *PKI, cert clientCert, dst string) func(t *testing.T, addr string) string {
	return func(t *testing.T, addr string) string {
		out, code := sslClient(t, p, addr, cert, "-a", "localhost::data/", dst+"/")
		return fmt.Sprintf("exit %d\n%s", code, out)
	}
}

// envDumper writes a pre-xfer exec hook that saves rsync's environment,
// sorted, to the returned file; rsyncd.conf takes the returned line.
func envDumper(t *testing.T) (confLine, envFile string) {
	t.Helper()
	dir := t.TempDir()
	envFile = filepath.Join(dir, "env")
	hook := filepath.Join(dir, "dump-env")
	script := fmt.Sprintf("#!/bin/sh\nenv | sort > %s.tmp && mv %s.tmp %s\n", envFile, envFile, envFile)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return "pre-xfer exec = " + hook, envFile
}

// readEnv reads the hook's dump: the SSL_* and TCP* variables rsync's
// hooks saw. A missing dump means the hook never ran.
func readEnv(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the pre-xfer exec hook left no environment dump: %v", err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if ok && (strings.HasPrefix(k, "SSL_") || strings.HasPrefix(k, "TCP") || strings.HasPrefix(k, "RSYNC_")) {
			env[k] = v
		}
	}
	return env
}

func sslVars(env map[string]string) string {
	var keys []string
	for k := range env {
		if strings.HasPrefix(k, "SSL_CLIENT_") {
			keys = append(keys, k+"="+env[k])
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

// logLines returns serve's log lines without their timestamps.
func logLines(log string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if i := strings.Index(l, "rsync-ssl-shim["); i >= 0 {
			l = l[i:]
		}
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// wantLog fails unless some log line matches re (anchored after the
// "rsync-ssl-shim[PID]: " prefix).
func wantLog(t *testing.T, log, re string) {
	t.Helper()
	rx := regexp.MustCompile(`^rsync-ssl-shim\[\d+\]: ` + re)
	for _, l := range logLines(log) {
		if rx.MatchString(l) {
			return
		}
	}
	t.Errorf("no log line matches %q; log:\n%s", rx, log)
}

// shimConnects reports whether this build has a working connect command
// (it is built on its own branch); the test using it skips otherwise.
func shimConnects(t *testing.T) {
	t.Helper()
	if err := exec.Command(shimBin, "connect", "--help").Run(); err != nil {
		t.Skipf("rsync-ssl-shim connect --help failed (%v): the connect command is not in this build yet", err)
	}
}
