// Package runas owns running rsync as another user than the server (serve
// --rsync-user): who that user is, whether this process may switch to it,
// and that none of this process's capabilities reach rsync. The point is
// key separation: the server must read its private key, and rsync, which
// parses everything a client sends, and every hook it starts, must not be
// able to. Linux only, like the server side.
package runas
