package tests

import (
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hintWordRE finds what a hint tells the user to pass or set: a flag, or an
// environment variable with the value it names, if any.
var hintWordRE = regexp.MustCompile(`(--[a-z][a-z-]*)( sha256:[A-Za-z0-9+/=]+)?|(RSYNC_[A-Z_]+)(=[^\s)]+)?`)

// notAHint are flags that hints mention without asking for them ("does not
// lead to rsync --daemon"), or name as the server's cause, which the client
// cannot change ("serve --max-conns").
var notAHint = map[string]bool{"--daemon": true, "--server": true, "--max-conns": true}

// hintFix is one way to follow a hint: the flag or variable the hint names
// and the value this scenario gives it when the hint names none.
type hintFix struct {
	word  string   // "--ca" or "RSYNC_SSL_CA_CERT"
	value []string // for a flag, the words after it; for a variable, its value
}

// hintCase provokes one hint with a command, then follows each fix the hint
// names, as written, in the same command.
type hintCase struct {
	name string
	env  []string
	args []string // after "rsync-ssl-shim"
	want string   // in the failure
	// drop removes a word (and its value) from args before a fix is
	// applied: the flag or variable the fix replaces.
	drop  string
	fixes []hintFix
}

// TestClientHints: every hint "rsync" and "check" print names flags and
// variables that those very commands take, and following the hint as
// written makes the command work.
func TestClientHints(t *testing.T) {
	pki := newPKI(t)
	other := newPKI(t)
	wrongCert, wrongKey := pki.Issue(t, "wrong", CertOpts{CN: "other.example", DNS: []string{"other.example"}})
	cc, ck := pki.Issue(t, "client", CertOpts{CN: "backup-client", Client: true})
	rd := newClientRsyncd(t)
	conf := readFileT(t, rd.Conf) + "\n[hidden]\npath = " + rd.Data + "\nlist = no\n"
	writeFile(t, rd.Conf, conf, 0o644)
	good := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1")
	wrong := startStunnelRsync(t, wrongCert, wrongKey, rd, "127.0.0.1")
	certAuth := startStunnelRsync(t, pki.Cert, pki.Key, rd, "127.0.0.1", "verifyChain = yes", "CAfile = "+pki.CA, "requireCert = yes")
	plain := startPlainRsyncd(t, newClientRsyncd(t))
	dead := freePort(t, "127.0.0.1")
	badPin := "sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	url := func(port int) string { return fmt.Sprintf("rsync://127.0.0.1:%d/", port) }
	ca := []string{"RSYNC_SSL_CA_CERT=" + pki.CA}
	sslPort := func(p int) []string { return []string{"RSYNC_SSL_PORT=" + strconv.Itoa(p)} }

	cases := []hintCase{
		{name: "unknown CA", args: []string{"rsync", url(good)}, want: "pass --ca FILE or set RSYNC_SSL_CA_CERT",
			fixes: []hintFix{{"--ca", []string{pki.CA}}, {"RSYNC_SSL_CA_CERT", []string{pki.CA}}}},
		{name: "wrong CA file", env: []string{"RSYNC_SSL_CA_CERT=" + other.CA}, args: []string{"rsync", url(good)},
			want:  other.CA + " did not sign it",
			fixes: []hintFix{{"--ca", []string{pki.CA}}, {"RSYNC_SSL_CA_CERT", []string{pki.CA}}}},
		{name: "wrong name", env: ca, args: []string{"rsync", url(wrong)}, want: "certificate is for other.example",
			fixes: []hintFix{{"--servername", []string{"other.example"}}, {"RSYNC_SSL_SKIP_HOSTNAME_CHECK", nil}}},
		{name: "pin flag", args: []string{"rsync", "--pin", badPin, url(good)}, want: "does not match the pin", drop: "--pin",
			fixes: []hintFix{{"--pin", nil}, {"RSYNC_SSL_PIN", nil}}},
		{name: "pin variable", env: []string{"RSYNC_SSL_PIN=" + badPin}, args: []string{"rsync", url(good)}, want: "does not match the pin",
			fixes: []hintFix{{"--pin", nil}, {"RSYNC_SSL_PIN", nil}}},
		{name: "client certificate", env: ca, args: []string{"rsync", url(certAuth)}, want: "wants a client certificate",
			fixes: []hintFix{{"--cert", []string{cc}}, {"--key", []string{ck}}, {"RSYNC_SSL_CERT", []string{cc}}, {"RSYNC_SSL_KEY", []string{ck}}}},
		{name: "key without cert", env: ca, args: []string{"rsync", "--key", ck, url(certAuth)}, want: "--key (RSYNC_SSL_KEY) needs --cert",
			fixes: []hintFix{{"--key", []string{ck}}, {"--cert", []string{cc}}, {"RSYNC_SSL_KEY", []string{ck}}, {"RSYNC_SSL_CERT", []string{cc}}}},
		{name: "empty --ca", args: []string{"rsync", "--ca=", url(good)}, want: "--ca needs a file name", drop: "--ca=",
			fixes: []hintFix{{"--ca", []string{pki.CA}}, {"--insecure-skip-verify", nil}}},
		{name: "refused", env: append(ca, sslPort(dead)...), args: []string{"rsync", "rsync://127.0.0.1/"}, want: "connection refused",
			fixes: []hintFix{{"--port", []string{strconv.Itoa(good)}}, {"RSYNC_SSL_PORT", []string{strconv.Itoa(good)}}}},
		{name: "plain rsync port", env: append(ca, sslPort(plain)...), args: []string{"rsync", "rsync://127.0.0.1/"}, want: "speaks plain rsync",
			fixes: []hintFix{{"--port", []string{strconv.Itoa(good)}}, {"RSYNC_SSL_PORT", []string{strconv.Itoa(good)}}}},
		{name: "check unknown CA", args: []string{"check", fmt.Sprintf("127.0.0.1:%d", good)}, want: "pass --ca FILE or set RSYNC_SSL_CA_CERT",
			fixes: []hintFix{{"--ca", []string{pki.CA}}, {"RSYNC_SSL_CA_CERT", []string{pki.CA}}}},
		{name: "check hidden module", env: ca, args: []string{"check", fmt.Sprintf("127.0.0.1:%d", good), "hidden"}, want: "pass --open",
			fixes: []hintFix{{"--open", nil}}},
	}
	if !kernelHasTLS(t) {
		cases = append(cases, hintCase{name: "kernel TLS unavailable", env: ca, args: []string{"rsync", "--datapath", "ktls", url(good)},
			want: "the kernel has no tls module", drop: "--datapath", fixes: []hintFix{{"--datapath", []string{"auto"}}}})
	}
	followed := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := shim(t, tc.env, tc.args...)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("rsync-ssl-shim %s: exit %d, want a failure with %q:\n%s", strings.Join(tc.args, " "), code, tc.want, out)
			}
			named := hintWords(out)
			var fixNames []string
			for _, f := range tc.fixes {
				fixNames = append(fixNames, f.word)
			}
			sort.Strings(fixNames)
			if !slices.Equal(named, fixNames) {
				t.Fatalf("the hint names %v, the test follows %v:\n%s", named, fixNames, out)
			}
			for _, group := range fixGroups(tc.fixes) {
				args, env := followHint(t, tc, group, out)
				out, code := shim(t, env, args...)
				if code != 0 {
					t.Errorf("followed the hint (%v): rsync-ssl-shim %s: exit %d:\n%s", env, strings.Join(args, " "), code, out)
					continue
				}
				for _, f := range group {
					followed[f.word] = true
				}
			}
		})
	}

	t.Run("connect timeout", func(t *testing.T) {
		slowTier(t, "timeout")
		port := fullBacklog(t)
		args := []string{"rsync", "--connect-timeout", "500ms", fmt.Sprintf("rsync://127.0.0.1:%d/", port)}
		out, code := shim(t, ca, args...)
		if code == 0 || !strings.Contains(out, "timed out after 500ms") || !slices.Equal(hintWords(out), []string{"--connect-timeout"}) {
			t.Fatalf("exit %d, want a TCP connect timeout whose hint names --connect-timeout:\n%s", code, out)
		}
		// Raised as the hint says, the bound the helper applies is the new one.
		args[2] = "1500ms"
		out, _ = shim(t, ca, args...)
		if !strings.Contains(out, "timed out after 1.5s") {
			t.Fatalf("--connect-timeout 1500ms did not reach the helper:\n%s", out)
		}
		followed["--connect-timeout"] = true
	})

	// Every flag and variable any client hint names in the source was
	// followed by one of the cases above.
	t.Run("all hints covered", func(t *testing.T) {
		for _, w := range sourceHintWords(t) {
			if testing.Short() && w == "--connect-timeout" {
				continue // its case is a timeout, which -short skips
			}
			if w == "--datapath" && kernelHasTLS(t) {
				continue // its case needs a kernel without the tls module; the VM test covers this one
			}
			if !followed[w] {
				t.Errorf("a hint in the client's source names %s, which no case here follows", w)
			}
		}
	})
}

// hintWords lists, sorted and once each, the flags and variables named in
// the last line of a command's output (the error line and its hint).
func hintWords(out string) []string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	for _, l := range lines {
		if strings.Contains(l, "rsync-ssl-shim connect: ") || strings.Contains(l, "try: ") || strings.Contains(l, "rsync-ssl-shim rsync: ") {
			last = l
		}
	}
	seen := map[string]bool{}
	var words []string
	for _, m := range hintWordRE.FindAllStringSubmatch(last, -1) {
		w := m[1] + m[3]
		if !seen[w] && !notAHint[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	sort.Strings(words)
	return words
}

// fixGroups pairs the fixes that go together (--cert with --key, and their
// variables); every other fix stands alone.
func fixGroups(fixes []hintFix) [][]hintFix {
	var groups [][]hintFix
	var certFlags, certEnv []hintFix
	for _, f := range fixes {
		switch f.word {
		case "--cert", "--key":
			certFlags = append(certFlags, f)
		case "RSYNC_SSL_CERT", "RSYNC_SSL_KEY":
			certEnv = append(certEnv, f)
		default:
			groups = append(groups, []hintFix{f})
		}
	}
	for _, g := range [][]hintFix{certFlags, certEnv} {
		if len(g) > 0 {
			groups = append(groups, g)
		}
	}
	return groups
}

// followHint applies fixes to a case's command: a flag goes right after the
// command's name, a variable into the environment; the value is the one the
// hint wrote (--pin sha256:..., RSYNC_SSL_SKIP_HOSTNAME_CHECK=1) or else
// the case's.
func followHint(t *testing.T, tc hintCase, fixes []hintFix, out string) (args, env []string) {
	t.Helper()
	written := map[string]string{}
	for _, m := range hintWordRE.FindAllStringSubmatch(out, -1) {
		if m[2] != "" {
			written[m[1]] = strings.TrimSpace(m[2])
		}
		if m[4] != "" {
			written[m[3]] = strings.TrimPrefix(m[4], "=")
		}
	}
	rest := tc.args[1:]
	var kept []string
	for i := 0; i < len(rest); i++ {
		if tc.drop != "" && rest[i] == tc.drop {
			if !strings.Contains(tc.drop, "=") {
				i++
			}
			continue
		}
		kept = append(kept, rest[i])
	}
	for _, e := range tc.env {
		name, _, _ := strings.Cut(e, "=")
		if name != "RSYNC_SSL_PIN" || !slices.ContainsFunc(fixes, func(f hintFix) bool { return f.word == "RSYNC_SSL_PIN" || f.word == "--pin" }) {
			env = append(env, e)
		}
	}
	var flags []string
	for _, f := range fixes {
		value := f.value
		if v, ok := written[f.word]; ok {
			value = []string{v}
		}
		if strings.HasPrefix(f.word, "--") {
			flags = append(append(flags, f.word), value...)
		} else {
			if len(value) != 1 {
				t.Fatalf("%s: no value to set", f.word)
			}
			env = append(env, f.word+"="+value[0])
		}
	}
	args = append(append([]string{tc.args[0]}, flags...), kept...)
	return args, env
}

// sourceHintWords lists the flags and variables that the client's hints
// name, from the string literals on the source lines that make hints.
func sourceHintWords(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "tlsbridge/client/*.go"))
	lit := regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	seen := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, line := range strings.Split(readFileT(t, f), "\n") {
			if !strings.Contains(line, "Hint") && !strings.Contains(line, "hint") && !strings.Contains(line, "return \"") {
				continue
			}
			for _, m := range lit.FindAllStringSubmatch(line, -1) {
				for _, w := range hintWordRE.FindAllStringSubmatch(m[1], -1) {
					if !notAHint[w[1]+w[3]] {
						seen[w[1]+w[3]] = true
					}
				}
			}
		}
	}
	var words []string
	for w := range seen {
		words = append(words, w)
	}
	sort.Strings(words)
	if len(words) < 5 {
		t.Fatalf("found only %v in the client's hints: the scan is broken", words)
	}
	return words
}

// fullBacklog returns a loopback port whose listen queue is full and never
// accepted from: the kernel drops further SYNs, so a TCP connect there
// times out, as it does behind a firewall that drops packets.
func fullBacklog(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return port
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the listen queue of a backlog-0 socket never filled up")
	return 0
}
