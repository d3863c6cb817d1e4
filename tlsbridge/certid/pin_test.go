package certid

import (
	"strings"
	"testing"
)

func TestParsePin(t *testing.T) {
	p := Pin{1, 2, 3}
	for _, s := range []string{p.String(), "sha256//" + strings.TrimPrefix(p.String(), "sha256:")} {
		got, err := ParsePin(s)
		if err != nil || got != p {
			t.Errorf("%q: %v %v", s, got, err)
		}
	}
	for _, s := range []string{"", "sha1:AAAA", "sha256:", "sha256:AAAA", "sha256:!!!"} {
		if _, err := ParsePin(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
