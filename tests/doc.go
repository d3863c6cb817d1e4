// Package tests holds the integration tests: they build the rsync-ssl-shim
// binary and drive it with real programs (rsync, rsync-ssl, openssl,
// stunnel, socat, systemd-socket-activate, xinetd). Under CI=true a missing
// program fails the test instead of skipping it.
package tests
