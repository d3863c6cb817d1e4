// Package tlsbridge is the server's path from an accepted connection to
// rsync: it sniffs the first bytes (a plain rsync, HTTP or SSH client gets a
// precise answer instead of a TLS alert), runs the TLS handshake with the
// client-certificate policy, exports the client's identity into rsync's
// environment, makes the socket pair handed to "rsync --daemon", writes the
// PROXY v2 header that tells rsync who really connected, and copies bytes
// both ways with half-close. It knows nothing of how the connection was
// obtained (package activation), of flags (package main) or of the client
// (package client); what it knows about rsync itself lives in rsyncd, and
// certificate names and pins in certid.
package tlsbridge
