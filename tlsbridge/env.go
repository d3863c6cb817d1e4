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
	// PinOnly: Client was admitted by its key's pin alone, and PinName
	// is the admin's name for that pin ("" if none): see PinnedVars.
	PinOnly bool
	PinName string
}

// ownedPrefixes are variables we set; whatever the service manager or an
// admin's environment had under these names is removed first, so rsync's
// hooks never see a stale or forged value next to ours.
var ownedPrefixes = []string{"PROTO=", "TCPREMOTE", "TCPLOCAL", "SSL_", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="}

// textVars are the variables whose values have spaces by nature (a DN,
// a date): they are checked with rsyncd.SafeEnvText. Every other variable
// must be one token (rsyncd.SafeEnvValue), fit for a path or a command
// line in rsyncd.conf.
var textVars = map[string]bool{
	"SSL_CLIENT_S_DN": true, "SSL_CLIENT_I_DN": true, "SSL_CLIENT_V_START": true, "SSL_CLIENT_V_END": true,
}

// RsyncEnv returns base without our names, plus the UCSPI (PROTO, TCP*) and
// mod_ssl (SSL_*) variables for this connection. dropped names the
// variables left out because their value failed its check (textVars).
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
		safe := rsyncd.SafeEnvValue
		if textVars[k] {
			safe = rsyncd.SafeEnvText
		}
		if !safe(v) {
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
	if ci.Remote.IsValid() {
		add("TCPREMOTEIP", ci.Remote.Addr().Unmap().String())
		add("TCPREMOTEPORT", strconv.Itoa(int(ci.Remote.Port())))
	}
	if ci.Local.IsValid() {
		add("TCPLOCALIP", ci.Local.Addr().Unmap().String())
		add("TCPLOCALPORT", strconv.Itoa(int(ci.Local.Port())))
	}
	add("SSL_PROTOCOL", VersionName(ci.State.Version))
	add("SSL_CIPHER", tls.CipherSuiteName(ci.State.CipherSuite))
	if sni := ci.State.ServerName; sni != "" && !ValidHostName(sni) {
		dropped = append(dropped, "SSL_TLS_SNI")
	} else {
		add("SSL_TLS_SNI", sni)
	}
	// The client certificate, in mod_ssl's names and formats
	// (ClientVars). A URI SAN is exported only when it passes like any
	// other value, which a "scheme://host/path" URI never does (its "/"):
	// such URIs are matched with --allow-uri inside the shim instead.
	vars := ClientVars(ci.Client)
	if ci.Client != nil && ci.PinOnly {
		vars = PinnedVars(ci.Client, ci.PinName)
	}
	for _, v := range vars {
		add(v.Name, v.Value)
	}
	return env, dropped
}
