package tlsbridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// DataPath is how a session's bytes travel once the handshake is done.
type DataPath int

const (
	// DataPathAuto takes the kernel path where it can serve the session
	// and the bridge everywhere else.
	DataPathAuto DataPath = iota
	// DataPathKTLS insists on the kernel path: a session it cannot serve
	// is refused, never bridged.
	DataPathKTLS
	// DataPathBridge always copies through our process.
	DataPathBridge
)

func (d DataPath) String() string {
	return [...]string{"auto", "ktls", "bridge"}[d]
}

// ParseDataPath maps the --datapath value.
func ParseDataPath(s string) (DataPath, error) {
	switch s {
	case "auto", "":
		return DataPathAuto, nil
	case "ktls":
		return DataPathKTLS, nil
	case "bridge":
		return DataPathBridge, nil
	}
	return 0, fmt.Errorf("--datapath %q: give auto, ktls or bridge", s)
}

// Kernel TLS constants from linux/tls.h; golang.org/x/sys has SOL_TLS and
// TCP_ULP but neither these nor the crypto-info structs.
const (
	tlsTX             = 1
	tlsRX             = 2
	tlsSetRecordType  = 1 // cmsg type on sendmsg
	tlsGetRecordType  = 2 // cmsg type on recvmsg
	tls13Version      = 0x0304
	tlsCipherAESGCM   = 51 // TLS_CIPHER_AES_GCM_128
	tlsCipherAESGCM25 = 52 // TLS_CIPHER_AES_GCM_256

	recordAlert       = 21
	recordHandshake   = 22
	recordApplication = 23
)

// availableULPs is where the kernel lists the TCP upper-layer protocols it
// has loaded.
const availableULPs = "/proc/sys/net/ipv4/tcp_available_ulp"

// KernelTLSMissing says why this kernel cannot take a TLS socket, or ""
// when its "tls" ULP is loaded. The kernel loads the module on demand only
// for callers with CAP_NET_ADMIN, which a sandboxed service lacks, so a
// module that is not loaded counts as missing.
func KernelTLSMissing() string {
	b, err := os.ReadFile(availableULPs)
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", availableULPs, err)
	}
	for _, u := range strings.Fields(string(b)) {
		if u == "tls" {
			return ""
		}
	}
	return fmt.Sprintf("the kernel has no TLS module loaded (%s: %q; load it with \"modprobe tls\", the package does so at boot)", availableULPs, strings.TrimSpace(string(b)))
}

// kernelCipher is what the kernel path needs to know about a TLS 1.3
// suite: the kernel's cipher number, the key length, and the hash of the
// suite's key schedule.
type kernelCipher struct {
	kernel uint16
	keyLen int
	hash   func() hash.Hash
}

// kernelCiphers are the TLS 1.3 suites the kernel path covers. The
// kernel also knows ChaCha20-Poly1305, but from a module that a system
// loading only "tls" does not have, and a key the kernel rejects after
// TLS_TX succeeded would leave nothing to fall back to.
var kernelCiphers = map[uint16]kernelCipher{
	tls.TLS_AES_128_GCM_SHA256: {tlsCipherAESGCM, 16, sha256.New},
	tls.TLS_AES_256_GCM_SHA384: {tlsCipherAESGCM25, 32, sha512.New384},
}

// KTLSRefusal says why a session with this TLS state cannot go to the
// kernel, or "" when it can.
func KTLSRefusal(st tls.ConnectionState) string {
	if st.Version != tls.VersionTLS13 {
		return fmt.Sprintf("the client negotiated %s; the kernel path takes TLS 1.3 only", VersionName(st.Version))
	}
	if _, ok := kernelCiphers[st.CipherSuite]; !ok {
		return fmt.Sprintf("cipher %s is not one the kernel path covers (AES-128-GCM, AES-256-GCM)", tls.CipherSuiteName(st.CipherSuite))
	}
	return ""
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context (RFC
// 8446 section 7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0) // empty context
	return hkdfExpand(h, secret, info, n), nil
}

// hkdfExpand is HKDF-Expand (RFC 5869 section 2.3), written out because
// crypto/hkdf needs a newer Go than the module's minimum.
func hkdfExpand(h func() hash.Hash, prk, info []byte, n int) []byte {
	out := make([]byte, 0, n)
	var prev []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(h, prk)
		m.Write(prev)
		m.Write(info)
		m.Write([]byte{i})
		prev = m.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n]
}

// trafficKeys derives a record-protection key and IV from a TLS 1.3
// application traffic secret (RFC 8446 section 7.3).
func trafficKeys(suite uint16, secret []byte) (key, iv []byte, err error) {
	kc, ok := kernelCiphers[suite]
	if !ok {
		return nil, nil, fmt.Errorf("cipher %s not covered", tls.CipherSuiteName(suite))
	}
	if key, err = expandLabel(kc.hash, secret, "key", kc.keyLen); err != nil {
		return nil, nil, err
	}
	if iv, err = expandLabel(kc.hash, secret, "iv", 12); err != nil {
		return nil, nil, err
	}
	return key, iv, nil
}

// cryptoInfo builds the kernel's struct tls12_crypto_info_aes_gcm_{128,256}
// for one direction: the version and cipher, then the per-record IV part,
// the key, the fixed salt and the record sequence number. TLS 1.3's 12-byte
// IV is split as the kernel wants it: salt = iv[0:4], iv = iv[4:12]. The
// sequence starts at 0 because the handshake sent nothing encrypted under
// the application keys (session tickets are off).
func cryptoInfo(suite uint16, secret []byte) ([]byte, error) {
	key, iv, err := trafficKeys(suite, secret)
	if err != nil {
		return nil, err
	}
	kc := kernelCiphers[suite]
	b := make([]byte, 4, 4+8+kc.keyLen+4+8)
	binary.NativeEndian.PutUint16(b[0:2], tls13Version)
	binary.NativeEndian.PutUint16(b[2:4], kc.kernel)
	b = append(b, iv[4:12]...)
	b = append(b, key...)
	b = append(b, iv[0:4]...)
	b = append(b, make([]byte, 8)...)
	clear(key)
	clear(iv)
	return b, nil
}

// secretLog receives crypto/tls's key log for one connection (a
// per-connection tls.Config.KeyLogWriter) and keeps the two application
// traffic secrets; nothing is written anywhere.
type secretLog struct {
	mu             sync.Mutex
	client, server []byte
}

func (l *secretLog) Write(p []byte) (int, error) {
	// Parsed in place: a string conversion would leave a copy of the
	// secret that nothing can wipe.
	f := bytes.Fields(p)
	if len(f) == 3 {
		var dst *[]byte
		switch string(f[0]) {
		case "CLIENT_TRAFFIC_SECRET_0":
			dst = &l.client
		case "SERVER_TRAFFIC_SECRET_0":
			dst = &l.server
		}
		if dst != nil {
			s := make([]byte, hex.DecodedLen(len(f[2])))
			if _, err := hex.Decode(s, f[2]); err == nil {
				l.mu.Lock()
				clear(*dst)
				*dst = s
				l.mu.Unlock()
			} else {
				clear(s)
			}
		}
	}
	// The line is crypto/tls's own one-off allocation for this call
	// (writeKeyLog formats it afresh and drops it), and it holds a
	// traffic secret in hex: wipe it rather than leave it to the
	// garbage collector.
	clear(p)
	return len(p), nil
}

func (l *secretLog) secrets() (client, server []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client, l.server
}

func (l *secretLog) wipe() {
	l.mu.Lock()
	clear(l.client)
	clear(l.server)
	l.mu.Unlock()
}

// recordReader hands crypto/tls at most the rest of the current TLS record.
// crypto/tls reads its input in large chunks, so the client's first
// application record (rsync's greeting, sent right behind the Finished)
// could end up in its buffer, where the kernel would never see it and the
// session would lose its first bytes. Bounded like this, everything after
// the Finished stays in the socket for the kernel to decrypt.
type recordReader struct {
	r    io.Reader
	hdr  [5]byte
	hn   int // header bytes read so far
	left int // body bytes of the current record still unread
}

func (rr *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if rr.left > 0 {
		n, err := rr.r.Read(p[:min(len(p), rr.left)])
		rr.left -= n
		return n, err
	}
	n, err := rr.r.Read(p[:min(len(p), len(rr.hdr)-rr.hn)])
	copy(rr.hdr[rr.hn:], p[:n])
	rr.hn += n
	if rr.hn == len(rr.hdr) {
		rr.left = int(binary.BigEndian.Uint16(rr.hdr[3:5]))
		rr.hn = 0
	}
	return n, err
}

// atBoundary reports whether everything read so far ends on a record
// boundary.
func (rr *recordReader) atBoundary() bool { return rr.hn == 0 && rr.left == 0 }

// ktlsError is a failure to switch a socket to kernel TLS. fallback says
// whether the socket is still a plain TCP socket, so the bridge can take
// the session over.
type ktlsError struct {
	step     string
	err      error
	fallback bool
}

func (e *ktlsError) Error() string { return e.step + ": " + e.err.Error() }
func (e *ktlsError) Unwrap() error { return e.err }

// explain says what a failed switch means for the admin.
func (e *ktlsError) explain() string {
	switch {
	case e.step == "TCP_ULP" && errors.Is(e.err, unix.ENOENT):
		return "the kernel has no TLS module (setsockopt TCP_ULP \"tls\": ENOENT; load it with \"modprobe tls\", the package does so at boot)"
	case e.step == "TLS_TX" && errors.Is(e.err, unix.ENOENT):
		return "the kernel lacks the AES-GCM cipher for TLS (setsockopt TLS_TX: ENOENT; load the gcm module)"
	}
	return "switching the socket to kernel TLS failed: " + e.Error()
}

// enableKTLS attaches the TLS ULP to the socket and hands the kernel both
// directions' keys. Until TLS_RX is set the socket still passes bytes
// through unchanged, so every failure before it can fall back.
func enableKTLS(rc syscall.RawConn, suite uint16, clientSecret, serverSecret []byte) error {
	tx, err := cryptoInfo(suite, serverSecret)
	if err != nil {
		return &ktlsError{"keys", err, true}
	}
	defer clear(tx)
	rx, err := cryptoInfo(suite, clientSecret)
	if err != nil {
		return &ktlsError{"keys", err, true}
	}
	defer clear(rx)
	var kerr error
	cerr := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, "tls"); err != nil {
			kerr = &ktlsError{"TCP_ULP", err, true}
			return
		}
		// The structs are passed without a string copy (unsafe.String
		// shares their bytes), so that clearing tx and rx leaves no key
		// behind.
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsTX, unsafe.String(&tx[0], len(tx))); err != nil {
			kerr = &ktlsError{"TLS_TX", err, true}
			return
		}
		if err := unix.SetsockoptString(int(fd), unix.SOL_TLS, tlsRX, unsafe.String(&rx[0], len(rx))); err != nil {
			kerr = &ktlsError{"TLS_RX", err, false}
		}
	})
	if cerr != nil {
		return &ktlsError{"socket", cerr, true}
	}
	return kerr
}

// recordTypeCmsg is a control message naming the TLS record type of what
// sendmsg sends on a kernel TLS socket.
func recordTypeCmsg(typ byte) []byte {
	b := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_TLS
	h.Type = tlsSetRecordType
	h.SetLen(unix.CmsgLen(1))
	b[unix.CmsgLen(0)] = typ
	return b
}

// sendCloseNotify sends TLS close_notify through the kernel: an alert
// record (warning, close_notify) sealed under the session's next sequence
// number. Strict clients (ours, OpenSSL) treat an end without it as a
// truncation attack.
func sendCloseNotify(rc syscall.RawConn, deadline time.Time) error {
	oob := recordTypeCmsg(recordAlert)
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), []byte{1, 0}, oob, nil, unix.MSG_DONTWAIT)
		return !(errors.Is(serr, unix.EAGAIN) && time.Now().Before(deadline))
	})
	if err != nil {
		return err
	}
	return serr
}

// pendingRecord peeks at the next record the kernel holds for the socket
// without consuming it: its type and first bytes. ok is false when nothing
// is waiting. rsync reads with plain read(2), which the kernel answers with
// EIO for a record that is not application data; this says which it was.
func pendingRecord(rc syscall.RawConn) (typ byte, body []byte, ok bool) {
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(1))
	rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		if err != nil || n < 0 {
			return true
		}
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return true
		}
		typ = recordApplication
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_TLS && m.Header.Type == tlsGetRecordType && len(m.Data) > 0 {
				typ = m.Data[0]
			}
		}
		body, ok = buf[:n], n > 0 || typ != recordApplication
		return true
	})
	return typ, body, ok
}

// describeRecord names a record that ended a kernel TLS session.
func describeRecord(typ byte, body []byte) string {
	switch typ {
	case recordAlert:
		if len(body) >= 2 && body[1] == 0 {
			return "the client sent close_notify"
		}
		if len(body) >= 2 {
			return fmt.Sprintf("the client sent TLS alert %d", body[1])
		}
		return "the client sent a TLS alert"
	case recordHandshake:
		if len(body) >= 1 && body[0] == 24 {
			return "the client sent a TLS KeyUpdate, which the kernel path cannot follow"
		}
		return "the client sent a post-handshake TLS message the kernel path cannot follow"
	}
	return fmt.Sprintf("the client sent a TLS record of type %d", typ)
}

// wireBytes reads how many bytes the kernel has received on the socket and
// how many of ours the client has acknowledged, TLS framing included.
func wireBytes(rc syscall.RawConn) (in, out int64) {
	rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			in, out = int64(ti.Bytes_received), int64(ti.Bytes_acked)
		}
	})
	return in, out
}

// setUserTimeout bounds how long data we sent may stay unacknowledged
// before the kernel gives up on the connection: with rsync writing to the
// socket itself, this is what still bounds a stalled client.
func setUserTimeout(rc syscall.RawConn, d time.Duration) {
	if d <= 0 {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}

// drainKTLS reads what the client still sends after our close_notify, up
// to deadline, so that closing with unread input does not send a reset that
// could overtake the close_notify. It reads with recvmsg and a control
// buffer, because a plain read fails on the client's own alert.
func drainKTLS(rc syscall.RawConn, deadline time.Time) {
	buf := make([]byte, 16<<10)
	oob := make([]byte, unix.CmsgSpace(1))
	for total := 0; total < 1<<20 && time.Now().Before(deadline); {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil || rerr != nil || n == 0 {
			return
		}
		total += n
	}
}

// errNoSecrets is a handshake whose key log lacked a secret, which would
// be a crypto/tls change we rely on not happening.
var errNoSecrets = errors.New("crypto/tls logged no application traffic secrets")

// kernelOffer is what the handshake keeps for a session that may go to the
// kernel: the traffic secrets crypto/tls logs, and the record-bounded reader
// it read the handshake through. nil when the data path is the bridge.
type kernelOffer struct {
	log *secretLog
	rr  *recordReader
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
	ko.log = &secretLog{}
	cfg.KeyLogWriter = ko.log
	return cfg
}

// wipe clears the secrets, whichever way the session went.
func (ko *kernelOffer) wipe() {
	if ko != nil && ko.log != nil {
		ko.log.wipe()
	}
}

// input is what crypto/tls reads the handshake from.
func (ko *kernelOffer) input(pc *peekedConn) net.Conn {
	if ko == nil {
		return pc
	}
	ko.pc = pc
	ko.rr = &recordReader{r: pc}
	return readerConn{pc, ko.rr}
}

// readerConn reads through r and does everything else on Conn.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// refusal says why this session cannot go to the kernel, "" when it
// can.
func (ko *kernelOffer) refusal(raw net.Conn, st tls.ConnectionState) (string, *net.TCPConn) {
	// activation's ProxiedConn: the client's address came in a PROXY
	// header, and only the bridge can pass it on to rsync.
	if why := bridgeReason(raw, st, ""); why != "" {
		return why, nil
	}
	tcp := raw.(*net.TCPConn)
	if !ko.rr.atBoundary() || len(ko.pc.buf) > 0 {
		return "crypto/tls stopped inside a record (client bytes would be lost to the kernel)", nil
	}
	return "", tcp
}

// bridgeReason says why an auto session that never tried the kernel path
// was bridged: its own reason first (a load balancer, TLS 1.2, a cipher),
// else that the kernel has no TLS module.
func bridgeReason(raw net.Conn, st tls.ConnectionState, kernelMissing string) string {
	if _, ok := raw.(*net.TCPConn); !ok {
		return "the connection came through a load balancer (--trusted-proxy): rsync must learn the client's address from a PROXY header"
	}
	if why := KTLSRefusal(st); why != "" {
		return why
	}
	if kernelMissing != "" {
		return "no kernel TLS module"
	}
	return ""
}

// serveKernel hands the session to the kernel: the client's own socket,
// switched to kernel TLS, becomes rsync's stdin. No pair, no copy loop and
// no PROXY header: rsync's getpeername sees the real client. We stay only to
// reap rsync, send close_notify and write the summary. It returns false,
// with nothing done, when the bridge should serve the session instead.
func (s *Server) serveKernel(ctx context.Context, raw net.Conn, ko *kernelOffer, st tls.ConnectionState, env []string, res *Result) bool {
	why, tcp := ko.refusal(raw, st)
	var rc syscall.RawConn
	if why == "" {
		var err error
		if rc, err = tcp.SyscallConn(); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		cs, ss := ko.log.secrets()
		var err error
		if cs == nil || ss == nil {
			why = errNoSecrets.Error()
		} else {
			err = enableKTLS(rc, st.CipherSuite, cs, ss)
		}
		// The kernel has its copies now (or the session is bridged,
		// where crypto/tls keeps its own): ours go at once, not when
		// the session ends.
		ko.log.wipe()
		if err != nil {
			var ke *ktlsError
			if errors.As(err, &ke) && !ke.fallback {
				res.Err = fmt.Errorf("kernel tls with %s: %w (the session cannot continue)", res.Peer, err)
				return true
			}
			why = ke.explain()
		}
	}
	if why != "" {
		if s.DataPath == DataPathKTLS {
			res.Err = fmt.Errorf("kernel tls with %s: %s; refused (--datapath ktls)", res.Peer, why)
			return true
		}
		// No line of its own: the session's summary carries why, so a
		// server that forks per connection still logs one line each.
		res.Fallback = why
		return false
	}
	res.DataPath = "ktls"
	res.Pair = "-"

	// From here on the socket speaks TLS through the kernel only: the
	// tls.Conn must never write again, or its records would collide with
	// the kernel's sequence numbers.
	f, err := tcp.File() // a dup for rsync's stdin; raw stays ours
	if err != nil {
		res.Err = fmt.Errorf("start rsync with %s: %w", res.Peer, err)
		return true
	}
	KeepAlive(raw, s.Stall)
	setUserTimeout(rc, s.Stall)
	rsync := s.Rsync.OwnSocket() // rsync reads the client itself
	cmd, err := rsync.Start(f, "", env, s.RsyncStderr)
	f.Close() // rsync holds its own copy now
	if err != nil {
		res.Err = fmt.Errorf("start rsync with %s: %w", res.Peer, err)
		return true
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		rsync.Signal(cmd.Process, syscall.SIGTERM)
		select {
		case werr = <-waited:
		case <-time.After(10 * time.Second):
			rsync.Signal(cmd.Process, syscall.SIGKILL)
			werr = <-waited
		}
	}
	res.RsyncExit = rsyncd.ExitStatus(werr)

	// What made rsync stop, if the client sent something the kernel does
	// not pass to read(2): an alert, a KeyUpdate.
	typ, body, pending := pendingRecord(rc)
	// A client that already hung up (rsync's own protocol told it the
	// transfer was complete) cannot take the close_notify; that is no
	// failure of the session.
	err = sendCloseNotify(rc, time.Now().Add(5*time.Second))
	if err != nil && res.RsyncExit == 0 && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		res.Err = fmt.Errorf("kernel tls with %s: sending close_notify: %w", res.Peer, err)
	}
	tcp.CloseWrite()
	drainKTLS(rc, time.Now().Add(s.Linger))
	res.In, res.Out = wireBytes(rc)
	if pending && typ != recordApplication && res.RsyncExit != 0 {
		res.Err = fmt.Errorf("kernel tls with %s: %s; rsync's read failed and the session ended", res.Peer, describeRecord(typ, body))
	}
	return true
}
