package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
)

// Kernel TLS for the helper: after crypto/tls's handshake the kernel
// seals and opens the records. The plaintext still passes through one
// buffer here: splice(2) through a pipe was built and measured, and on
// Debian 12's kernel it cost the helper more CPU than this copy (it moves
// one record per call and hands the pages on one at a time), so it is not
// used.

// kernelOffer is what the handshake keeps so that the session can go to
// the kernel: the traffic secrets from crypto/tls's key log, and the
// record-bounded reader it read the handshake through (so that nothing the
// server sent after its Finished is left in crypto/tls's buffer).
type kernelOffer struct {
	path DataPath
	log  *ktls.SecretLog
	rr   *ktls.RecordReader
}

// availableULPs lists the TCP upper-layer protocols the kernel has loaded.
const availableULPs = "/proc/sys/net/ipv4/tcp_available_ulp"

// newKernelOffer is nil when the session stays in user space from the
// start: --datapath user, or auto on a kernel whose tls module is not
// loaded (a client does not load kernel modules on the side).
func newKernelOffer(p DataPath) *kernelOffer {
	if p == PathUser {
		return nil
	}
	if p == PathAuto {
		b, err := os.ReadFile(availableULPs)
		if err != nil || !strings.Contains(" "+strings.Join(strings.Fields(string(b)), " ")+" ", " tls ") {
			return nil
		}
	}
	return &kernelOffer{path: p, log: &ktls.SecretLog{}}
}

// wrap gives crypto/tls the key log and the record-bounded reader.
func (ko *kernelOffer) wrap(cfg *tls.Config, c net.Conn) (*tls.Config, net.Conn) {
	if ko == nil {
		return cfg, c
	}
	cfg = cfg.Clone()
	cfg.KeyLogWriter = ko.log
	ko.rr = ktls.NewRecordReader(c)
	return cfg, ktls.ReaderConn{Conn: c, R: ko.rr}
}

// kernelPump moves the session to kernel TLS and copies until the server
// ends it. handled is false when the session stays in user space (Pump
// carries on); err then is nil.
func (c *Conn) kernelPump(in io.Reader, out io.Writer, greet time.Duration) (handled bool, err error) {
	ko := c.ko
	defer ko.log.Wipe()
	tcp, why := c.kernelReady()
	var rc syscall.RawConn
	if why == "" {
		if rc, err = tcp.SyscallConn(); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		cs, ss := ko.log.Secrets()
		err = ktls.Enable(rc, c.ConnectionState().CipherSuite, cs, ss)
		ko.log.Wipe()
		var ke *ktls.Error
		switch {
		case errors.As(err, &ke) && ke.Step == "TCP_ULP" && errors.Is(ke.Err, syscall.ENOTCONN):
			// The server already closed (a refusal after the
			// handshake): user space reads what it said.
			ko.rr.Stop()
			return false, nil
		case errors.As(err, &ke) && ke.Fallback:
			why = kernelExplain(ke)
		case err != nil:
			return true, &HopError{Hop: "kernel tls with", Peer: c.Peer, Kind: FailOther,
				Err: fmt.Errorf("%w (half switched: the session cannot continue)", err), Hint: "retry with --datapath user"}
		}
	}
	if why != "" {
		ko.rr.Stop()
		if ko.path == PathKernel {
			return true, &HopError{Hop: "kernel tls with", Peer: c.Peer, Kind: FailOther, Err: errors.New(why),
				Hint: "--datapath auto lets such a session use user-space TLS"}
		}
		return false, nil
	}
	// crypto/tls must never write to the socket again: its records would
	// collide with the kernel's sequence numbers.
	c.raw.kernel.Store(true)
	ktls.ExpectNoPadding(rc)
	return true, c.kernelCopy(tcp, rc, in, out, greet)
}

// kernelReady says why this session cannot go to the kernel, "" if it can.
func (c *Conn) kernelReady() (*net.TCPConn, string) {
	if why := kernelRefusal(c.ConnectionState(), ktls.Covers); why != "" {
		return nil, why
	}
	if !c.ko.rr.AtBoundary() || (c.bc != nil && c.bc.Buffered() > 0) {
		return nil, "crypto/tls read past the end of the handshake"
	}
	tcp, ok := c.raw.Conn.(*net.TCPConn)
	if !ok {
		return nil, "the connection is not a TCP socket"
	}
	return tcp, ""
}

// kernelExplain says what a failed switch means for the user.
func kernelExplain(e *ktls.Error) string {
	switch {
	case e.NoModule():
		return "the kernel has no tls module (setsockopt TCP_ULP \"tls\": ENOENT; \"modprobe tls\" as root loads it)"
	case e.NoCipher():
		return "the kernel lacks the AES-GCM cipher for TLS (setsockopt TLS_TX: ENOENT)"
	}
	return "switching the socket to kernel TLS failed: " + e.Error()
}

// kernelCopy is Pump for a kernel TLS socket.
func (c *Conn) kernelCopy(tcp *net.TCPConn, rc syscall.RawConn, in io.Reader, out io.Writer, greet time.Duration) error {
	kr := &kernelReader{rc: rc}
	up := make(chan error, 1)
	go func() { up <- sendKernel(tcp, rc, in) }()
	down := func() error {
		if err := checkGreeting(greetSource{kr, tcp, c.Peer}, out, greet); err != nil {
			return err
		}
		return receiveKernel(kr, outWriter{out})
	}()
	return c.verdict(down, up, kr.sawFIN)
}
