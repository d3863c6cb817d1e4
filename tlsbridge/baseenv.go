package tlsbridge

import "strings"

// keptEnv are the only variables of the service's own environment that
// reach rsync and its hooks; RsyncEnv adds ours (PROTO, TCP*, SSL_*) to
// them. An allow-list, not a deny-list: a service manager hands a server
// things meant for it alone (CREDENTIALS_DIRECTORY names the directory
// holding our private key; NOTIFY_SOCKET, LISTEN_*, JOURNAL_STREAM,
// INVOCATION_ID, RSYNC_SSL_SHIM_OPTS) and an admin's unit may add secrets of
// its own, and none of it is rsync's business.
var keptEnv = []string{"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME"}

// BaseEnv returns the part of environ (os.Environ()) that rsync may
// inherit: keptEnv and the LC_* locale variables.
func BaseEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		keep := strings.HasPrefix(k, "LC_")
		for _, n := range keptEnv {
			keep = keep || k == n
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// WithUser replaces HOME, USER and LOGNAME in env by those of the user rsync
// runs as (--rsync-user), as su(1) does: the service's own home is no
// business of a hook running as someone else.
func WithUser(env []string, name, home string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "USER" && k != "LOGNAME" {
			out = append(out, kv)
		}
	}
	return append(out, "HOME="+home, "USER="+name, "LOGNAME="+name)
}
