package tlsbridge

import (
	"crypto/tls"
	"errors"
	"net"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
)

// errNoSecrets is a handshake whose key log lacked a secret, which would
// be a crypto/tls change we rely on not happening.
var errNoSecrets = errors.New("crypto/tls logged no application traffic secrets")

// kernelOffer is what the handshake keeps for a session that may go to the
// kernel: the traffic secrets crypto/tls logs, and the record-bounded reader
// it read the handshake through. nil when the data path is the bridge.
type kernelOffer struct {
	log *ktls.SecretLog
	rr  *ktls.RecordReader
	pc  *peekedConn
}

// config is tls for one connection that may go to the kernel: the same
// policy with the key log attached. Session tickets stay off (the server's
// first application record must have sequence 0, and a ticket would take
// it); ServerTLSConfig already turns them off.
func (ko *kernelOffer) config(base *tls.Config) *tls.Config {
	if ko == nil {
		return base
	}
	cfg := base.Clone()
	cfg.SessionTicketsDisabled = true
	ko.log = &ktls.SecretLog{}
	cfg.KeyLogWriter = ko.log
	return cfg
}

// wipe clears the secrets, whichever way the session went.
func (ko *kernelOffer) wipe() {
	if ko != nil && ko.log != nil {
		ko.log.Wipe()
	}
}

// input is what crypto/tls reads the handshake from.
func (ko *kernelOffer) input(pc *peekedConn) net.Conn {
	if ko == nil {
		return pc
	}
	ko.pc = pc
	ko.rr = ktls.NewRecordReader(pc)
	return ktls.ReaderConn{Conn: pc, R: ko.rr}
}

// splitRecord reports whether crypto/tls stopped inside a record, so that
// client bytes it read would be lost to the kernel.
func (ko *kernelOffer) splitRecord() bool {
	return !ko.rr.AtBoundary() || len(ko.pc.buf) > 0
}
