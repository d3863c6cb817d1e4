package rsyncd

import (
	"bytes"
	"strings"
)

// PlainClientAnswer reads a plain rsync client's greeting line and builds the
// reply that makes that client print our message: a server greeting in the
// protocol the client announced, then an @ERROR line. A protocol-32 client
// aborts before reading @ERROR unless our greeting carries a digest list, so
// we offer back the client's own list, which it necessarily accepts.
func PlainClientAnswer(greeting []byte) []byte {
	line := greeting
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	ver, digests := ParseGreeting(string(line))
	if ver == "" {
		ver = "32.0"
		digests = "md5 md4"
	}
	var b strings.Builder
	b.WriteString("@RSYNCD: " + ver)
	if digests != "" {
		b.WriteString(" " + digests)
	}
	b.WriteString("\n@ERROR: this port speaks rsync over TLS; use rsync-ssl or port 873\n")
	return []byte(b.String())
}

// ParseGreeting splits "@RSYNCD: 32.0 sha512 md5" into the protocol
// ("32.0") and the digest list ("sha512 md5"). It returns empty strings for
// anything that is not a well-formed greeting; digest names are limited to
// [a-z0-9] so nothing odd is echoed back.
func ParseGreeting(line string) (version, digests string) {
	line = strings.TrimRight(line, "\r\n")
	rest, ok := strings.CutPrefix(line, "@RSYNCD: ")
	if !ok {
		return "", ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || len(fields) > 32 {
		return "", ""
	}
	major, minor, hasMinor := strings.Cut(fields[0], ".")
	if !allDigits(major, 3) || (hasMinor && !allDigits(minor, 3)) {
		return "", ""
	}
	var ds []string
	for _, d := range fields[1:] {
		if len(d) == 0 || len(d) > 16 || strings.Trim(d, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			return "", ""
		}
		ds = append(ds, d)
	}
	return fields[0], strings.Join(ds, " ")
}

func allDigits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
}

// ModuleRequested reads the module a client asked for from the start of
// its stream: the greeting line, then the module name, or "#list" (an empty
// line from old clients) for a listing.
func ModuleRequested(head []byte) string {
	lines := strings.SplitN(string(head), "\n", 3)
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "@RSYNCD: ") {
		return ""
	}
	m := strings.TrimRight(lines[1], "\r")
	if m == "" {
		return "#list"
	}
	if !SafeEnvValue(m) && m != "#list" {
		return "(unprintable)"
	}
	return m
}

// maxEnvValue bounds every exported value: rsyncd.conf expands %VAR% into
// paths and commands, and nothing we export needs more.
const maxEnvValue = 256

// SafeEnvValue says whether v may be exported to rsync as one token: a
// value an admin may put in a path or a command line. rsync expands %VAR%
// in rsyncd.conf values (path = /srv/%SSL_CLIENT_S_DN_CN%, pre-xfer exec =
// hook %SSL_CLIENT_S_DN_CN%), and runs exec hooks through /bin/sh, so such a
// value must not be able to name another directory, add an argument, reach
// a shell, or forge a log line: letters, digits and ._-:@+=, only (no "/",
// no space, no shell metacharacter, no control byte), not "." or "..", no
// leading dot (with path = /srv/%CN%, a CN of "." is /srv itself) and no
// leading "-" (an option to a hook), bounded length. A value outside the
// set is left out and logged, never altered: a mangled identity could
// collide with someone else's.
func SafeEnvValue(v string) bool {
	if v == "" || len(v) > maxEnvValue || strings.Contains(v, "..") || v[0] == '.' || v[0] == '-' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !tokenByte(v[i]) {
			return false
		}
	}
	return true
}

func tokenByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._-:@+=,", c) >= 0
}

// SafeEnvText says whether v may be exported as text: what a distinguished
// name ("CN=host-a,O=Example Corp") or a validity date ("Mar  4 05:06:07
// 2026 GMT") needs, which have spaces by nature. Such a variable is for a
// hook to read quoted from its environment, not for %VAR% in a path or a
// command line; still, should an admin put it there, each word it splits
// into is harmless: the token characters plus spaces, starting with a letter
// or digit, no word starting with "-" or ".", no "..", no trailing space.
func SafeEnvText(v string) bool {
	if v == "" || len(v) > maxEnvValue || strings.Contains(v, "..") || v[len(v)-1] == ' ' {
		return false
	}
	if c := v[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' {
			if i+1 < len(v) && (v[i+1] == '-' || v[i+1] == '.') {
				return false
			}
			continue
		}
		if !tokenByte(c) {
			return false
		}
	}
	return true
}
