#!/usr/bin/env bash
# The bridge against bare Go TLS: CPU and syscalls per GiB of a pull, on
# loopback and tmpfs, side by side in one run:
#
#   bare     tests/bench/tlsref: a TLS 1.3 stream, Go's crypto/tls with
#            nothing in between, one sender and one receiver (CPU-s/GiB of
#            each from its own getrusage)
#   plain    "rsync --daemon", rsync:// pull (the wall-time floor)
#   pairread tests/bench/tlsref drain/feed: reading the same bytes from a
#            loopback TCP socket written in rsync's pieces, the one cost
#            the server's bridge has on top of a bare sender
#   new/old  rsync-ssl-shim serve --listen --datapath bridge, pulled with
#            rsync --rsh="rsync-ssl-shim connect": the server's TLS end (the
#            serve process alone, rsync excluded: utime+stime of
#            /proc/PID/stat before and after) and the client helper
#            (/usr/bin/time), each binary in the same rounds
#
# Rounds are interleaved, the order rotated each round; medians are
# reported, with the load average. Then one pull per binary under
# strace -f -ff: syscalls per GiB of serve (rsync excluded) and of the
# helper. Writes its own section of docs/benchmarks.md.
#
#   tests/bench/syscalls.sh NEW-BINARY [OLD-BINARY]
#   BENCH_QUICK=1    256 MiB, 2 rounds      BENCH_OUT=DIR   (default docs)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

new=$(readlink -f "${1:-./rsync-ssl-shim}")
old=${2:+$(readlink -f "$2")}
out=${BENCH_OUT:-docs}
if [ "${BENCH_QUICK:-0}" = 1 ]; then big_mib=256 rounds=2; else big_mib=1024 rounds=5; fi
trace_mib=256
bench_need rsync strace go ss /usr/bin/time
[ -x "$new" ] || { echo "no binary at $new" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

bench_init
say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$dir/bin" "$dir/m" "$dir/src" "$dir/st"
raw="$dir/raw"
: >"$raw"
(cd "$here/../.." && CGO_ENABLED=0 go build -o "$dir/bin/tlsref" ./tests/bench/tlsref)
bench_certs
export RSYNC_SSL_CA_CERT="$dir/cert.pem"
bench_rsyncd_conf "$dir/rsyncd.conf" "listen backlog = 64"
say "fixtures: ${big_mib} MiB and ${trace_mib} MiB in $dir"
head -c "${big_mib}M" /dev/urandom >"$dir/src/big"
head -c "${trace_mib}M" /dev/urandom >"$dir/src/trace"

bins=(new)
declare -A bin=([new]=$new)
[ -n "$old" ] && bins+=(old) && bin[old]=$old
declare -A port pid
for b in "${bins[@]}"; do
	printf '#!/bin/sh\nexec /usr/bin/time -o %q -f "%%U %%S" %q connect "$@"\n' "$dir/m/helper" "${bin[$b]}" >"$dir/bin/connect-$b"
	chmod +x "$dir/bin/connect-$b"
	port[$b]=$(bench_port)
	bench_bg "${bin[$b]}" serve --listen "127.0.0.1:${port[$b]}" --datapath bridge --cert "$dir/cert.pem" \
		--key "$dir/key.pem" --rsyncd-conf "$dir/rsyncd.conf" 2>>"$dir/serve-$b.log"
	pid[$b]=$bench_last_pid
done
port[plain]=$(bench_port)
bench_bg rsync --daemon --no-detach --address=127.0.0.1 --port="${port[plain]}" --config="$dir/rsyncd.conf"
for p in "${port[@]}"; do bench_wait_listen "$p"; done

ticks=$(getconf CLK_TCK)
proc_cpu() { awk -v t="$ticks" '{sub(/.*\) /, ""); printf "%.3f", ($12 + $13) / t}' "/proc/$1/stat"; }
now_us() { echo "${EPOCHREALTIME/./}"; }
pull() { # SETUP FILE: pull FILE into $dir/dst, check its size
	local s=$1 f=$2
	rm -rf "$dir/dst"
	mkdir "$dir/dst"
	case $s in
	plain) rsync "rsync://127.0.0.1:${port[plain]}/data/$f" "$dir/dst/" ;;
	*) rsync --rsh="${RSH:-$dir/bin/connect-$s}" "rsync://localhost:${port[$s]}/data/$f" "$dir/dst/" ;;
	esac
	[ "$(stat -c %s "$dir/dst/$f")" = "$(stat -c %s "$dir/src/$f")" ] || { echo "$s: short pull" >&2; exit 1; }
}
run() { # SETUP ROUND
	local s=$1 r=$2 t0 t1 c0 c1 line
	case $s in
	bare)
		rm -f "$dir/addr"
		"$dir/bin/tlsref" send "$dir/addr" $((big_mib << 20)) 2>"$dir/m/send" &
		local sp=$!
		for _ in $(seq 100); do [ -s "$dir/addr" ] && break; sleep 0.02; done
		"$dir/bin/tlsref" recv "$(cat "$dir/addr")" 2>"$dir/m/recv" | cat >/dev/null
		wait "$sp"
		echo "round=$r setup=bare send_cpu=$(sed -n 's/.*cpu_s=\([^ ]*\).*/\1/p' "$dir/m/send") recv_cpu=$(sed -n 's/.*cpu_s=\([^ ]*\).*/\1/p' "$dir/m/recv") cipher=$(sed -n 's/.*cipher=//p' "$dir/m/send")"
		;;
	pairread)
		rm -f "$dir/addr"
		"$dir/bin/tlsref" drain "$dir/addr" 2>"$dir/m/drain" &
		local dp=$!
		for _ in $(seq 100); do [ -s "$dir/addr" ] && break; sleep 0.02; done
		"$dir/bin/tlsref" feed "$(cat "$dir/addr")" $((big_mib << 20))
		wait "$dp"
		echo "round=$r setup=pairread read_cpu=$(sed -n 's/.*cpu_s=\([^ ]*\).*/\1/p' "$dir/m/drain")"
		;;
	plain)
		t0=$(now_us)
		pull plain big
		t1=$(now_us)
		echo "round=$r setup=plain wall_s=$(((t1 - t0) / 1000))e-3"
		;;
	*)
		c0=$(proc_cpu "${pid[$s]}")
		t0=$(now_us)
		pull "$s" big
		t1=$(now_us)
		sleep 0.1 # the session's last writes and rsync's reaping
		c1=$(proc_cpu "${pid[$s]}")
		echo "round=$r setup=$s wall_s=$(((t1 - t0) / 1000))e-3 serve_cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}') helper_cpu=$(awk '{printf "%.3f", $1 + $2}' "$dir/m/helper")"
		;;
	esac
}

setups=(bare pairread plain "${bins[@]}")
load0=$(cut -d' ' -f1-3 /proc/loadavg)
say "rounds: $rounds x ${setups[*]} (load $load0)"
for ((r = 1; r <= rounds; r++)); do
	echo "round=$r load1=$(cut -d' ' -f1 /proc/loadavg)" >>"$raw"
	n=${#setups[@]}
	for ((i = 0; i < n; i++)); do
		s=${setups[$(((i + r) % n))]}
		run "$s" "$r" >>"$raw"
	done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# Syscalls: one pull per binary with serve and the helper traced, one
# file per thread; a process that exec'd rsync is serve's rsync, left out.
count() { # DIR: "name count" per syscall over every file without an exec of rsync
	local f
	for f in "$1"/t.*; do grep -q '^execve("[^"]*/rsync"' "$f" && continue; cat "$f"; done |
		awk '!/^(\+\+\+|---)/ { sub(/\(.*/, ""); n[$0]++ } END { for (k in n) print k, n[k] }' | sort -k2,2nr
}
for b in "${bins[@]}"; do
	say "strace: $b, ${trace_mib} MiB"
	mkdir -p "$dir/st/$b-serve" "$dir/st/$b-helper"
	strace -f -ff -qq -o "$dir/st/$b-serve/t" -p "${pid[$b]}" &
	sp=$!
	sleep 0.5
	RSH="strace -f -ff -qq -o $dir/st/$b-helper/t ${bin[$b]} connect" pull "$b" trace
	sleep 0.2
	kill -INT "$sp"
	wait "$sp" 2>/dev/null || true
	for side in serve helper; do
		count "$dir/st/$b-$side" | awk -v b="$b" -v s="$side" -v k=$((1024 / trace_mib)) \
			'{ printf "strace bin=%s side=%s call=%s per_gib=%d\n", b, s, $1, $2 * k }' >>"$raw"
	done
done

# ---------------------------------------------------------------- report
med() { # SETUP KEY → median over rounds
	sed -n "s/.* setup=$1 .*$2=\([^ ]*\).*/\1/p" "$raw" | sort -g |
		awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
gib=$(awk -v m="$big_mib" 'BEGIN {print m / 1024}')
pg() { awk -v a="$1" -v g="$gib" 'BEGIN {printf "%.2f", a / g}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
verdict() { awk "BEGIN {exit !($1)}" && echo "met" || echo "**missed**"; }
total() { awk -v b="bin=$1" -v s="side=$2" '$1 == "strace" && $2 == b && $3 == s {sub(/per_gib=/, "", $5); t += $5} END {print t + 0}' "$raw"; }
calls() { awk -v b="bin=$1" -v s="side=$2" -v c="call=$3" '$1 == "strace" && $2 == b && $3 == s && $4 == c {sub(/per_gib=/, "", $5); v = $5} END {print v + 0}' "$raw"; }

bs=$(med bare send_cpu) br=$(med bare recv_cpu) pw=$(med plain wall_s) pr=$(med pairread read_cpu)
{
	echo "## The bridge against bare Go TLS (syscalls and CPU per GiB)"
	echo
	echo "Written by \`tests/bench/syscalls.sh\` (part of \`make bench\`) on $(date -u '+%Y-%m-%d'): $(nproc) CPUs,"
	echo "Linux $(uname -r), $(go version | awk '{print $3}'), rsync $(rsync --version | head -n1 | awk '{print $3}'); a ${big_mib} MiB file pulled from tmpfs"
	echo "over loopback, $rounds interleaved rounds (order rotated), medians. Load average (1/5/15 min): $load0"
	echo "before, $load1 after: the machine is shared, so read the ratios of one run, not the absolute seconds."
	echo "Bare: \`tests/bench/tlsref\`, Go's crypto/tls with nothing between it and the socket ($(sed -n 's/.*cipher=\([^ ]*\).*/\1/p' "$raw" | head -n1), 128 KiB"
	echo "writes, the receiver copying to a pipe). Server's TLS end: the \`serve --listen --datapath bridge\` process's"
	echo "own CPU (rsync excluded). Helper: \`rsync-ssl-shim connect\` as rsync's --rsh."
	echo
	echo "| per GiB | bare Go TLS | $(for b in "${bins[@]}"; do printf '%s | ' "$([ "$b" = new ] && echo "this build" || echo "before (old binary)")"; done)"
	echo "|---|---|$(for b in "${bins[@]}"; do printf -- '---|'; done)"
	echo "| sender CPU-s (serve's TLS end) | $(pg "$bs") | $(for b in "${bins[@]}"; do printf '%s (%s×) | ' "$(pg "$(med "$b" serve_cpu)")" "$(ratio "$(med "$b" serve_cpu)" "$bs")"; done)"
	echo "| receiver CPU-s (client helper) | $(pg "$br") | $(for b in "${bins[@]}"; do printf '%s (%s×) | ' "$(pg "$(med "$b" helper_cpu)")" "$(ratio "$(med "$b" helper_cpu)" "$br")"; done)"
	echo "| reading the pair alone (\`tlsref drain\`) | $(pg "$pr") | | |"
	echo "| bare sender + reading the pair: the floor of a user-space bridge | $(pg "$(awk -v a="$bs" -v b="$pr" 'BEGIN {print a + b}')") ($(ratio "$(awk -v a="$bs" -v b="$pr" 'BEGIN {print a + b}')" "$bs")× bare) | | |"
	echo "| pull wall s (plain rsync daemon: $(pg "$pw")) | | $(for b in "${bins[@]}"; do printf '%s (%s× plain) | ' "$(pg "$(med "$b" wall_s)")" "$(ratio "$(med "$b" wall_s)" "$pw")"; done)"
	echo
	echo "Syscalls per GiB (one ${trace_mib} MiB pull under \`strace -f -ff\`, scaled; serve without its rsync):"
	echo
	echo "| | $(for b in "${bins[@]}"; do printf '%s serve | %s helper | ' "$b" "$b"; done)"
	echo "|---|$(for b in "${bins[@]}"; do printf -- '---|---|'; done)"
	for c in write read writev futex nanosleep epoll_pwait sched_yield; do
		echo "| $c | $(for b in "${bins[@]}"; do printf '%s | %s | ' "$(calls "$b" serve "$c")" "$(calls "$b" helper "$c")"; done)"
	done
	echo "| all | $(for b in "${bins[@]}"; do printf '%s | %s | ' "$(total "$b" serve)" "$(total "$b" helper)"; done)"
	echo
	echo "| target (this build) | measured | |"
	echo "|---|---|---|"
	sn=$(med new serve_cpu) hn=$(med new helper_cpu) wn=$(med new wall_s)
	echo "| server's TLS end ≤ 0.9× bare sender | $(ratio "$sn" "$bs")× | $(verdict "$sn <= 0.9 * $bs") |"
	echo "| client helper ≤ 1.1× bare receiver | $(ratio "$hn" "$br")× | $(verdict "$hn <= 1.1 * $br") |"
	echo "| pull wall ≤ 1.4× plain | $(ratio "$wn" "$pw")× | $(verdict "$wn <= 1.4 * $pw") |"
} >"$dir/section"

md="$out/benchmarks.md"
touch "$md"
if grep -q '<!-- bridge-syscalls:begin -->' "$md"; then
	SECTION="$(cat "$dir/section")" perl -0 -i -pe 's/<!-- bridge-syscalls:begin -->.*<!-- bridge-syscalls:end -->/<!-- bridge-syscalls:begin -->\n$ENV{SECTION}\n<!-- bridge-syscalls:end -->/s' "$md"
else
	printf '\n<!-- bridge-syscalls:begin -->\n%s\n<!-- bridge-syscalls:end -->\n' "$(cat "$dir/section")" >>"$md"
fi
cp "$raw" "$out/benchmarks-syscalls.raw"
cat "$dir/section"
