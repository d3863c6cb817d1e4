package client

// Parsers for what rsync hands the helper and for rsyncs:// URLs.

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// HelperTail is what rsync passes its --rsh helper after our own flags
// (and after "-l USER", which the flag parser takes).
type HelperTail struct {
	Host string // brackets removed
}

// ParseHelperTail checks "HOST rsync --server --daemon ." as rsync-ssl
// does. A bare "HOST" is accepted too, for people trying the helper by hand.
// rsync puts its --rsync-path in place of "rsync", so any command words are
// allowed before "--server --daemon .".
func ParseHelperTail(args []string) (HelperTail, error) {
	var t HelperTail
	if len(args) == 0 {
		return t, errors.New("missing HOST: usage is connect [flags] [-l USER] HOST [rsync --server --daemon .]")
	}
	host, err := ParseHost(args[0])
	if err != nil {
		return t, err
	}
	t.Host = host
	rest := args[1:]
	if len(rest) == 0 {
		return t, nil
	}
	n := len(rest)
	if n < 4 || rest[n-3] != "--server" || rest[n-2] != "--daemon" || rest[n-1] != "." {
		return t, fmt.Errorf("unexpected command %q after HOST: rsync runs this helper as \"HOST rsync --server --daemon .\", only for daemon connections (HOST::MODULE or rsync://HOST/MODULE)", strings.Join(rest, " "))
	}
	return t, nil
}

// ParseHost accepts a host name, an IPv4 address, or an IPv6 address bare
// or in brackets, and returns it without brackets. The character set is
// rsync-ssl's, so nothing odd ever reaches a resolver or a log.
func ParseHost(s string) (string, error) {
	h := s
	if strings.HasPrefix(h, "[") {
		if !strings.HasSuffix(h, "]") {
			return "", fmt.Errorf("invalid host %q: unbalanced brackets", s)
		}
		h = h[1 : len(h)-1]
		if ip := net.ParseIP(h); ip == nil || ip.To4() != nil && !strings.Contains(h, ":") {
			return "", fmt.Errorf("invalid host %q: brackets are only for IPv6 addresses", s)
		}
	}
	if h == "" || h[0] == '-' || len(h) > 253 {
		return "", fmt.Errorf("invalid host %q", s)
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':' || r == '_') {
			return "", fmt.Errorf("invalid host %q: only letters, digits, '.', '-', '_' and ':' (IPv6) are allowed", s)
		}
	}
	if strings.Contains(h, ":") && net.ParseIP(h) == nil {
		return "", fmt.Errorf("invalid host %q: a host with ':' must be an IPv6 address", s)
	}
	return h, nil
}

// RsyncsURL is an rsyncs://[USER@]HOST[:PORT]/MODULE[/PATH] URL.
type RsyncsURL struct {
	User   string
	Host   string // brackets removed
	Port   string // empty when the URL has none
	Module string
	Path   string // after MODULE/, may be empty
	slash  bool   // MODULE was followed by "/"
}

// IsRsyncsURL reports whether s uses the rsyncs scheme.
func IsRsyncsURL(s string) bool { return len(s) >= 9 && strings.EqualFold(s[:9], "rsyncs://") }

// ParseRsyncsURL splits an rsyncs:// URL. The module may be empty (a
// listing: rsyncs://HOST/).
func ParseRsyncsURL(s string) (RsyncsURL, error) {
	var u RsyncsURL
	if !IsRsyncsURL(s) {
		return u, fmt.Errorf("%q is not an rsyncs:// URL", s)
	}
	rest := s[9:]
	authority, path, hasSlash := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		u.User, authority = authority[:at], authority[at+1:]
		if u.User == "" || strings.ContainsAny(u.User, ":/[]") {
			return u, fmt.Errorf("%q: bad user name %q", s, u.User)
		}
	}
	hostPart := authority
	if strings.HasPrefix(authority, "[") {
		end := strings.Index(authority, "]")
		if end < 0 {
			return u, fmt.Errorf("%q: unbalanced brackets in host", s)
		}
		hostPart = authority[:end+1]
		tail := authority[end+1:]
		if tail != "" {
			if !strings.HasPrefix(tail, ":") {
				return u, fmt.Errorf("%q: junk after the IPv6 address", s)
			}
			u.Port = tail[1:]
		}
	} else if i := strings.LastIndex(authority, ":"); i >= 0 {
		if strings.Count(authority, ":") > 1 {
			return u, fmt.Errorf("%q: put an IPv6 address in brackets, as rsyncs://[::1]:874/MODULE", s)
		}
		hostPart, u.Port = authority[:i], authority[i+1:]
	}
	if u.Port != "" {
		p, err := ParsePort(u.Port)
		if err != nil {
			return u, fmt.Errorf("%q: %w", s, err)
		}
		u.Port = p
	}
	host, err := ParseHost(hostPart)
	if err != nil {
		return u, fmt.Errorf("%q: %w", s, err)
	}
	u.Host = host
	if hasSlash {
		u.Module, u.Path, u.slash = strings.Cut(path, "/")
	}
	return u, nil
}

// DaemonURL is the rsync:// URL rsync itself understands, without the
// port: the port travels in RSYNC_SSL_PORT, which only the helper reads, so
// rsync's own port handling never sees a TLS port.
func (u RsyncsURL) DaemonURL() string {
	var b strings.Builder
	b.WriteString("rsync://")
	if u.User != "" {
		b.WriteString(u.User + "@")
	}
	if strings.Contains(u.Host, ":") {
		b.WriteString("[" + u.Host + "]")
	} else {
		b.WriteString(u.Host)
	}
	b.WriteString("/")
	b.WriteString(u.Module)
	if u.slash {
		b.WriteString("/" + u.Path)
	}
	return b.String()
}

// SplitHelperFlags takes the helper's own flags out of a wrapper's command
// line, so that "rsync-ssl-shim rsync --ca FILE -av HOST::M/ D/" works:
// "--NAME VALUE" and "--NAME=VALUE" for names in withValue, "--NAME" and
// "--NAME=BOOL" for names in boolean, anywhere before a "--". rsync has no
// option of these names, so nothing meant for rsync is taken. flags holds
// the words taken, in order, as the flag package parses them; rest is
// everything else, in order.
func SplitHelperFlags(args []string, withValue, boolean map[string]bool) (flags, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(rest, args[i:]...), nil
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case !strings.HasPrefix(a, "--"):
			rest = append(rest, a)
		case boolean[name]:
			flags = append(flags, a)
		case withValue[name] && hasValue:
			flags = append(flags, a)
		case withValue[name]:
			if i+1 >= len(args) {
				return nil, nil, fmt.Errorf("--%s needs a value", name)
			}
			flags = append(flags, a, args[i+1])
			i++
		default:
			rest = append(rest, a)
		}
	}
	return flags, rest, nil
}
