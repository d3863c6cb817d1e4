package ktls

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash"
)

// From linux/tls.h.
const (
	tls13Version      = 0x0304
	tlsCipherAESGCM   = 51 // TLS_CIPHER_AES_GCM_128
	tlsCipherAESGCM25 = 52 // TLS_CIPHER_AES_GCM_256
)

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

// Covers reports whether the kernel path takes this TLS 1.3 suite.
func Covers(suite uint16) bool {
	_, ok := kernelCiphers[suite]
	return ok
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

// TrafficKeys derives a record-protection key and IV from a TLS 1.3
// application traffic secret (RFC 8446 section 7.3).
func TrafficKeys(suite uint16, secret []byte) (key, iv []byte, err error) {
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

// CryptoInfo builds the kernel's struct tls12_crypto_info_aes_gcm_{128,256}
// for one direction: the version and cipher, then the per-record IV part,
// the key, the fixed salt and the record sequence number. TLS 1.3's 12-byte
// IV is split as the kernel wants it: salt = iv[0:4], iv = iv[4:12]. The
// sequence starts at 0: the caller switches before any record under the
// application keys went either way (session tickets off on our server,
// RecordReader on the reading side).
func CryptoInfo(suite uint16, secret []byte) ([]byte, error) {
	key, iv, err := TrafficKeys(suite, secret)
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
