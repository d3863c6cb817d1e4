package tlsbridge

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 8448 section 3 ("Simple 1-RTT Handshake"), the server's handshake
// traffic keys: the same HKDF-Expand-Label that turns the application
// traffic secrets into the keys the kernel gets.
func TestExpandLabelRFC8448(t *testing.T) {
	secret := unhex(t, `b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4
		e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38`)
	key, iv, err := ktls.TrafficKeys(tls.TLS_AES_128_GCM_SHA256, secret)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, `3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc`); !bytes.Equal(key, want) {
		t.Errorf("key = % x, want % x", key, want)
	}
	if want := unhex(t, `5d 31 3e b2 67 12 76 ee 13 00 0b 30`); !bytes.Equal(iv, want) {
		t.Errorf("iv = % x, want % x", iv, want)
	}

	// The kernel struct: version, cipher, iv[4:12], key, salt = iv[0:4],
	// record sequence 0.
	info, err := ktls.CryptoInfo(tls.TLS_AES_128_GCM_SHA256, secret)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x04, 0x03, 51, 0}
	want = append(want, unhex(t, `67 12 76 ee 13 00 0b 30`)...)
	want = append(want, unhex(t, `3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc`)...)
	want = append(want, unhex(t, `5d 31 3e b2`)...)
	want = append(want, make([]byte, 8)...)
	if !bytes.Equal(info, want) {
		t.Errorf("crypto info =\n% x\nwant\n% x", info, want)
	}
	if len(info) != 40 {
		t.Errorf("struct tls12_crypto_info_aes_gcm_128 is 40 bytes, built %d", len(info))
	}
	info, err = ktls.CryptoInfo(tls.TLS_AES_256_GCM_SHA384, make([]byte, 48))
	if err != nil || len(info) != 56 {
		t.Errorf("struct tls12_crypto_info_aes_gcm_256 is 56 bytes, built %d (%v)", len(info), err)
	}
	if _, err := ktls.CryptoInfo(tls.TLS_CHACHA20_POLY1305_SHA256, secret); err == nil {
		t.Error("ChaCha20-Poly1305 must not be handed to the kernel")
	}
}

func TestKTLSRefusal(t *testing.T) {
	for _, c := range []struct {
		version, suite uint16
		want           string
	}{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, ""},
		{tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384, ""},
		{tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256 is not one the kernel path covers"},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "negotiated TLSv1.2; the kernel path takes TLS 1.3 only"},
	} {
		got := KTLSRefusal(tls.ConnectionState{Version: c.version, CipherSuite: c.suite})
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s %s: refusal %q, want %q", VersionName(c.version), tls.CipherSuiteName(c.suite), got, c.want)
		}
	}
}

func TestParseDataPathMode(t *testing.T) {
	for in, want := range map[string]DataPathMode{"": DataPathAuto, "auto": DataPathAuto, "ktls": DataPathKTLS, "bridge": DataPathBridge} {
		if got, err := ParseDataPathMode(in); err != nil || got != want {
			t.Errorf("ParseDataPathMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseDataPathMode("kernel"); err == nil || !strings.Contains(err.Error(), "auto, ktls or bridge") {
		t.Errorf("ParseDataPathMode(kernel): %v", err)
	}
}

// record builds a TLS record header and body of the given type.
func record(typ byte, body []byte) []byte {
	b := []byte{typ, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(b[3:], uint16(len(body)))
	return append(b, body...)
}

// chunkReader returns its input in the given chunk sizes, as a socket
// might.
type chunkReader struct {
	data   []byte
	chunks []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[0])
		c.chunks = c.chunks[1:]
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// No read through recordReader may cross a record boundary, however the
// bytes arrive and whatever buffer the reader offers.
func TestRecordReaderStopsAtRecordEnds(t *testing.T) {
	var stream []byte
	var ends []int
	for _, r := range [][]byte{
		record(22, bytes.Repeat([]byte{1}, 300)),
		record(20, []byte{1}),
		record(23, nil),
		record(23, bytes.Repeat([]byte{2}, 40)),
		record(23, bytes.Repeat([]byte{3}, 17000)),
	} {
		stream = append(stream, r...)
		ends = append(ends, len(stream))
	}
	for _, chunks := range [][]int{nil, {1, 1, 1, 1, 1, 1}, {3, 400, 7}, {5000}} {
		rr := ktls.NewRecordReader(&chunkReader{data: stream, chunks: chunks})
		pos := 0
		for pos < len(stream) {
			n, err := rr.Read(make([]byte, 64<<10))
			for _, e := range ends {
				if pos < e && pos+n > e {
					t.Fatalf("chunks %v: read [%d,%d) crosses the record end at %d", chunks, pos, pos+n, e)
				}
			}
			pos += n
			if err != nil {
				break
			}
		}
		if pos != len(stream) || !rr.AtBoundary() {
			t.Errorf("chunks %v: read %d of %d bytes, at boundary %v", chunks, pos, len(stream), rr.AtBoundary())
		}
	}
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// holdConn passes the client's first flight (its ClientHello) through, and
// from its first read on (the server's flight has arrived) holds every
// write until flush: the Finished and the first application record then
// reach the server in one segment, as a fast client's do.
type holdConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	held    []byte
}

func (h *holdConn) Read(p []byte) (int, error) {
	h.mu.Lock()
	h.holding = true
	h.mu.Unlock()
	return h.Conn.Read(p)
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holding {
		h.held = append(h.held, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = false
	_, err := h.Conn.Write(h.held)
	return err
}

// sealRecord protects one TLS 1.3 application-data record with a key and IV
// derived by trafficKeys, the way the kernel does it (RFC 8446 5.2, 5.3).
func sealRecord(t *testing.T, key, iv []byte, seq uint64, data []byte) []byte {
	a, err := newGCM(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce := append([]byte(nil), iv...)
	for i := 0; i < 8; i++ {
		nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	inner := append(append([]byte(nil), data...), ktls.RecordApplication)
	hdr := []byte{ktls.RecordApplication, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+a.Overhead()))
	return a.Seal(hdr, nonce, inner, hdr)
}

// openRecord is sealRecord's inverse for one whole record.
func openRecord(key, iv []byte, seq uint64, rec []byte) ([]byte, error) {
	a, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := append([]byte(nil), iv...)
	for i := 0; i < 8; i++ {
		nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	if len(rec) < 5 || rec[0] != ktls.RecordApplication {
		return nil, errors.New("not an application data record")
	}
	inner, err := a.Open(nil, nonce, rec[5:], rec[:5])
	if err != nil {
		return nil, err
	}
	if len(inner) == 0 || inner[len(inner)-1] != ktls.RecordApplication {
		return nil, errors.New("inner content type is not application data")
	}
	return inner[:len(inner)-1], nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// readRecord reads exactly one TLS record from c.
func readRecord(c net.Conn) ([]byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// handshakeForKernel runs the server side of ServeConn's kernel-path
// handshake on an accepted loopback connection: a per-connection key log,
// session tickets off, crypto/tls reading through recordReader.
func handshakeForKernel(t *testing.T, raw net.Conn, cert tls.Certificate) (*tls.Conn, *ktls.RecordReader, *ktls.SecretLog) {
	t.Helper()
	log := &ktls.SecretLog{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true, KeyLogWriter: log}
	rr := ktls.NewRecordReader(raw)
	tc := tls.Server(ktls.ReaderConn{Conn: raw, R: rr}, cfg)
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return tc, rr, log
}

func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// The client's Finished and its first application record arrive in one
// segment. crypto/tls, reading through recordReader, must stop at the
// Finished: the application record stays in the socket, where (after the
// switch) the kernel decrypts it with the keys derived from the key log,
// at sequence 0. And the first record we seal with the derived server keys
// at sequence 0 is what a stock TLS client reads next: the handshake sent
// nothing under the application keys.
func TestKernelHandOffKeysAndBoundary(t *testing.T) {
	cert := testCert(t)
	craw, sraw := loopbackPair(t)
	hc := &holdConn{Conn: craw}
	greeting := []byte("@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n")

	clientErr := make(chan error, 1)
	var client *tls.Conn
	go func() {
		client = tls.Client(hc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		craw.SetDeadline(time.Now().Add(10 * time.Second))
		if err := client.Handshake(); err != nil {
			clientErr <- err
			return
		}
		if _, err := client.Write(greeting); err != nil {
			clientErr <- err
			return
		}
		clientErr <- hc.flush()
	}()

	tc, rr, log := handshakeForKernel(t, sraw, cert)
	if err := <-clientErr; err != nil {
		t.Fatalf("client: %v", err)
	}
	st := tc.ConnectionState()
	if r := KTLSRefusal(st); r != "" {
		t.Fatalf("refused: %s", r)
	}
	if !rr.AtBoundary() {
		t.Fatal("crypto/tls stopped inside a record")
	}
	cs, ss := log.Secrets()
	if cs == nil || ss == nil {
		t.Fatal(errNoSecrets)
	}

	// What crypto/tls left in the socket: exactly the greeting's record.
	rec, err := readRecord(sraw)
	if err != nil {
		t.Fatalf("the application record after the Finished is gone (crypto/tls read it): %v", err)
	}
	ck, civ, err := ktls.TrafficKeys(st.CipherSuite, cs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openRecord(ck, civ, 0, rec)
	if err != nil {
		t.Fatalf("opening the client's first record with the derived key at sequence 0: %v", err)
	}
	if !bytes.Equal(got, greeting) {
		t.Fatalf("client record = %q, want %q", got, greeting)
	}

	sk, siv, err := ktls.TrafficKeys(st.CipherSuite, ss)
	if err != nil {
		t.Fatal(err)
	}
	reply := []byte("@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n")
	if _, err := sraw.Write(sealRecord(t, sk, siv, 0, reply)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := client.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], reply) {
		t.Fatalf("client read %q, %v; want %q", buf[:n], err, reply)
	}
	log.Wipe()
	if cs, _ := log.Secrets(); !bytes.Equal(cs, make([]byte, len(cs))) {
		t.Error("wipe left the secret in memory")
	}
}

// The same with OpenSSL as the client and AES-256-GCM, whose key schedule
// runs on SHA-384: s_client sends a line after its handshake, we open it
// with the derived key, and s_client prints the record we seal.
func TestKernelKeysAES256WithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not installed")
		}
		t.Skip("openssl not installed")
	}
	cert := testCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command("openssl", "s_client", "-connect", ln.Addr().String(), "-tls1_3",
		"-ciphersuites", "TLS_AES_256_GCM_SHA384", "-quiet", "-no_ign_eof")
	line := []byte("from openssl\n")
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pw.Close(); cmd.Process.Kill(); cmd.Wait() }()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	sraw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sraw.Close()
	tc, rr, log := handshakeForKernel(t, sraw, cert)
	st := tc.ConnectionState()
	if st.CipherSuite != tls.TLS_AES_256_GCM_SHA384 || !rr.AtBoundary() {
		t.Fatalf("cipher %s, at boundary %v", tls.CipherSuiteName(st.CipherSuite), rr.AtBoundary())
	}
	pw.Write(line)
	cs, ss := log.Secrets()
	rec, err := readRecord(sraw)
	if err != nil {
		t.Fatal(err)
	}
	ck, civ, _ := ktls.TrafficKeys(st.CipherSuite, cs)
	got, err := openRecord(ck, civ, 0, rec)
	if err != nil || !bytes.Equal(got, line) {
		t.Fatalf("openssl's record: %q, %v; want %q", got, err, line)
	}
	sk, siv, _ := ktls.TrafficKeys(st.CipherSuite, ss)
	sraw.Write(sealRecord(t, sk, siv, 0, []byte("from us\n")))
	printed := make(chan string, 1)
	go func() {
		buf := make([]byte, 8)
		n, _ := io.ReadFull(stdout, buf)
		printed <- string(buf[:n])
	}()
	select {
	case got := <-printed:
		if got != "from us\n" {
			t.Fatalf("openssl printed %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("openssl printed nothing of our record within 5s")
	}
}

// On a kernel without the TLS module, ktls.Enable must fail in a way that
// leaves a plain TCP socket the bridge can still use; on one with it, the
// socket must switch.
func TestEnableKTLSOnThisKernel(t *testing.T) {
	c, s := loopbackPair(t)
	rc, err := s.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	secret := sha256.Sum256([]byte("not a real session"))
	err = ktls.Enable(rc, tls.TLS_AES_128_GCM_SHA256, secret[:], secret[:])
	missing := KernelTLSUnavailable()
	if missing == "" {
		if err != nil {
			t.Fatalf("kernel lists the tls ULP, but the switch failed: %v", err)
		}
		return
	}
	t.Logf("this kernel: %s", missing)
	var ke *ktls.Error
	if !errors.As(err, &ke) || !ke.Fallback {
		t.Fatalf("ktls.Enable = %v, want a failure the bridge can take over from", err)
	}
	if !strings.Contains(explainKTLS(ke), "no tls module") && !strings.Contains(explainKTLS(ke), "AES-GCM") {
		t.Errorf("explanation %q names neither the module nor the cipher", explainKTLS(ke))
	}
	// The socket still carries plain bytes both ways.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after the failed switch: %q, %v", buf, err)
	}
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("after the failed switch: %q, %v", buf, err)
	}
	in, out := wireBytes(rc)
	if in != 4 || out != 4 {
		t.Errorf("TCP_INFO bytes in=%d out=%d, want 4 and 4", in, out)
	}
}

func TestDescribeRecord(t *testing.T) {
	for _, c := range []struct {
		typ  byte
		body []byte
		want string
	}{
		{ktls.RecordAlert, []byte{1, 0}, "close_notify"},
		{ktls.RecordAlert, []byte{2, 20}, "TLS alert 20"},
		{ktls.RecordHandshake, []byte{24, 0, 0, 1, 0}, "KeyUpdate"},
		{ktls.RecordHandshake, []byte{4}, "post-handshake"},
	} {
		if got := describeRecord(c.typ, c.body); !strings.Contains(got, c.want) {
			t.Errorf("describeRecord(%d, % x) = %q, want %q", c.typ, c.body, got, c.want)
		}
	}
}

// The key log line crypto/tls hands over holds a traffic secret in hex; the
// writer keeps the decoded secret and leaves no readable copy of the line.
func TestSecretLogLeavesNoCopy(t *testing.T) {
	secret := bytes.Repeat([]byte{0xab}, 32)
	line := []byte(fmt.Sprintf("SERVER_TRAFFIC_SECRET_0 %x %x\n", bytes.Repeat([]byte{1}, 32), secret))
	l := &ktls.SecretLog{}
	if n, err := l.Write(line); n != len(line) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if _, s := l.Secrets(); !bytes.Equal(s, secret) {
		t.Fatalf("server secret %x, want %x", s, secret)
	}
	if bytes.Contains(line, []byte("abab")) || bytes.Contains(line, []byte("SECRET")) {
		t.Errorf("the key log line still holds the secret after Write: %q", line)
	}
	_, s := l.Secrets()
	l.Wipe()
	if !bytes.Equal(s, make([]byte, 32)) {
		t.Errorf("wipe left the secret: %x", s)
	}
}
