package runas

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	u, err := Lookup("root")
	if err != nil {
		t.Skipf("no root in /etc/passwd: %v", err)
	}
	if u.Uid != 0 || u.Gid != 0 || !slices.Contains(u.Groups, 0) {
		t.Errorf("root = %+v", u)
	}
	if n, err := Lookup("0:0"); err != nil || n.Name != "root" || n.Gid != 0 {
		t.Errorf("0:0 = %+v, %v", n, err)
	}
	for _, bad := range []string{"", ":", "root:", ":root", "no-such-user-runas", "root:no-such-group-runas"} {
		if _, err := Lookup(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("Lookup(%q) = %v, want a usage error", bad, err)
		}
	}
}

func TestCredentialAndCheck(t *testing.T) {
	self := &User{Name: "self", Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if self.Credential() != nil || self.Check() != nil {
		t.Error("switching to ourselves needs nothing")
	}
	var none *User
	if none.Credential() != nil {
		t.Error("nil user has a credential")
	}
	other := &User{Name: "other", Uid: uint32(os.Geteuid()) + 12345, Gid: 54321, Groups: []uint32{54321}}
	if c := other.Credential(); c == nil || c.Uid != other.Uid || c.Gid != 54321 || !slices.Equal(c.Groups, other.Groups) {
		t.Errorf("credential %+v", c)
	}
	err := other.Check()
	if os.Geteuid() == 0 {
		return // root normally holds every capability; the integration test covers the rest
	}
	var mc *MissingCapError
	if !errors.As(err, &mc) || !strings.Contains(err.Error(), "CAP_SETUID") {
		t.Errorf("Check as uid %d: %v", os.Geteuid(), err)
	}
}

// BenchmarkStartCleared is what --rsync-user adds to each rsync start
// besides the switch itself: pinning the thread and clearing two sets.
func BenchmarkStartCleared(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := StartCleared(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
