package main

import (
	"slices"
	"strings"
	"testing"
)

func TestRsyncCommand(t *testing.T) {
	argv, env, err := rsyncCommand("/opt/x y/it's/rsync-ssl-shim", []string{"-av", "rsyncs://[::1]:8740/data/", "dst/"}, []string{"RSYNC_SSL_PORT=1", "HOME=/h"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rsync", "--rsh='/opt/x y/it''s/rsync-ssl-shim' connect", "-av", "rsync://[::1]/data/", "dst/"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q, want %q", argv, want)
	}
	if !slices.Equal(env, []string{"HOME=/h", "RSYNC_SSL_PORT=8740"}) {
		t.Errorf("env %q", env)
	}
	for _, bad := range [][]string{
		{"-a", "src/", "host:/dst/"},
		{"-e", "ssh", "host::m"},
		{"--rsh=ssh", "host::m"},
		{"-essh", "host::m"},
		{"rsyncs://h:1/m", "rsyncs://h:2/m"},
	} {
		if _, _, err := rsyncCommand("/bin/x", bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, err := rsyncCommand("/bin/x", []string{"host::mod", "."}, nil); err != nil {
		t.Errorf("daemon target refused: %v", err)
	}
	_, _, err = rsyncCommand("/bin/x", []string{"a", "b"}, nil)
	if err == nil || !strings.Contains(err.Error(), "daemon-style hostname") {
		t.Errorf("got %v", err)
	}
}

// The helper's flags, before rsync's, reach the helper on --rsh, each word
// quoted as rsync splits it, file names absolute.
func TestRsyncCommandHelperFlags(t *testing.T) {
	pin := "sha256:" + strings.Repeat("A", 43) + "="
	argv, _, err := rsyncCommand("/bin/x", []string{"--ca", "/c/it's ca.pem", "--pin", pin, "--servername=b.example",
		"--connect-timeout", "5s", "--insecure-skip-verify", "-av", "--port=8874", "h::m/", "d/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rsync", "--rsh='/bin/x' connect '--ca' '/c/it''s ca.pem' '--connect-timeout=5s' '--insecure-skip-verify=true' " +
		"'--pin' '" + pin + "' '--servername=b.example'", "-av", "--port=8874", "h::m/", "d/"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv\n%q, want\n%q", argv, want)
	}
	argv, _, err = rsyncCommand("/bin/x", []string{"--cert", "c.pem", "h::m/"}, nil)
	if err != nil || !strings.HasPrefix(argv[1], "--rsh='/bin/x' connect '--cert' '/") {
		t.Errorf("relative --cert not made absolute: %q %v", argv, err)
	}
	for _, bad := range [][]string{
		{"--pin", "nope", "h::m"},
		{"--connect-timeout", "0s", "h::m"},
		{"--ca=", "h::m"},
		{"h::m", "--ca"},
	} {
		if _, _, err := rsyncCommand("/bin/x", bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
