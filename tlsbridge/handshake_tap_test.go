package tlsbridge

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/ktls"
	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/tlserr"
)

// The tap finds the client's last record however crypto/tls's reads cut
// the stream, and tells an unencrypted alert from anything else.
func TestRecordTap(t *testing.T) {
	hello := append([]byte{0x16, 3, 1, 0, 4}, 1, 0, 0, 0)
	cases := []struct {
		name   string
		stream []byte
		alert  tlserr.Alert
		ok     bool
		first  bool
	}{
		{"legacy alert", append(append([]byte{}, hello...), 0x15, 3, 1, 0, 2, 2, 0), 0, true, false},
		{"tls13 plaintext alert", append(append([]byte{}, hello...), 0x14, 3, 3, 0, 1, 1, 0x15, 3, 3, 0, 2, 2, 48), 48, true, false},
		{"encrypted alert", append(append([]byte{}, hello...), 0x15, 3, 3, 0, 19, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19), 0, false, false},
		{"alert cut short", append(append([]byte{}, hello...), 0x15, 3, 3, 0, 2, 2), 0, false, false},
		{"hello only", hello, 0, false, true},
		{"first record an alert", []byte{0x15, 3, 3, 0, 2, 2, 40}, 40, true, true},
	}
	for _, tc := range cases {
		for _, chunk := range []int{1, 2, 5, 7, 1 << 10} {
			tap := &recordTap{r: bytes.NewReader(tc.stream)}
			buf := make([]byte, chunk)
			for {
				if _, err := tap.Read(buf); err != nil {
					break
				}
			}
			a, ok := tap.plainAlert()
			if ok != tc.ok || a != tc.alert || tap.firstRecord() != tc.first {
				t.Errorf("%s, reads of %d: alert %d %v first %v, want %d %v %v", tc.name, chunk, a, ok, tap.firstRecord(), tc.alert, tc.ok, tc.first)
			}
		}
	}
}

// Under the kernel offer's record-bounded reader crypto/tls reads a
// refused record's header alone; finishAlert reads the alert's two bytes.
func TestRecordTapFinishAlert(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		b.Write([]byte{0x15, 3, 1, 0, 2, 2, 48})
		time.Sleep(time.Second)
		b.Close()
	}()
	rr := ktls.NewRecordReader(a)
	tap := &recordTap{r: rr}
	if _, err := io.ReadFull(tap, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if _, ok := tap.plainAlert(); ok {
		t.Fatal("alert named before its body was read")
	}
	tap.finishAlert(a)
	if al, ok := tap.plainAlert(); !ok || al != tlserr.AlertUnknownCA {
		t.Errorf("after finishAlert: %v %v, want unknown CA", al, ok)
	}
}
