package tlsbridge

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"strconv"
	"strings"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

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
// variables left out because their value failed rsyncd.SafeEnvValue.
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
		if !rsyncd.SafeEnvValue(v) {
			dropped = append(dropped, k)
			return
		}
		env = append(env, k+"="+v)
	}
	if !hasPath {
		// rsync's exec hooks run through /bin/sh; give them the
		// usual search path when the service manager gave none.
		env = append(env, "PATH="+rsyncd.DefaultPath)
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
