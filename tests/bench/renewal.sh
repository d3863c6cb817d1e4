#!/bin/sh
# Seconds from a certificate renewal to the first new connection that gets
# the new certificate, on the installed package (Debian 12 booted under
# systemd-nspawn) while it is busy: a listing every 0.5 s, a slow pull in
# flight and three silent TCP connections held open. One line per scenario:
#
#   busy, rename, no signal          key and certificate renamed into place;
#                                    the shim's 5 s poll finds them
#   in place, systemctl reload       both rewritten in place, then ExecReload=
#   certbot deploy hook, renewal N   certbot's live/ -> archive/ layout, the
#                                    package's deploy hook run as certbot does
#
# Each time includes the probe, a full "rsync-ssl-shim check" (about 0.25 s).
# Runs TestDeployPackage/bookworm/renewal (as root, like make test):
#   tests/bench/renewal.sh
set -eu
cd "$(dirname "$0")/../.."
RENEWAL_REPORT=1 go test -count=1 -timeout 20m -run 'TestDeployPackage/bookworm/renewal$' ./tests/ |
	grep -E '^(renewal:|ok|FAIL|---)'
