package tlsbridge

import (
	"slices"
	"testing"
)

func TestBaseEnv(t *testing.T) {
	in := []string{
		"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C", "LC_TIME=C", "TZ=UTC", "HOME=/root",
		"CREDENTIALS_DIRECTORY=/run/credentials/rsync-ssl@0.service", "NOTIFY_SOCKET=/run/systemd/notify",
		"LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=x", "JOURNAL_STREAM=8:1", "INVOCATION_ID=ab",
		"RSYNC_SSL_SHIM_OPTS=--min-tls 1.3", "SECRET=x", "SSL_CLIENT_VERIFY=SUCCESS", "LC=odd", "PATHX=1", "noequals",
	}
	want := []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C", "LC_TIME=C", "TZ=UTC", "HOME=/root"}
	if got := BaseEnv(in); !slices.Equal(got, want) {
		t.Errorf("BaseEnv = %q, want %q", got, want)
	}
	got := WithUser([]string{"PATH=/bin", "HOME=/root", "USER=root"}, "nobody", "/nonexistent")
	if want := []string{"PATH=/bin", "HOME=/nonexistent", "USER=nobody", "LOGNAME=nobody"}; !slices.Equal(got, want) {
		t.Errorf("WithUser = %q, want %q", got, want)
	}
}
