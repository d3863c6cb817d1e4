package client

import (
	"crypto/tls"
	"fmt"
)

// DataPath says who seals and opens the session's records once the
// handshake is done.
type DataPath int

const (
	// PathAuto takes kernel TLS where the kernel has it and the session
	// qualifies, user space otherwise.
	PathAuto DataPath = iota
	// PathKernel insists on kernel TLS: a session that cannot have it
	// fails, saying why.
	PathKernel
	// PathUser keeps every record in crypto/tls.
	PathUser
)

func (p DataPath) String() string { return [...]string{"auto", "ktls", "user"}[p] }

// ParseDataPath reads auto, ktls or user.
func ParseDataPath(s string) (DataPath, error) {
	for _, p := range []DataPath{PathAuto, PathKernel, PathUser} {
		if s == p.String() {
			return p, nil
		}
	}
	return PathAuto, fmt.Errorf("data path %q: want auto, ktls or user", s)
}

// kernelRefusal says why a session with this state stays in user space,
// "" when the kernel can take it.
func kernelRefusal(st tls.ConnectionState, covers func(uint16) bool) string {
	if st.Version != tls.VersionTLS13 {
		return "the server negotiated TLS 1.2; kernel TLS here takes TLS 1.3 only"
	}
	if !covers(st.CipherSuite) {
		return fmt.Sprintf("cipher %s is not one kernel TLS here covers (AES-128-GCM, AES-256-GCM)", tls.CipherSuiteName(st.CipherSuite))
	}
	return ""
}
