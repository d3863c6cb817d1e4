package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClientCheckOperatorWords: what check says to an operator about a
// server with one module, a certificate expiring within the day, and all
// its slots taken (serve --max-conns).
func TestClientCheckOperatorWords(t *testing.T) {
	p := newPKI(t)
	soon := time.Now().Add(12 * time.Hour)
	cert, key := p.Issue(t, "soon", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, NotAfter: soon})
	dir := t.TempDir()
	conf := filepath.Join(dir, "rsyncd.conf")
	writeFile(t, conf, fmt.Sprintf("use chroot = no\nlog file = %s\n[only]\npath = %s\nread only = yes\n", filepath.Join(dir, "log"), dir), 0o644)
	args := []string{"serve", "--cert", cert, "--key", key, "--rsyncd-conf", conf, "--rsync", rsyncPath(t),
		"--max-conns", "1", "--max-conns-wait", "100ms"}
	s := startMode(t, "listen", args)
	target := fmt.Sprintf("127.0.0.1:%d", s.Port)
	ca := []string{"RSYNC_SSL_CA_CERT=" + p.CA}

	out := checkOut(t, ca, 0, target)
	wantLines(t, out, "1 module: only\n", "expires "+soon.UTC().Format("2006-01-02 15:04 UTC")+" (LESS THAN A DAY",
		"try: the server certificate expires within a day")
	if strings.Contains(out, "1 modules") || strings.Contains(out, "(0 days)") {
		t.Errorf("check says \"1 modules\" or \"0 days\":\n%s", out)
	}

	// One client that finished its handshake and says nothing holds the
	// only slot (until --module-timeout, 30 s).
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(p.CA)
	pool.AppendCertsFromPEM(b)
	hold, err := tls.Dial("tcp", target, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	out = checkOut(t, ca, 1, target)
	wantLines(t, out, "max connections (1) reached", "try: the server is at its connection limit")
	if strings.Contains(out, "hosts allow/deny") {
		t.Errorf("check blames the rsyncd.conf's access rules for a connection limit:\n%s", out)
	}
}
