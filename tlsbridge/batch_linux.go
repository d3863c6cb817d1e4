package tlsbridge

import (
	"crypto/tls"
	"io"
	"net"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/batchconn"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
)

// The bridge's syscall batching: a batchconn.Conn sits at the bottom of the
// stack crypto/tls writes through (newQuickAckConn puts it there, under the
// sniffer and the kernel-TLS recorder), passing everything straight through
// until the bridge starts. Only then does it hold the records of one bridge
// write for one syscall and read ahead: never during the handshake, so that
// a session handed to kernel TLS leaves no byte behind in it.

// batchUnder finds the batchconn.Conn under the client end of a bridge, nil
// when there is none (a conn not built by Server.handshake).
func batchUnder(c net.Conn) *batchconn.Conn {
	for range 8 {
		switch v := c.(type) {
		case *batchconn.Conn:
			return v
		case *moduleWatch:
			c = v.halfCloser
		case *tls.Conn:
			c = v.NetConn()
		case ktls.ReaderConn:
			c = v.Conn
		case *peekedConn:
			c = v.Conn
		case *quickAckConn:
			c = v.Conn
		default:
			return nil
		}
	}
	return nil
}

// bridgeReadAhead is how much one read from the client may fetch: all the
// records a busy socket holds, decrypted one by one without a syscall each.
const bridgeReadAhead = 128 << 10

// heldWriter sends the records of one Write in one syscall; the flush is
// inside the Write, so the write deadline set before it bounds it too.
type heldWriter struct {
	halfCloser
	bc *batchconn.Conn
}

func (h heldWriter) Write(p []byte) (int, error) {
	if h.bc == nil {
		return h.halfCloser.Write(p)
	}
	h.bc.Hold()
	n, err := h.halfCloser.Write(p)
	if ferr := h.bc.Release(); err == nil {
		err = ferr
	}
	return n, err
}

// batchReader returns the plaintext of every record already received in
// one Read, so that rsync gets it in one write.
type batchReader struct {
	r  io.Reader
	bc *batchconn.Conn
}

func (b batchReader) Read(p []byte) (int, error) {
	if b.bc == nil {
		return b.r.Read(p)
	}
	return batchconn.ReadBatch(b.r, b.bc, p)
}
