package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestServeModes pulls and pushes a tree (a 64 MiB random file, 2,000 small
// files, symlinks, names with spaces and UTF-8) through every way serve can
// be started, with stock rsync-ssl's openssl and stunnel clients, and
// compares every file's SHA-256.
func TestServeModes(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	src := filepath.Join(t.TempDir(), "src")
	bigMiB, small := 64, 2000
	if testing.Short() {
		// The same modes and clients with a small tree: the long
		// transfers are the slow tier's.
		bigMiB, small = 1, 100
	}
	makeTree(t, src, bigMiB, small)

	for _, mode := range []string{"inetd", "listenfds", "acceptno", "listen", "xinetd"} {
		t.Run(mode, func(t *testing.T) {
			for _, typ := range []string{"openssl", "stunnel"} {
				t.Run(typ, func(t *testing.T) {
					if typ == "stunnel" && mode != "inetd" {
						// -short: stunnel once (inetd), openssl in every mode.
						slowTier(t, "client per mode")
					}
					rd := newRsyncd(t)
					copyTree(t, src, rd.Data)
					s := startMode(t, mode, serveArgs(p, rd, rsync))

					dst := filepath.Join(t.TempDir(), "pulled")
					out, code := rsyncSSL(t, s, p, typ, "-a", s.Host+"::data/", dst+"/")
					if code != 0 {
						t.Fatalf("pull exit %d:\n%s\nserver:\n%s", code, out, s.Log)
					}
					sameTree(t, src, dst)

					out, code = rsyncSSL(t, s, p, typ, "-a", src+"/", s.Host+"::up/")
					if code != 0 {
						t.Fatalf("push exit %d:\n%s\nserver:\n%s", code, out, s.Log)
					}
					sameTree(t, src, rd.Up)

					log := rd.LogText(t)
					if !strings.Contains(log, "rsync on data/ from localhost (127.0.0.1)") ||
						!strings.Contains(log, "rsync to up/ from localhost (127.0.0.1)") {
						t.Errorf("rsync's log lacks the transfers:\n%s", log)
					}
					if mode != "xinetd" {
						// xinetd gives serve the socket as stderr too, so it
						// logs to syslog instead, never to the client.
						want := regexp.MustCompile(`rsync-ssl-shim\[\d+\]: 127\.0\.0\.1:\d+: served sni=localhost tls=TLSv1\.[23] cipher=\S+ client=- module=data pair=(unix|tcp) rsync_exit=0 in=\d+ out=\d+ duration=`)
						if !want.MatchString(s.Log.String()) {
							t.Errorf("no summary line for the pull in serve's log:\n%s", s.Log)
						}
					}
				})
			}
		})
	}
}

// TestServePairs runs a transfer over each kind of socket pair and checks
// that rsync saw the real client address through the PROXY header.
func TestServePairs(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 4, 200)
	for _, pair := range []string{"tcp", "unix"} {
		t.Run(pair, func(t *testing.T) {
			if pair == "tcp" {
				// The default, which TestServeModes covers in -short.
				slowTier(t, "second socket pair")
			}
			rd := newRsyncd(t)
			copyTree(t, src, rd.Data)
			s := startMode(t, "inetd", serveArgs(p, rd, rsync, "--pair", pair))
			dst := filepath.Join(t.TempDir(), "pulled")
			out, code := socatPull(t, s, p, "127.0.0.7", "-a", "rsync://localhost/data/", dst+"/")
			if code != 0 {
				t.Fatalf("pull exit %d:\n%s\nserver:\n%s", code, out, s.Log)
			}
			sameTree(t, src, dst)
			if log := rd.LogText(t); !strings.Contains(log, "(127.0.0.7)") {
				t.Errorf("rsync did not log the client's real address 127.0.0.7:\n%s", log)
			}
		})
	}
}

// TestServeRealAddress connects from 127.0.0.7 while the shim talks to rsync
// over 127.0.0.1: rsync must log 127.0.0.7 and apply "hosts deny" to it.
func TestServeRealAddress(t *testing.T) {
	rsync := rsyncPath(t)
	p := newPKI(t)
	rd := newRsyncd(t, "hosts deny = 127.0.0.7")
	if err := os.WriteFile(filepath.Join(rd.Data, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startMode(t, "inetd", serveArgs(p, rd, rsync))

	dst := t.TempDir()
	out, code := socatPull(t, s, p, "127.0.0.7", "-a", "rsync://localhost/data/", dst+"/")
	if code == 0 || !strings.Contains(out, "@ERROR: access denied to data from UNDETERMINED (127.0.0.7)") &&
		!strings.Contains(out, "access denied to data") {
		t.Fatalf("pull from 127.0.0.7 with hosts deny: exit %d, want refusal:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dst, "hello.txt")); err == nil {
		t.Fatal("a denied client received a file")
	}
	log := rd.LogText(t)
	if !regexp.MustCompile(`rsync denied on module data from \S+ \(127\.0\.0\.7\)`).MatchString(log) {
		t.Errorf("rsync's log does not show the refusal of 127.0.0.7:\n%s", log)
	}

	// The same server still serves 127.0.0.1, so the refusal was about the
	// address and nothing else.
	out, code = socatPull(t, s, p, "127.0.0.1", "-a", "rsync://localhost/data/", dst+"/")
	if code != 0 {
		t.Fatalf("pull from 127.0.0.1: exit %d\n%s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "hello.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("pull from 127.0.0.1 did not deliver hello.txt: %v", err)
	}
}
