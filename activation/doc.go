// Package activation turns what the service manager handed us into
// connections: a connected socket on fd 0 (inetd, xinetd "wait = no",
// systemd Accept=yes with StandardInput=socket), systemd's LISTEN_FDS
// (connected with Accept=yes, listening with Accept=no), a listening socket
// on fd 0 (xinetd "wait = yes"), or our own --listen sockets. It also owns the
// accept loop for the listening modes and the hygiene of fds 1 and 2, which
// inetd-style managers may point at the client connection itself.
package activation
