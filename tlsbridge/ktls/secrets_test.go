package ktls

import (
	"bytes"
	"io"
	"testing"
)

// A RecordReader never reads past the record in progress, until Stop: then
// one read takes whatever the conn has.
func TestRecordReaderStop(t *testing.T) {
	rec := func(body string) []byte {
		return append([]byte{23, 3, 3, 0, byte(len(body))}, body...)
	}
	stream := append(append(rec("first"), rec("second")...), rec("third")...)
	rr := NewRecordReader(bytes.NewReader(stream))
	buf := make([]byte, 1024)
	var got []byte
	for len(got) < len(rec("first")) {
		n, err := rr.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, rec("first")) || !rr.AtBoundary() {
		t.Fatalf("bounded reads gave %q (at a boundary: %v), want exactly the first record", got, rr.AtBoundary())
	}
	rr.Stop()
	n, err := rr.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], stream[len(got):]) {
		t.Fatalf("after Stop one read gave %q, %v; want the two remaining records at once", buf[:n], err)
	}
	if _, err := rr.Read(buf); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
}
