package tests

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// certFacts is what serve must log about a certificate: the serial as
// openssl prints it, the expiry date and the SPKI pin.
func certFacts(t *testing.T, certFile string) (serial, expires, pin string) {
	t.Helper()
	blk, _ := pem.Decode([]byte(readFileT(t, certFile)))
	if blk == nil {
		t.Fatalf("%s: no PEM", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	out, code := runCmd(t, 30*time.Second, nil, needTool(t, "openssl"), "x509", "-noout", "-serial", "-in", certFile)
	if code != 0 {
		t.Fatalf("openssl x509 -serial: %s", out)
	}
	serial = strings.TrimPrefix(strings.TrimSpace(out), "serial=")
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return serial, c.NotAfter.UTC().Format(time.DateOnly), "sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// replaceByRename writes body next to dst and renames it over dst, as
// certbot and most renewal scripts do.
func replaceByRename(t *testing.T, src, dst string) {
	t.Helper()
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, []byte(readFileT(t, src)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestServeRenewalLog: every load and reload names the certificate (file,
// serial, expiry, pin); a half-written renewal (the new certificate with
// the old key) keeps the old pair and says why; the key that completes it
// brings the new pair in, without a signal.
func TestServeRenewalLog(t *testing.T) {
	slowTier(t, "reload and idle timing")
	rsync := rsyncPath(t)
	p := newPKI(t)
	rd := newRsyncd(t)
	srv := startServeListening(t, serveArgs(p, rd, rsync))
	addr, log := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port)), srv.Log

	serial, expires, pin := certFacts(t, p.Cert)
	first := fmt.Sprintf("certificate in use: %s: serial %s, subject \"CN=localhost\", expires %s, key %s", p.Cert, serial, expires, pin)
	mustWaitFor(t, 5*time.Second, "the start line "+first, func() bool { return strings.Contains(log.String(), first) })
	old := servedSerial(t, addr, p)

	newCert, newKey := p.Issue(t, "renewed", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}})
	replaceByRename(t, newCert, p.Cert)
	if !waitFor(func() bool { return strings.Contains(log.String(), "does not belong to --cert "+p.Cert) }, 10*time.Second) {
		t.Fatalf("a new certificate with the old key: no reload refusal naming the mismatch:\n%s", log)
	}
	if !strings.Contains(log.String(), "still using the previous ones") || !strings.Contains(log.String(), "certificate kept: "+p.Cert+": serial "+serial) {
		t.Fatalf("the refusal does not say which pair is kept:\n%s", log)
	}
	if got := servedSerial(t, addr, p); got != old {
		t.Fatalf("half-written renewal: serial %s served, want the old %s", got, old)
	}

	replaceByRename(t, newKey, p.Key)
	nserial, nexpires, npin := certFacts(t, p.Cert)
	want := fmt.Sprintf("reloaded certificates (changed files): %s: serial %s, subject \"CN=localhost\", expires %s, key %s", p.Cert, nserial, nexpires, npin)
	if !waitFor(func() bool { return strings.Contains(log.String(), want) }, 10*time.Second) {
		t.Fatalf("no reload line %q:\n%s", want, log)
	}
	if got := servedSerial(t, addr, p); got == old {
		t.Fatal("still serving the old certificate after the key arrived")
	}
	syscall.Kill(srv.Pid, syscall.SIGHUP)
	mustWaitFor(t, 5*time.Second, "a reload line on SIGHUP", func() bool {
		return strings.Contains(log.String(), "reloaded certificates (SIGHUP): "+p.Cert+": serial "+nserial)
	})
}

// TestServeExpiryWarning: a certificate in use that ends within 14 days is
// a warning at start, naming the file and the date.
func TestServeExpiryWarning(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	end := time.Now().Add(3*24*time.Hour + time.Hour)
	p.Cert, p.Key = p.Issue(t, "short", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, NotAfter: end})
	rd := newRsyncd(t)
	s := startServeListening(t, serveArgs(p, rd, rsync))
	want := fmt.Sprintf("warning: --cert %s expires %s, in 3 days", p.Cert, end.UTC().Format(time.DateOnly))
	mustWaitFor(t, 5*time.Second, want, func() bool { return strings.Contains(s.Log.String(), want) })

	long := newPKI(t)
	long.Cert, long.Key = long.Issue(t, "long", CertOpts{CN: "localhost", DNS: []string{"localhost"}, NotAfter: time.Now().Add(15 * 24 * time.Hour)})
	s2 := startServeListening(t, serveArgs(long, rd, rsync))
	mustWaitFor(t, 5*time.Second, "the start line", func() bool { return strings.Contains(s2.Log.String(), "certificate in use:") })
	if strings.Contains(s2.Log.String(), "warning: --cert") {
		t.Fatalf("a certificate valid for 15 days warned:\n%s", s2.Log)
	}
}

// TestServeUnreadablePath: a certificate serve cannot read (certbot's 0700
// live/ directory, run as an unprivileged user) stops serve with the path
// and the fix; a dangling --exit-on-change symlink is a warning naming it.
func TestServeUnreadablePath(t *testing.T) {
	setpriv := needTool(t, "setpriv")
	rsync := rsyncPath(t)
	p := newPKI(t)
	// An unprivileged user must be able to run the binary.
	bin, err := os.MkdirTemp("", "rsync-ssl-shim-pub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	pub := filepath.Join(bin, "rsync-ssl-shim")
	if out, code := runCmd(t, time.Minute, nil, "cp", shimBin, pub); code != 0 {
		t.Fatal(out)
	}
	os.Chmod(pub, 0o755)
	// certbot's layout: live/HOST/ links into archive/HOST/, both 0700 root.
	le := filepath.Join(bin, "letsencrypt")
	live, archive := filepath.Join(le, "live", "host"), filepath.Join(le, "archive", "host")
	for _, d := range []string{live, archive} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(le, 0o755)
	for _, d := range []string{filepath.Join(le, "live"), filepath.Join(le, "archive")} {
		os.Chmod(d, 0o700)
	}
	copyFileT(t, p.Cert, filepath.Join(archive, "fullchain1.pem"))
	copyFileT(t, p.Key, filepath.Join(archive, "privkey1.pem"))
	os.Chmod(filepath.Join(archive, "privkey1.pem"), 0o600)
	os.Symlink("../../archive/host/fullchain1.pem", filepath.Join(live, "fullchain.pem"))
	os.Symlink("../../archive/host/privkey1.pem", filepath.Join(live, "privkey.pem"))
	cert := filepath.Join(live, "fullchain.pem")
	out, code := runCmd(t, 30*time.Second, nil, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		pub, "serve", "--cert", cert, "--key", filepath.Join(live, "privkey.pem"), "--rsync", rsync, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(out, cert) || !strings.Contains(out, "permission denied") ||
		!strings.Contains(out, "uid 65534") || !strings.Contains(out, "certbot-deploy-hook") {
		t.Fatalf("serve as uid 65534 with certbot's live/ files (exit %d), want exit 1 naming the path, the uid and the deploy hook:\n%s", code, out)
	}

	// Dangling: an --exit-on-change path that points nowhere.
	dangling := filepath.Join(t.TempDir(), "cert-link.pem")
	os.Symlink(filepath.Join(t.TempDir(), "gone.pem"), dangling)
	rd := newRsyncd(t)
	s := startServeListening(t, serveArgs(p, rd, rsync, "--exit-on-change", dangling))
	want := "warning: --exit-on-change " + dangling + " is a dangling symlink"
	mustWaitFor(t, 5*time.Second, want, func() bool { return strings.Contains(s.Log.String(), want) })
}

// TestCheckWarnDays: check --warn-days N fails (exit 1, naming the date)
// when the server's certificate has N whole days left or fewer; with
// --warn-days 0, a certificate that ends within the day is not ok.
func TestCheckWarnDays(t *testing.T) {
	rsync := rsyncPath(t)
	rd := newRsyncd(t)
	run := func(t *testing.T, left time.Duration, wantCode int, args ...string) string {
		p := newPKI(t)
		end := time.Now().Add(left)
		p.Cert, p.Key = p.Issue(t, "c", CertOpts{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, NotAfter: end})
		s := startServeListening(t, serveArgs(p, rd, rsync))
		out := checkOut(t, []string{"RSYNC_SSL_CA_CERT=" + p.CA}, wantCode, append(args, fmt.Sprintf("127.0.0.1:%d", s.Port))...)
		if wantCode != 0 && !strings.Contains(out, end.UTC().Format(time.DateOnly)) {
			t.Errorf("the failure does not name the expiry date %s:\n%s", end.UTC().Format(time.DateOnly), out)
		}
		return out
	}
	day := 24 * time.Hour
	t.Run("10 days, warn 14", func(t *testing.T) {
		out := run(t, 10*day+time.Hour, 1, "--warn-days", "14")
		wantLines(t, out, "FAIL  expiry", "in 10 days (--warn-days 14)")
	})
	t.Run("10 days, warn 5", func(t *testing.T) { run(t, 10*day+time.Hour, 0, "--warn-days", "5") })
	t.Run("hours left, no --warn-days", func(t *testing.T) { run(t, 5*time.Hour, 0) })
	t.Run("hours left, warn 0", func(t *testing.T) { run(t, 5*time.Hour, 1, "--warn-days", "0") })
	t.Run("json", func(t *testing.T) {
		out := run(t, 2*day+time.Hour, 1, "--warn-days", "3", "--json")
		wantLines(t, out, `"kind": "expiry"`, `"ok": false`)
	})
}
