//go:build linux

package main

import (
	"errors"
	"testing"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge"
)

// On the kernel data path the shim cannot see whether rsync's 255 ended a
// module listing or refused a module; neither is a failed connection. On
// the bridge only a listing is exempt.
func TestConnExitDataPath(t *testing.T) {
	for _, c := range []struct {
		name string
		res  tlsbridge.Result
		want int
	}{
		{"bridge listing", tlsbridge.Result{Module: "#list", RsyncExit: 255, DataPath: "bridge"}, exitOK},
		{"bridge refused module", tlsbridge.Result{Module: "nope", RsyncExit: 255, DataPath: "bridge"}, 255},
		{"ktls 255", tlsbridge.Result{RsyncExit: 255, DataPath: "ktls"}, exitOK},
		{"ktls 255 with our error", tlsbridge.Result{RsyncExit: 255, DataPath: "ktls", Err: errors.New("x")}, 255},
		{"ktls transfer error", tlsbridge.Result{RsyncExit: 23, DataPath: "ktls"}, 23},
		{"ktls served", tlsbridge.Result{RsyncExit: 0, DataPath: "ktls"}, exitOK},
		{"refused before rsync", tlsbridge.Result{RsyncExit: -1, Err: errors.New("x")}, exitFailure},
	} {
		if got := connExit(c.res); got != c.want {
			t.Errorf("%s: connExit = %d, want %d", c.name, got, c.want)
		}
	}
}
