// Package ktls hands an established TLS 1.3 session to the Linux kernel's
// TLS module, for both ends: the server's kernel data path (rsync gets the
// client's socket) and the client helper's (the kernel seals and opens the
// records, and the plaintext moves by splice without entering the process).
//
// crypto/tls runs the handshake; SecretLog takes the application traffic
// secrets from its key log, RecordReader keeps it from reading past the
// handshake's last record, and Enable gives the kernel one direction's key
// each way. Nothing here writes a secret anywhere.
package ktls
