#!/usr/bin/env bash
# "As installed": the Debian package in a booted Debian 12 and Debian 13,
# one after the other (systemd-nspawn,
# a network namespace of its own with only a loopback), measured from that
# namespace against what an admin could run instead, in the same container
# and the same run:
#
#   plain     Debian's rsync.service, "rsync --daemon" on 873 (no TLS: the floor)
#   stunnel   the classic setup: stunnel4 as a service (stunnel@.service) with
#             "exec = /usr/bin/rsync", "execArgs = rsync --daemon", on 875
#   default   the package as installed: rsync-ssl.socket (Accept=no) starting
#             rsync-ssl.service, serve's own accept loop, on 874
#   isolated  the package's per-connection units (rsync-ssl-isolated.socket,
#             Accept=yes, + rsync-ssl-isolated@.service), copied under another
#             name and port (876) so that both listen at once
#
# Rows: module listing p50/p95 (interleaved rounds, order rotated each round);
# the default service's first listing after it exited (cold start); 32, 64 and
# 200 simultaneous listings from one address and from 8 (127.0.0.2-9); a 1 GiB
# pull (sha256 compared); server CPU per listing (the service's cgroup, and
# systemd's own PID 1); the listing p50 of the isolated unit with each sandbox
# directive undone by a drop-in, one copy of the unit per directive, all
# interleaved. Writes the "As installed" section of docs/benchmarks.md.
#
#   tests/bench/installed.sh             (as root; make bench-installed)
#   BENCH_SUITES="bookworm trixie"  the releases, each its own run and its
#                   own section (default both; Debian 13's rows follow 12's)
#   BENCH_QUICK=1   fewer rounds, 128 MiB: a smoke run
#   BENCH_OUT=DIR   where benchmarks.md is (default docs)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	rounds=8 big_mib=128 sbx_rounds=4 cpu_n=10 cold_n=3 concs="32 64" pull_rounds=1
else
	rounds=40 big_mib=1024 sbx_rounds=15 cpu_n=40 cold_n=10 concs="32 64 200" pull_rounds=3
fi
out=${BENCH_OUT:-$top/docs}
say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------ measuring
# The measuring half runs inside the container's network namespace (the
# script re-runs itself there), so that no "ip netns exec" sits inside a
# timed interval. It talks to the container's systemd through nsenter.
ctr() { nsenter -t "$leader" -a -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
us() { echo "${EPOCHREALTIME/./}"; }

# listing SETUP ADDR: one module listing; prints microseconds, or "fail".
listing() {
	local s e rc=0
	s=$(us)
	case $1 in
	plain) rsync "rsync://$2:873/" >/dev/null 2>>"$dir/client.err" || rc=$? ;;
	*) RSYNC_SSL_TYPE=openssl rsync-ssl "rsync://$2:${port[$1]}/" >/dev/null 2>>"$dir/client.err" || rc=$? ;;
	esac
	e=$(us)
	if [ "$rc" = 0 ]; then echo $((e - s)); else echo fail; fi
}

# cgcpu SETUP: CPU microseconds so far of the setup's server and of the
# container's PID 1, from /proc (the host has cgroup v1 here, so no cgroup
# accounting inside the container): a long-running server's own time plus
# that of the children it reaped (every rsync); for the isolated units,
# whose instances are PID 1's children, what PID 1 reaped. The second
# number is PID 1's own time: systemd's work per connection.
cgcpu() {
	local unit pid
	case $1 in
	plain) unit=rsync.service ;;
	stunnel) unit=stunnel@seed.service ;;
	default) unit=rsync-ssl.service ;;
	*) unit= ;;
	esac
	pid=1
	[ -n "$unit" ] && pid=$(ctr systemctl show -P MainPID "$unit")
	if [ -z "$pid" ] || [ "$pid" = 0 ]; then
		echo "cgcpu $1: $unit has no main process ($(ctr systemctl is-active "$unit"))" >&2
		echo "-1 -1"
		return
	fi
	ctr cat "/proc/$pid/stat" /proc/1/stat | awk -v hz="$(getconf CLK_TCK)" -v own="$unit" '
		# Fields after the ")" that ends the command name: utime is 14.
		{ sub(/^.*\) /, ""); u[NR] = $12 + $13; c[NR] = $14 + $15 }
		END { srv = own != "" ? u[1] + c[1] : c[1]; printf "%d %d", srv * 1000000 / hz, u[2] * 1000000 / hz }'
}

measure() {
	declare -A port=([stunnel]=875 [default]=874 [isolated]=876)
	local setups=(plain stunnel default isolated) raw="$dir/raw" i r s n
	for i in $(seq 0 $((nsbx - 1))); do port[sbx$i]=$((9000 + i)); done
	port[sbxall]=8999
	: >"$raw"
	rotate() { local k=$1; shift; local a=("$@"); echo "${a[@]:k%${#a[@]}}" "${a[@]:0:k%${#a[@]}}"; }

	say "warm-up"
	for s in "${setups[@]}"; do for _ in 1 2 3; do listing "$s" localhost >/dev/null; done; done

	say "listings: $rounds interleaved rounds"
	for r in $(seq "$rounds"); do
		echo "calib $r $(bench_cpu_calib)" >>"$raw"
		for s in $(rotate "$r" "${setups[@]}"); do
			echo "list $s $(listing "$s" localhost)" >>"$raw"
		done
	done

	say "cold starts of rsync-ssl.service: $cold_n"
	for r in $(seq "$cold_n"); do
		ctr systemctl stop rsync-ssl.service 2>/dev/null
		# Ten starts in a few seconds would hit systemd's start limit
		# (five in ten seconds) and fail the socket; it counts afresh.
		ctr systemctl reset-failed rsync-ssl.service
		echo "cold default $(listing default localhost)" >>"$raw"
		echo "warm default $(listing default localhost)" >>"$raw"
	done

	say "server CPU per listing: $cpu_n sequential listings each"
	for s in "${setups[@]}"; do
		listing "$s" localhost >/dev/null
		local b a
		b=$(cgcpu "$s")
		for _ in $(seq "$cpu_n"); do listing "$s" localhost >/dev/null; done
		a=$(cgcpu "$s")
		echo "cpu $s $cpu_n $b $a" >>"$raw"
	done

	say "simultaneous listings: $concs, from 1 and from 8 addresses"
	local k=0 mode
	for n in $concs; do
		for mode in one eight; do
			for s in $(rotate "$k" "${setups[@]}"); do
				k=$((k + 1))
				local cd="$dir/conc/$s-$n-$mode" t0 t1 fails=0 told=0 j addr
				mkdir -p "$cd"
				t0=$(us)
				for j in $(seq "$n"); do
					addr=localhost
					[ "$mode" = eight ] && addr=src$((2 + j % 8)).test
					(
						rc=0
						case $s in
						plain) timeout 120 rsync "rsync://$addr:873/" ;;
						*) RSYNC_SSL_TYPE=openssl timeout 120 rsync-ssl "rsync://$addr:${port[$s]}/" ;;
						esac >/dev/null 2>"$cd/$j.err" || rc=$?
						echo "$rc" >"$cd/$j.rc"
					) &
				done
				wait
				t1=$(us)
				for j in $(seq "$n"); do
					if [ "$(cat "$cd/$j.rc")" != 0 ]; then
						fails=$((fails + 1))
						grep -q 'max connections' "$cd/$j.err" && told=$((told + 1))
					fi
				done
				echo "conc $s $n $mode $((t1 - t0)) $fails $told" >>"$raw"
				if [ "$fails" -gt "$told" ]; then
					cat "$cd"/*.err | grep -v -e '^verify' -e '^depth' -e '^$' | sort | uniq -c | sort -rn |
						sed "s/^/  $s $n $mode: /" >"$cd.summary" || true
					head -n 5 "$cd.summary" >&2
				fi
				sleep 1
			done
		done
	done

	say "${big_mib} MiB pull, $pull_rounds interleaved rounds, with rsync-ssl-shim rsync (stock rsync-ssl's openssl s_client caps bulk at about 100 MB/s)"
	local sum
	sum=$(cut -d' ' -f1 "$dir/big.sha256")
	for s in $(for r in $(seq "$pull_rounds"); do rotate "$r" "${setups[@]}"; done); do
		rm -rf /dev/shm/"$name"-pull
		mkdir -p /dev/shm/"$name"-pull
		local b a t0 t1 rc=0 got
		# The default service exits when idle: a listing starts it, so
		# that its CPU is counted from here.
		listing "$s" localhost >/dev/null
		b=$(cgcpu "$s")
		t0=$(us)
		case $s in
		plain) rsync -a "rsync://localhost:873/big/" /dev/shm/"$name"-pull/ 2>>"$dir/client.err" || rc=$? ;;
		*) "$dir/pkg/usr/bin/rsync-ssl-shim" rsync -a "rsync://localhost:${port[$s]}/big/" /dev/shm/"$name"-pull/ 2>>"$dir/client.err" || rc=$? ;;
		esac
		t1=$(us)
		a=$(cgcpu "$s")
		got=$(sha256sum /dev/shm/"$name"-pull/big.bin 2>/dev/null | cut -d' ' -f1)
		[ "$got" = "$sum" ] || rc="sha256-mismatch"
		echo "pull $s $((t1 - t0)) $rc $b $a" >>"$raw"
		rm -rf /dev/shm/"$name"-pull
	done

	say "sandbox directives: $nsbx variants of the isolated unit, $sbx_rounds interleaved rounds"
	local vs=(isolated sbxall)
	for i in $(seq 0 $((nsbx - 1))); do vs+=("sbx$i"); done
	for v in "${vs[@]}"; do listing "$v" localhost >/dev/null; done
	for r in $(seq "$sbx_rounds"); do
		for v in $(rotate "$r" "${vs[@]}"); do
			echo "sbx $v $(listing "$v" localhost)" >>"$raw"
		done
	done
}

if [ "${1:-}" = --measure ]; then
	# Re-run inside the namespace: the state comes in the environment.
	. "$dir/state"
	export RSYNC_SSL_CA_CERT="$dir/cert.pem"
	measure
	exit 0
fi

# ------------------------------------------------------------ setting up
[ "$(id -u)" = 0 ] || { echo "installed.sh: needs root (nspawn, network namespaces)" >&2; exit 1; }
# One run per release, each in a process of its own (its own container,
# cleanup and section).
if [ -z "${BENCH_SUITE:-}" ]; then
	for s in ${BENCH_SUITES:-bookworm trixie}; do
		case $s in bookworm | trixie) ;; *) echo "installed.sh: unknown release $s (bookworm, trixie)" >&2; exit 2 ;; esac
		BENCH_SUITE=$s "$0"
	done
	exit 0
fi
suite=$BENCH_SUITE
case $suite in bookworm) release="Debian 12" ;; *) release="Debian 13" ;; esac
bench_need systemd-nspawn debootstrap dpkg-buildpackage nsenter ip rsync rsync-ssl openssl sha256sum timeout python3 perl

# The same cached root as tests/deploy_package_test.go (its key is the
# package list; stunnel4 for the classic setup).
cache=/var/cache/rsync-ssl-shim-tests
pkgs=systemd,systemd-sysv,dbus,rsync,openssl,ca-certificates,stunnel4
cached="$cache/$suite-minbase-${pkgs//,/_}"
if [ ! -e "$cached/.complete" ]; then
	say "debootstrap $release into $cached (once)"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/partial-XXXXXX")
	chmod 755 "$tmp"
	debootstrap --variant=minbase --include="$pkgs" "$suite" "$tmp" >"$tmp.log" 2>&1 ||
		{ tail -n 20 "$tmp.log" >&2; rm -rf "$tmp"; exit 1; }
	touch "$tmp/.complete"
	rm -rf "$cached" "$tmp.log"
	mv "$tmp" "$cached"
fi

name=installed-bench-$$
dir=$(mktemp -d "/var/tmp/$name.XXXXXX")
nspawn_pid= leader=
cleanup() {
	if [ -n "$nspawn_pid" ]; then
		kill -TERM "$nspawn_pid" 2>/dev/null || true
		for _ in $(seq 200); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$nspawn_pid" 2>/dev/null; then
			[ -n "$leader" ] && kill -9 "$leader" 2>/dev/null || true
			kill -9 "$nspawn_pid" 2>/dev/null || true
		fi
		wait "$nspawn_pid" 2>/dev/null || true
	fi
	ip netns delete "$name" 2>/dev/null || true
	rm -rf "/etc/netns/$name" "/run/systemd/nspawn/propagate/$name" /dev/shm/"$name"-pull
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the package"
deb=$(PATH=$PATH:/usr/local/go/bin "$top/packaging/build-deb.sh" "$dir")
say "built $(basename "$deb")"
# The client for the bulk pull is the packaged binary itself.
dpkg-deb -x "$deb" "$dir/pkg"

say "copying the root, ${big_mib} MiB of test data"
root="$dir/root"
cp -a "$cached" "$root"
mkdir -p "$root/srv/data" "$root/srv/big"
for i in $(seq 20); do echo "file $i" >"$root/srv/data/f$i"; done
head -c "${big_mib}M" /dev/urandom >"$root/srv/big/big.bin"
sha256sum "$root/srv/big/big.bin" >"$dir/big.sha256"
chmod -R a+rX "$root/srv"
cp "$deb" "$root/root/"

# One certificate for every TLS setup. The eight client addresses are
# names, as stock rsync-ssl checks the name: "ip netns exec" puts
# /etc/netns/NAME/hosts in place of /etc/hosts for the measuring half, and
# a client connecting to 127.0.0.N on the loopback comes from 127.0.0.N.
sans=DNS:localhost
mkdir -p "/etc/netns/$name"
echo "127.0.0.1 localhost" >"/etc/netns/$name/hosts"
for i in 2 3 4 5 6 7 8 9; do
	sans+=",DNS:src$i.test"
	echo "127.0.0.$i src$i.test" >>"/etc/netns/$name/hosts"
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=localhost" \
	-addext "subjectAltName=$sans" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

ip netns add "$name"
ip -n "$name" link set lo up
say "booting the container"
setsid systemd-nspawn -D "$root" -b --register=no --keep-unit -q --machine="$name" \
	--network-namespace-path="/run/netns/$name" --capability=CAP_NET_ADMIN --console=pipe \
	>"$dir/nspawn.log" 2>&1 </dev/null &
nspawn_pid=$!
for _ in $(seq 300); do
	for c in $(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null); do
		[ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && leader=$c
	done
	[ -n "$leader" ] && break
	sleep 0.1
done
[ -n "$leader" ] || { cat "$dir/nspawn.log" >&2; exit 1; }
for _ in $(seq 300); do
	st=$(ctr systemctl is-system-running --wait 2>&1 || true)
	case $st in running | degraded) break ;; esac
	sleep 0.2
done

say "installing the package and the other setups"
ctr apt-get install -y -qq "/root/$(basename "$deb")" >"$dir/apt.log" 2>&1 || { cat "$dir/apt.log" >&2; exit 1; }
install -m 0644 "$dir/cert.pem" "$root/etc/rsync-ssl/cert.pem"
# As README.md installs it: readable by the shim's key group, not by rsync.
install -m 0640 -g "$(ctr getent group _rsync-ssl-key | cut -d: -f3)" "$dir/key.pem" "$root/etc/rsync-ssl/private/key.pem"
modules='
[data]
	path = /srv/data
	read only = yes
[big]
	path = /srv/big
	read only = yes
'
printf '%s' "$modules" >>"$root/etc/rsync-ssl/rsyncd.conf"
printf 'use chroot = no\nreverse lookup = no\n%s' "$modules" >"$root/etc/rsyncd.conf"
mkdir -p "$root/etc/stunnel"
install -m 0644 "$dir/cert.pem" "$root/etc/stunnel/seed.pem"
install -m 0600 "$dir/key.pem" "$root/etc/stunnel/seed.key"
cat >"$root/etc/stunnel/seed.conf" <<'EOF'
foreground = yes
pid =
[rsync]
accept = 875
cert = /etc/stunnel/seed.pem
key = /etc/stunnel/seed.key
exec = /usr/bin/rsync
execArgs = rsync --daemon
EOF

# Every setup in a slice of its own, for its CPU.
sysd="$root/etc/systemd/system"
slice() {
	mkdir -p "$sysd/$1.d"
	printf '[Service]\nSlice=bench-%s.slice\n' "$2" >"$sysd/$1.d/bench-slice.conf"
	printf '[Slice]\nCPUAccounting=yes\n' >"$sysd/bench-$2.slice"
}
slice rsync.service plain
slice stunnel@seed.service stunnel
slice rsync-ssl.service default

# isolatedcopy NAME PORT: the shipped per-connection units under another
# name, on another port, without the Conflicts= that keeps the shipped pair
# from listening beside rsync-ssl.socket.
isolatedcopy() {
	sed -e "s/^ListenStream=.*/ListenStream=$2/" -e '/^Conflicts=/d' \
		"$root/lib/systemd/system/rsync-ssl-isolated.socket" >"$sysd/$1.socket"
	cp "$root/lib/systemd/system/rsync-ssl-isolated@.service" "$sysd/$1@.service"
	mkdir -p "$sysd/$1@.service.d"
	printf '[Service]\nSlice=bench-%s.slice\n' "$3" >"$sysd/$1@.service.d/bench-slice.conf"
	printf '[Slice]\nCPUAccounting=yes\n' >"$sysd/bench-$3.slice"
}
isolatedcopy bench-isolated 876 isolated

# Each sandbox directive of the shipped service, undone one at a time. The
# empty assignment resets a list setting; DynamicUser=yes implies some of
# the others (ProtectSystem=strict, PrivateTmp=, RemoveIPC=, NoNewPrivileges=,
# RestrictSUIDSGID=), so each row is that line's own share.
undo=(
	"DynamicUser=no"
	"PrivateUsers=no"
	"ProtectSystem=no"
	"ProtectHome=no"
	"InaccessiblePaths="
	"PrivateTmp=no"
	"PrivateDevices=no"
	"PrivateNetwork=no"
	"PrivateIPC=no"
	"ProtectHostname=no"
	"ProtectClock=no"
	"ProtectKernelTunables=no"
	"ProtectKernelModules=no"
	"ProtectKernelLogs=no"
	"ProtectControlGroups=no"
	"ProtectProc=default|ProcSubset=all"
	"RestrictAddressFamilies="
	"RestrictNamespaces=no"
	"SystemCallFilter=|SystemCallArchitectures="
	"MemoryDenyWriteExecute=no"
	"LockPersonality=no|RestrictRealtime=no|RestrictSUIDSGID=no|NoNewPrivileges=no"
	"PrivateMounts=no"
	"LoadCredential="
	"DynamicUser=no|ProtectSystem=no|ProtectHome=no|InaccessiblePaths=|PrivateTmp=no|PrivateDevices=no|ProtectKernelTunables=no|ProtectKernelModules=no|ProtectKernelLogs=no|ProtectControlGroups=no|ProtectProc=default|ProcSubset=all|ProtectClock=no"
	"PrivateNetwork=no|PrivateUsers=no|PrivateIPC=no|ProtectHostname=no"
	"SystemCallFilter=|SystemCallArchitectures=|RestrictAddressFamilies=|MemoryDenyWriteExecute=no|LockPersonality=no|RestrictRealtime=no|RestrictNamespaces=no"
)
nsbx=${#undo[@]}
# Without LoadCredential= the key is read where it lies, which only root
# can, and the sandbox hides: that row also runs as root (DynamicUser=no)
# with /etc/rsync-ssl/private visible, as does "all".
sbxdropin() {
	printf '[Service]\n'
	local IFS='|' l
	for l in $1; do printf '%s\n' "$l"; done
	case $1 in
	LoadCredential=)
		printf 'DynamicUser=no\nInaccessiblePaths=\nExecStart=\nExecStart=/usr/bin/rsync-ssl-shim serve --cert /etc/rsync-ssl/cert.pem --key /etc/rsync-ssl/private/key.pem $RSYNC_SSL_RSYNC_USER $RSYNC_SSL_SHIM_OPTS\n' ;;
	esac
}
for i in $(seq 0 $((nsbx - 1))); do
	isolatedcopy "bench-sbx$i" $((9000 + i)) "sbx$i"
	sbxdropin "${undo[$i]}" >"$sysd/bench-sbx$i@.service.d/undo.conf"
done
isolatedcopy bench-sbxall 8999 sbxall
{
	for i in $(seq 0 $((nsbx - 1))); do sbxdropin "${undo[$i]}" | sed 1d; done
} | sort -u | { printf '[Service]\n'; cat; } >"$sysd/bench-sbxall@.service.d/undo.conf"

ctr systemctl daemon-reload
ctr systemctl enable -q --now rsync.service stunnel@seed.service rsync-ssl.socket bench-isolated.socket
for i in $(seq 0 $((nsbx - 1))); do ctr systemctl start "bench-sbx$i.socket"; done
ctr systemctl start bench-sbxall.socket
sec_default=$(ctr systemd-analyze security --no-pager rsync-ssl.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
sec_isolated=$(ctr systemd-analyze security --no-pager rsync-ssl-isolated@probe.service 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')

declare -p leader dir name nsbx rounds cold_n cpu_n concs sbx_rounds big_mib pull_rounds >"$dir/state"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
ip netns exec "$name" env dir="$dir" "$0" --measure
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
others=$(ps -eo pid=,pcpu=,comm= --sort=-pcpu | awk '$2 > 20 {printf "%s %s%%; ", $3, $2}' | head -c 300)
journal_drops=$(ctr journalctl --no-pager -o cat | grep -c 'Too many incoming connections' || true)
trigger_limits=$(ctr journalctl --no-pager -o cat | grep -c -i 'trigger limit hit' || true)

# ------------------------------------------------------------ report
say "writing $out/benchmarks.md"
ver=$(dpkg-deb -f "$deb" Version)
raw="$dir/raw"
# Debian 12's files keep their names; each other release's are marked.
mark=
[ "$suite" = bookworm ] || mark="-$suite"
cp "$raw" "$out/benchmarks-installed$mark.raw"
undo_list=$(printf '%s\n' "${undo[@]}")
section=$(
	UNDO="$undo_list" SEC_DEFAULT="$sec_default" SEC_ISOLATED="$sec_isolated" VER="$ver" \
		RELEASE="$release" MARK="$mark" LOAD="$load_before -> $load_after" OTHERS="$others" DROPS="$journal_drops" TRIGGERS="$trigger_limits" BIG="$big_mib" CPU_N="$cpu_n" \
		python3 "$here/installed-report.py" "$raw"
)
md="$out/benchmarks.md"
touch "$md"
# In place when the section is there (the notes around it stay), else at
# the end.
# Debian 13's section goes right after Debian 12's when it is new.
b="<!-- as-installed$mark:begin -->" e="<!-- as-installed$mark:end -->"
if grep -qF "$b" "$md"; then
	SECTION="$section" B="$b" E="$e" perl -0 -i -pe 's/\Q$ENV{B}\E.*\Q$ENV{E}\E/$ENV{B}\n$ENV{SECTION}\n$ENV{E}/s' "$md"
elif [ -n "$mark" ] && grep -qF '<!-- as-installed:end -->' "$md"; then
	SECTION="$section" B="$b" E="$e" perl -0 -i -pe 's/<!-- as-installed:end -->\n/<!-- as-installed:end -->\n\n$ENV{B}\n$ENV{SECTION}\n$ENV{E}\n/s' "$md"
else
	printf '\n%s\n%s\n%s\n' "$b" "$section" "$e" >>"$md"
fi
printf '%s\n' "$section"
