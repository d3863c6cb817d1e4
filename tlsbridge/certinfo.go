package tlsbridge

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/certid"
)

// ExpirySoon is how close to its expiry a certificate in use makes serve
// warn: Let's Encrypt renews 30 days ahead, so a certificate still in use
// 14 days before its end means a renewal (or the reload after it) failed.
const ExpirySoon = 14 * 24 * time.Hour

// Describe says which certificate each pair in use is, one line per pair:
// the file, the serial, the subject, the expiry date and the SPKI pin
// (sha256:BASE64, as --allow-spki and "check" spell pins). An admin
// compares it with "openssl x509 -serial" of the renewed file.
func (s *CertStore) Describe() []string {
	set := s.cur.Load()
	out := make([]string, 0, len(set.certs))
	for i, c := range set.certs {
		out = append(out, describeLeaf(s.pairs[i].CertFile, c.Leaf))
	}
	return out
}

func describeLeaf(file string, leaf *x509.Certificate) string {
	return fmt.Sprintf("%s: serial %s, subject %q, expires %s, key %s", file, certid.FormatSerial(leaf),
		certid.LogText(leaf.Subject.String()), leaf.NotAfter.UTC().Format(time.DateOnly), certid.PinOf(leaf))
}

// Expiring returns a warning for each certificate in use that expires
// within d of now (or has expired), naming the file and the date.
func (s *CertStore) Expiring(now time.Time, d time.Duration) []string {
	set := s.cur.Load()
	var out []string
	for i, c := range set.certs {
		left := c.Leaf.NotAfter.Sub(now)
		if left >= d {
			continue
		}
		when := fmt.Sprintf("expires %s, in %d days", c.Leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
		if left < 0 {
			when = "expired " + c.Leaf.NotAfter.UTC().Format(time.DateOnly)
		}
		out = append(out, fmt.Sprintf("--cert %s %s: renew it (a certbot deploy hook, or replace the files); serve takes the new pair within seconds", s.pairs[i].CertFile, when))
	}
	return out
}

// PathProblem says why serve cannot read path, "" when it can stat it. A
// dangling symlink and a permission problem are told apart from a missing
// file, each with its fix: a watcher that took every stat error for
// "missing" compared "missing" with "missing" and never saw a renewal.
func PathProblem(path string) string {
	_, err := os.Stat(path)
	if err == nil {
		return ""
	}
	if lst, lerr := os.Lstat(path); lerr == nil && lst.Mode()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist) {
		to, _ := os.Readlink(path)
		return fmt.Sprintf("%s is a dangling symlink (to %s): point it at the renewed file", path, to)
	}
	return fmt.Sprintf("%s: %v%s", path, errors.Unwrap(err), accessHint(err))
}

// accessHint is the fix for a permission error on a certificate or key
// file, "" for any other error.
func accessHint(err error) string {
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	return fmt.Sprintf(" (serve runs as uid %d, groups %s): every directory above the file must be searchable and the file readable by it; "+
		"certbot's live/ and archive/ directories are 0700 root, so install copies with the deploy hook "+
		"(/usr/share/doc/rsync-ssl-shim/examples/certbot-deploy-hook); a key belongs to root:_rsync-ssl-key, mode 0640, "+
		"in a directory of mode 0710 root:_rsync-ssl-key", os.Getuid(), groupList())
}

func groupList() string {
	gs, _ := os.Getgroups()
	ids := []string{strconv.Itoa(os.Getgid())}
	for _, g := range gs {
		if g != os.Getgid() {
			ids = append(ids, strconv.Itoa(g))
		}
	}
	return strings.Join(ids, ",")
}

// stampOf is what Changed compares: size, modification time and inode, so
// that a renewal by rename is seen even when size and time match. A file
// serve cannot stat has no stamp; its error is kept for the log.
func stampOf(name string) fileStamp {
	st, err := os.Stat(name)
	if err != nil {
		return fileStamp{size: -1, err: err.Error()}
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fileStamp{size: st.Size(), mtime: st.ModTime(), ino: ino}
}
