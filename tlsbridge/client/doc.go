// Package client is the rsync-ssl side: the client's TLS policy (system
// roots, a CA file, pins, or no verification, as rsync-ssl's environment
// variables choose), the dialer whose errors name the hop that failed, the
// stdin/stdout pump rsync runs as its --rsh helper, the hop-by-hop check,
// and the parsing of rsync's helper arguments and rsyncs:// URLs. It has no
// Linux-only code: it builds for every system rsync runs on.
package client
