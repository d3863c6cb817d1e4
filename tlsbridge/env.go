package tlsbridge

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"strconv"
	"strings"
)

// maxEnvValue bounds every exported value: rsyncd.conf expands %VAR% into
// paths and commands, and nothing we export needs more.
const maxEnvValue = 256

// SafeEnvValue says whether v may be exported to rsync. rsync expands %VAR%
// in rsyncd.conf values (path = /srv/%SSL_CLIENT_S_DN_CN%) and passes the
// environment to its exec hooks, so a value must not be able to climb out
// of a directory, reach a shell, or forge a log line: no "/", no "..", no
// shell metacharacters, no control bytes, bounded length. A value outside
// the set is left out and logged, never altered: a mangled identity could
// collide with someone else's.
func SafeEnvValue(v string) bool {
	if v == "" || len(v) > maxEnvValue || strings.Contains(v, "..") {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(" ._-:@=,+", c) >= 0:
		default:
			return false
		}
	}
	// A leading "-" could be taken as an option by a hook; a leading or
	// trailing space is lost or misread by most configuration parsers.
	return v[0] != '-' && v[0] != ' ' && v[len(v)-1] != ' '
}

// ConnInfo is what we know about a connection once TLS is up.
type ConnInfo struct {
	Remote, Local netip.AddrPort
	State         tls.ConnectionState
	// Client is the client certificate the policy admitted, nil if none
	// was asked for or given. Only ServeConn sets it, after a
	// handshake the ClientPolicy passed: State.PeerCertificates alone
	// does not say that anyone checked them.
	Client *x509.Certificate
}

// ownedPrefixes are variables we set; whatever the service manager or an
// admin's environment had under these names is removed first, so rsync's
// hooks never see a stale or forged value next to ours.
var ownedPrefixes = []string{"PROTO=", "TCPREMOTE", "TCPLOCAL", "SSL_", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="}

// RsyncEnv returns base without our names, plus the UCSPI (PROTO, TCP*) and
// mod_ssl (SSL_*) variables for this connection. dropped names the
// variables left out because their value failed SafeEnvValue.
func RsyncEnv(base []string, ci ConnInfo) (env, dropped []string) {
	env = make([]string, 0, len(base)+11)
	hasPath := false
	for _, kv := range base {
		if strings.HasPrefix(kv, "PATH=") && len(kv) > len("PATH=") {
			hasPath = true
		}
		owned := false
		for _, p := range ownedPrefixes {
			if strings.HasPrefix(kv, p) {
				owned = true
				break
			}
		}
		if !owned {
			env = append(env, kv)
		}
	}
	add := func(k, v string) {
		if v == "" {
			return
		}
		if !SafeEnvValue(v) {
			dropped = append(dropped, k)
			return
		}
		env = append(env, k+"="+v)
	}
	if !hasPath {
		// rsync's exec hooks run through /bin/sh; give them the
		// usual search path when the service manager gave none.
		env = append(env, "PATH="+DefaultPath)
	}
	add("PROTO", "TCP")
	add("TCPREMOTEIP", ci.Remote.Addr().Unmap().String())
	add("TCPREMOTEPORT", strconv.Itoa(int(ci.Remote.Port())))
	add("TCPLOCALIP", ci.Local.Addr().Unmap().String())
	add("TCPLOCALPORT", strconv.Itoa(int(ci.Local.Port())))
	add("SSL_PROTOCOL", VersionName(ci.State.Version))
	add("SSL_CIPHER", tls.CipherSuiteName(ci.State.CipherSuite))
	add("SSL_TLS_SNI", ci.State.ServerName)
	// The client certificate, in mod_ssl's names and formats
	// (ClientVars). A URI SAN is exported only when it passes like any
	// other value, which a "scheme://host/path" URI never does (its "/"):
	// such URIs are matched with --allow-uri inside the shim instead.
	for _, v := range ClientVars(ci.Client) {
		add(v.Name, v.Value)
	}
	return env, dropped
}
