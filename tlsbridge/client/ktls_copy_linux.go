package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// remoteAlert is an alert the server sent, read through the kernel; wrapped
// like crypto/tls's own, so that the same hints apply.
type remoteAlert uint8

func (a remoteAlert) Error() string { return "tls: " + tlserr.Alert(a).String() }

// errKeyUpdate ends a kernel session whose server rotates its keys: the
// kernel cannot follow a TLS 1.3 KeyUpdate.
var errKeyUpdate = errors.New("the server sent a TLS KeyUpdate, which kernel TLS cannot follow (use --datapath user for this server)")

// kernelReader reads a kernel TLS socket with recvmsg (one call returns the
// data of every record already received), turning what is not application
// data into what crypto/tls would have made of it:
// close_notify is io.EOF, another alert a remote error, a session ticket
// nothing at all.
type kernelReader struct {
	rc     syscall.RawConn
	sawFIN bool // the TCP stream ended without close_notify
}

func (k *kernelReader) Read(p []byte) (int, error) {
	for {
		n, typ, err := ktls.ReadRecord(k.rc, p)
		if err != nil {
			return 0, err
		}
		switch {
		case typ == ktls.RecordApplication && n == 0:
			k.sawFIN = true
			return 0, io.EOF
		case typ == ktls.RecordApplication:
			return n, nil
		case typ == ktls.RecordAlert && n >= 2 && p[1] == 0:
			return 0, io.EOF
		case typ == ktls.RecordAlert && n >= 2:
			return 0, &net.OpError{Op: "remote error", Err: remoteAlert(p[1])}
		case typ == ktls.RecordHandshake && n >= 1 && p[0] == 4:
			continue // NewSessionTicket: this helper resumes nothing
		case typ == ktls.RecordHandshake && n >= 1 && p[0] == 24:
			return 0, errKeyUpdate
		}
		return 0, fmt.Errorf("the server sent a TLS record (type %d) kernel TLS cannot follow", typ)
	}
}

// receiveKernel copies the server's plaintext to rsync: one recvmsg
// returns every record the kernel has already received and opened, and one
// write passes it on.
func receiveKernel(kr *kernelReader, out io.Writer) error {
	buf := make([]byte, pumpBuf)
	for {
		n, err := kr.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return &writeError{werr}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil // close_notify, or a bare FIN that kr noted
		}
		if err != nil {
			return err
		}
	}
}

// sendKernel copies what rsync writes to the server, where the kernel
// seals it into records; at rsync's EOF it sends close_notify and leaves
// the socket open for reading.
func sendKernel(tcp *net.TCPConn, rc syscall.RawConn, in io.Reader) error {
	buf := make([]byte, pumpBuf)
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			if _, err := tcp.Write(buf[:n]); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			return ktls.SendCloseNotify(rc, time.Now().Add(time.Minute))
		}
		if rerr != nil {
			return rerr
		}
	}
}
