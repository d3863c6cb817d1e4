// Command tlsref is the bare Go TLS reference for tests/bench/syscalls.sh:
// a TLS 1.3 stream over loopback with nothing in between, the floor the
// bridge's two ends are held against. Each side reports its own CPU
// (getrusage, user+system) when done.
//
//	tlsref send ADDR-FILE BYTES   listen on 127.0.0.1:0, write ADDR-FILE, send BYTES to one client in 128 KiB writes
//	tlsref recv ADDR              read everything to stdout in 128 KiB reads
//	tlsref drain ADDR-FILE        listen, read one plain TCP stream to its end in 128 KiB reads
//	tlsref feed ADDR BYTES        write BYTES of plain TCP in rsync's pieces (32 KiB and a header)
//
// drain and feed measure what the server's bridge pays on top of a bare
// sender: reading rsync's output from the socket pair.
//
// Both print one line on stderr: "tlsref SIDE bytes=N cpu_s=X cipher=NAME".
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tlsref:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 3 && args[0] == "send":
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		return send(args[1], n)
	case len(args) == 2 && args[0] == "recv":
		return recv(args[1])
	case len(args) == 2 && args[0] == "drain":
		return drain(args[1])
	case len(args) == 3 && args[0] == "feed":
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		return feed(args[1], n)
	}
	return fmt.Errorf("usage: tlsref send ADDR-FILE BYTES | recv ADDR | drain ADDR-FILE | feed ADDR BYTES")
}

func cpu() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func report(side string, n int64, c0 float64, st tls.ConnectionState) {
	fmt.Fprintf(os.Stderr, "tlsref %s bytes=%d cpu_s=%.3f cipher=%s\n", side, n, cpu()-c0, tls.CipherSuiteName(st.CipherSuite))
}

func send(addrFile string, total int64) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	raw, err := acceptOne(addrFile)
	if err != nil {
		return err
	}
	c0 := cpu()
	tc := tls.Server(raw, cfg)
	defer tc.Close()
	buf := make([]byte, 128<<10)
	rand.Read(buf)
	var n int64
	for n < total {
		w, err := tc.Write(buf[:min(int64(len(buf)), total-n)])
		n += int64(w)
		if err != nil {
			return err
		}
	}
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	io.Copy(io.Discard, tc) // until the receiver has it all and closes
	report("send", n, c0, tc.ConnectionState())
	return nil
}

func recv(addr string) error {
	c0 := cpu()
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer tc.Close()
	n, err := io.CopyBuffer(os.Stdout, tc, make([]byte, 128<<10))
	if err != nil {
		return err
	}
	report("recv", n, c0, tc.ConnectionState())
	return nil
}

// rsyncPiece is what rsync writes to its socket at a time while sending a
// file, as seen under strace: its 32 KiB output buffer and 8 bytes of
// multiplex headers.
const rsyncPiece = 32<<10 + 8

// acceptOne listens on a loopback port, writes its address to addrFile and
// returns the first connection.
func acceptOne(addrFile string) (net.Conn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if err := os.WriteFile(addrFile, []byte(l.Addr().String()), 0o644); err != nil {
		return nil, err
	}
	return l.Accept()
}

func drain(addrFile string) error {
	c, err := acceptOne(addrFile)
	if err != nil {
		return err
	}
	defer c.Close()
	c0 := cpu()
	buf := make([]byte, 128<<10)
	var n int64
	for {
		r, err := c.Read(buf)
		n += int64(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "tlsref drain bytes=%d cpu_s=%.3f\n", n, cpu()-c0)
	return nil
}

func feed(addr string, total int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, rsyncPiece)
	for n := int64(0); n < total; {
		w, err := c.Write(buf[:min(int64(len(buf)), total-n)])
		n += int64(w)
		if err != nil {
			return err
		}
	}
	return nil
}
