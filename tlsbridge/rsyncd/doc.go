// Package rsyncd is what the shim knows about rsync's daemon: which rsync is
// installed and what it supports (read from the binary, no exec per
// connection), the arguments "rsync --daemon" is started with in inetd mode,
// its exit statuses, the "@RSYNCD:" greeting and module line of its
// protocol, and which values its rsyncd.conf %VAR% expansion and exec hooks
// can take safely.
package rsyncd
