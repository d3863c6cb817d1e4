//go:build !linux

package client

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// kernelOffer is Linux's; elsewhere every session stays in user space.
type kernelOffer struct{ path DataPath }

func newKernelOffer(p DataPath) *kernelOffer {
	if p == PathKernel {
		return &kernelOffer{path: p}
	}
	return nil
}

func (ko *kernelOffer) wrap(cfg *tls.Config, c net.Conn) (*tls.Config, net.Conn) { return cfg, c }

func (c *Conn) kernelPump(io.Reader, io.Writer, time.Duration) (bool, error) {
	return true, &HopError{Hop: "kernel tls with", Peer: c.Peer, Kind: FailOther,
		Err:  errors.New("kernel TLS is Linux's"),
		Hint: "leave out --datapath ktls"}
}
