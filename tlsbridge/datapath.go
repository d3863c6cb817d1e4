package tlsbridge

import (
	"crypto/tls"
	"fmt"
	"net"
)

// DataPathMode is how sessions' bytes may travel once the handshake is
// done: chosen for the server, applied per session.
type DataPathMode int

const (
	// DataPathAuto takes the kernel path where it can serve the session
	// and the bridge everywhere else.
	DataPathAuto DataPathMode = iota
	// DataPathKTLS insists on the kernel path: a session it cannot serve
	// is refused, never bridged.
	DataPathKTLS
	// DataPathBridge always copies through our process.
	DataPathBridge
)

func (d DataPathMode) String() string {
	return [...]string{"auto", "ktls", "bridge"}[d]
}

// ParseDataPathMode maps a mode's name: auto (or empty), ktls or bridge.
func ParseDataPathMode(s string) (DataPathMode, error) {
	switch s {
	case "auto", "":
		return DataPathAuto, nil
	case "ktls":
		return DataPathKTLS, nil
	case "bridge":
		return DataPathBridge, nil
	}
	return 0, fmt.Errorf("%q: give auto, ktls or bridge", s)
}

// FallbackReason says, in a few words for the summary line, why a session
// that might have gone to the kernel was bridged; "" when it was not.
type FallbackReason string

// dataPath carries one admitted session's bytes between the client and a
// fresh rsync, and reaps rsync. It is chosen once per session
// (Server.choosePath) and says what it did.
type dataPath interface {
	serve(sess *session) served
}

// served is what a data path did with a session.
type served struct {
	// path is "bridge" or "ktls"; pair the kind of socket pair rsync got
	// ("-" on the kernel path, which has none).
	path, pair string
	// rsyncExit is rsync's exit status, -1 if it never started.
	rsyncExit int
	in, out   int64
	// module is what the client asked rsync for, when the path saw it.
	module string
	err    error
}

// fallbackReason says why this session cannot go to the kernel, "" when it
// may try. In order: its own reason (a load balancer, TLS 1.2, a cipher),
// then the kernel's (no TLS module, found once at start), then a
// handshake that ended inside a record (ko, when the session was readied
// for the kernel).
func fallbackReason(raw net.Conn, st tls.ConnectionState, kernelUnavailable string, ko *kernelOffer) FallbackReason {
	if _, ok := raw.(*net.TCPConn); !ok {
		// activation's ProxiedConn: the client's address came in a
		// PROXY header, and only the bridge can pass it on to rsync.
		return "the connection came through a load balancer (--trusted-proxy): rsync must learn the client's address from a PROXY header"
	}
	if why := KTLSRefusal(st); why != "" {
		return FallbackReason(why)
	}
	if kernelUnavailable != "" {
		return "no kernel TLS module"
	}
	if ko != nil && ko.splitRecord() {
		return "crypto/tls stopped inside a record (client bytes would be lost to the kernel)"
	}
	return ""
}
