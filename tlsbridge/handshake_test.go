package tlsbridge

import "testing"

func TestHelloVersion(t *testing.T) {
	if v, ok := HelloVersion([]byte{0x16, 3, 0, 0, 50, 1, 0, 0, 46, 3, 0}); !ok || v != 0x0300 {
		t.Errorf("got %x %v", v, ok)
	}
	if _, ok := HelloVersion([]byte{0x16, 3}); ok {
		t.Error("short input parsed")
	}
}
