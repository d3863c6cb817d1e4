module github.com/rsync-ssl-shim/rsync-ssl-shim

go 1.23.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	golang.org/x/sys v0.35.0
)
