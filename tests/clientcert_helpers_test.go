package tests

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
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
	ca := p.ca
	if self {
		ca = nil
	}
	x, key := ca.Issue(t, testpki.Leaf{CN: o.CN, DNS: o.DNS, URIs: o.URIs, Emails: o.Emails, NotBefore: o.NotBefore,
		NotAfter: dayIfZero(o.NotAfter), Serial: o.Serial})
	c := clientCert{X509: x}
	c.Cert, c.Key = testpki.WritePair(t, p.Dir, name, x, key)
	return c
}

// WriteCRL writes a PEM CRL signed by the CA that revokes serials.
func (p *PKI) WriteCRL(t testing.TB, name string, nextUpdate time.Time, serials ...*big.Int) string {
	t.Helper()
	return p.ca.CRL(t, p.Dir, name, nextUpdate, true, serials...)
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

// logLines returns serve's log lines without their timestamps, and
// without the session's start line (it has its own test).
func logLines(log string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if i := strings.Index(l, "rsync-ssl-shim["); i >= 0 {
			l = l[i:]
		}
		if l != "" && !strings.Contains(l, ": started sni=") {
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
