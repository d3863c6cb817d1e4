#!/bin/sh
# Runs once inside the systemd VM (tests/ktlsvm/sysroot.sh), as a one-shot
# unit after boot: installs the package as README.md tells an admin to,
# enables rsync-ssl.socket, pulls and pushes with stock rsync-ssl (openssl),
# and measures the server's CPU (the service's cgroup: serve and every rsync
# it starts) for the same pull over each data path. Every result is one
# "KTLSVM-..." line on the console.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
mib=$(sed -n 's/.*KTLS_MIB=\([0-9]*\).*/\1/p' /proc/cmdline)
mib=${mib:-32}
rounds=3
say() { echo "KTLSVM-$*"; }
up() { cut -d' ' -f1 /proc/uptime; }
check() {
	name=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then say "CHECK $name PASS"; else say "CHECK $name FAIL $(tail -c 600 /tmp/check.out | tr '\n' '|')"; fi
}
tls_loaded() { grep -q '^tls ' /proc/modules; }
sums() { (cd "$1" && find . -type f -exec sha256sum {} + | sort -k2); }
same() { [ "$(sums "$1")" = "$(sums "$2")" ] && [ -n "$(sums "$1")" ]; }
client() { RSYNC_SSL_TYPE=openssl RSYNC_SSL_CA_CERT=/root/ca.pem rsync-ssl "$@"; }

say "BOOTED uptime=$(up) kernel=$(uname -r) systemd=$(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p')"
check tls-not-loaded-at-boot sh -c '! grep -q "^tls " /proc/modules'

# The data: a tree and one file of KTLS_MIB MiB for the CPU rounds.
mkdir -p /srv/rsync/data/sub /srv/rsync/big /tmp/pushsrc
for i in 1 2 3 4 5 6 7 8; do head -c $((i * 37000)) /dev/urandom > /srv/rsync/data/sub/f$i; done
head -c 3000000 /dev/urandom > /srv/rsync/data/three-mb
head -c $((mib * 1048576)) /dev/urandom > /srv/rsync/big/big.bin
cp -a /srv/rsync/data/. /tmp/pushsrc/
chmod -R a+rX /srv/rsync

# README.md, "Install on Debian 12": these commands, in this order.
t0=$(up)
check install apt-get install -y -q /root/rsync-ssl-shim.deb
install -m 0644 /root/cert.pem /etc/rsync-ssl/cert.pem
install -m 0640 -g _rsync-ssl-key /root/key.pem /etc/rsync-ssl/private/key.pem
cat >> /etc/rsync-ssl/rsyncd.conf <<'EOF'

[data]
	path = /srv/rsync/data
	read only = yes

[big]
	path = /srv/rsync/big
	read only = yes

[upload]
	path = /srv/rsync/upload
	read only = no
EOF
# A writable module, as the shipped writable-module.conf example says.
groupadd --system rsync-upload
gpasswd -a _rsync-ssl rsync-upload >/dev/null
install -d -g rsync-upload -m 2775 /srv/rsync/upload
mkdir -p /etc/systemd/system/rsync-ssl.service.d
cp /usr/share/doc/rsync-ssl-shim/examples/writable-module.conf /etc/systemd/system/rsync-ssl.service.d/
systemctl daemon-reload
check enable systemctl enable --now rsync-ssl.socket
check tls-not-loaded-before-a-connection sh -c '! grep -q "^tls " /proc/modules'

# The summaries on the kernel path: the shim no longer sees the module
# name (module=-), so a session is told by its count and its exit status.
on_path() { journalctl --sync; journalctl -o cat RSYNC_SSL_DATAPATH="$1" RSYNC_SSL_EXIT=0 | grep -c "rsync_exit=0 .*datapath=$1"; }
n0=$(on_path ktls)
check pull-ossl client -a rsync://localhost/data/ /tmp/pulled/
say "TIME install_to_first_pull_s=$(echo "$(up) $t0" | awk '{printf "%.1f", $1-$2}')"
check pull-identical same /srv/rsync/data /tmp/pulled
n1=$(on_path ktls)
check pull-datapath-ktls test "$n1" -eq $((n0 + 1))
# -r, not -a: the upload directory is root's, and rsync as _rsync-ssl may
# not set its times.
check push-ossl client -r /tmp/pushsrc/ rsync://localhost/upload/
check push-identical same /tmp/pushsrc /srv/rsync/upload
check push-datapath-ktls test "$(on_path ktls)" -eq $((n1 + 1))
check tls-loaded-by-the-service tls_loaded
check start-line-kernel sh -c 'journalctl -u rsync-ssl.service -o cat | grep "serving " | tail -1 | grep -v "every session bridged"'
journalctl -u rsync-ssl.service -o cat --no-pager | grep -E "serving |served " | sed 's/^/KTLSVM-JOURNAL /'
# Everything the units said, when a transfer failed.
[ "$(on_path ktls)" -eq $((n1 + 1)) ] ||
	journalctl -b --no-pager -o short-monotonic -u rsync-ssl.socket -u rsync-ssl.service -u modprobe@tls.service |
	tail -40 | sed 's/^/KTLSVM-JOURNAL /'

# Server CPU for the same pull over each data path: the service's cgroup
# (serve and the rsync it starts), read while one service runs.
cg=/sys/fs/cgroup/system.slice/rsync-ssl.service/cpu.stat
usage() { awk '/^usage_usec/ {print $2}' "$cg"; }
r=1
while [ $r -le $rounds ]; do
	for dp in ktls bridge; do
		sed -i "s|^RSYNC_SSL_SHIM_OPTS=.*|RSYNC_SSL_SHIM_OPTS=\"--rsyncd-conf /etc/rsync-ssl/rsyncd.conf --datapath $dp\"|" /etc/default/rsync-ssl
		systemctl stop rsync-ssl.service
		client rsync://localhost/ >/dev/null 2>&1
		n0=$(on_path $dp)
		u0=$(usage)
		w0=$(up)
		rm -rf /tmp/big
		client -a rsync://localhost/big/ /tmp/big/ >/tmp/big.out 2>&1 || say "CHECK cpu-pull-$dp-$r FAIL $(tr '\n' '|' </tmp/big.out)"
		w1=$(up)
		u1=$(usage)
		n1=$(on_path $dp)
		say "CPU datapath=$dp round=$r mib=$mib cpu_s=$(echo "$u1 $u0" | awk '{printf "%.2f", ($1-$2)/1e6}') wall_s=$(echo "$w1 $w0" | awk '{printf "%.1f", $1-$2}') sessions_on_path=$((n1 - n0))"
	done
	r=$((r + 1))
done
check big-identical same /srv/rsync/big /tmp/big
say "DONE uptime=$(up)"
