// Package tlsbridge owns everything between a raw TCP connection and rsync:
// the TLS policy of each side, the server handshake and its diagnosis, the
// socket pair handed to "rsync --daemon", the PROXY v2 header that tells rsync
// who really connected, the environment rsync and its hooks inherit, the copy
// loop with half-close, and the client dialer. It knows nothing of how the
// connection was obtained (package activation) or of flags (package main).
package tlsbridge
