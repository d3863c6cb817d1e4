// Package activation turns what the service manager handed us into
// connections: a connected socket on fd 0 (inetd, xinetd "wait = no",
// systemd Accept=yes with StandardInput=socket), systemd's LISTEN_FDS
// (connected with Accept=yes, listening with Accept=no), a listening socket
// on fd 0 (xinetd "wait = yes"), or our own --listen sockets. It also owns the
// accept loop for the listening modes and the hygiene of fds 1 and 2, which
// inetd-style managers may point at the client connection itself, and the
// PROXY protocol header (v1 and v2) that a trusted load balancer sends ahead
// of the client's bytes (--trusted-proxy): required from those peers, read
// before TLS, and the source of the client address from then on.
package activation
