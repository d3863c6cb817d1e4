package tlsbridge

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		kind Kind
		more bool
	}{
		{"\x16\x03\x01\x00", KindTLS, false},
		{"@RSYNCD: 32.0\n", KindPlainRsync, false},
		{"@RSY", KindOther, true},
		{"GET / HTTP/1.1\r\n", KindHTTP, false},
		{"GE", KindOther, true},
		{"OPTIONS * HTTP/1.1", KindHTTP, false},
		{"SSH-2.0-OpenSSH_9.2\r\n", KindSSH, false},
		{"\x80\x2e\x01\x00\x02", KindSSLv2, false},
		{"\x80\x2e", KindOther, true},
		{"\x80\x2e\x05", KindOther, false},
		{"hello world", KindOther, false},
		{"", KindOther, true},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", KindProxy, false},
		{"PROXY ", KindProxy, false},
		{"PRO", KindOther, true},
		{"PROXYZ", KindOther, false},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", KindProxy, false},
		{"\r\n\r\n\x00", KindOther, true},
	}
	for _, tc := range tests {
		k, more := Classify([]byte(tc.in))
		if k != tc.kind || more != tc.more {
			t.Errorf("Classify(%q) = %v,%v; want %v,%v", tc.in, k, more, tc.kind, tc.more)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"\x16\x03\x01", "@RSYNCD: 32.0\n", "GET /", "SSH-2.0", "\x80\x2e\x01", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, more := Classify(b)
		if len(b) > 0 && b[0] == 0x16 && (k != KindTLS || more) {
			t.Fatalf("TLS record classified as %v", k)
		}
		if len(b) >= 16 && more && k == KindOther {
			// sniff stops at 16 bytes; nothing we match is longer.
			for _, c := range append([]string{"@RSYNCD:", "SSH-"}, httpMethods...) {
				if len(c) >= 16 {
					t.Fatalf("candidate %q longer than the sniff window", c)
				}
			}
		}
	})
}
