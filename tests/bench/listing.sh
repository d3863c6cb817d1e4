#!/usr/bin/env bash
# Module-listing latency, measured side by side in one run: plain
# "rsync --daemon" on TCP (no encryption, the floor) against rsync-ssl-shim
# under socket activation (one shim and one rsync per connection, as
# rsync-ssl.socket runs it), each with the clients a user would have.
# Runs are interleaved, so machine noise hits every setup alike.
#
#   tests/bench/listing.sh [BINARY] [RUNS]      (defaults: ./rsync-ssl-shim 50)
set -euo pipefail

shim=$(readlink -f "${1:-./rsync-ssl-shim}")
runs=${2:-50}
for p in rsync rsync-ssl openssl systemd-socket-activate; do
	command -v "$p" >/dev/null || { echo "needs $p" >&2; exit 1; }
done

. "$(dirname "$0")/lib.sh"
bench_init
bench_certs
bench_rsyncd_conf "$dir/rsyncd.conf"
free_port() { bench_port; }
wait_listen() { bench_wait_listen "$1" || exit 1; }

plain=$(free_port)
bench_bg rsync --daemon --no-detach --address=127.0.0.1 --port="$plain" --config="$dir/rsyncd.conf"
shimport=$(free_port)
bench_bg systemd-socket-activate --accept --inetd -l "127.0.0.1:$shimport" \
	"$shim" serve --cert "$dir/cert.pem" --key "$dir/key.pem" --rsyncd-conf "$dir/rsyncd.conf" \
	--rsync "$(command -v rsync)" 2>/dev/null
stport=$(free_port)
stunnel_bin=$(command -v stunnel4 || command -v stunnel || true)
if [ -n "$stunnel_bin" ]; then
	bench_stunnel_conf "$dir/stunnel.conf" "$stport" "$(command -v rsync)" 0
	bench_bg "$stunnel_bin" "$dir/stunnel.conf" 2>/dev/null
	wait_listen "$stport"
fi
wait_listen "$plain"
wait_listen "$shimport"

export RSYNC_SSL_CA_CERT="$dir/cert.pem" RSYNC_SSL_PORT="$shimport"
have_connect=0
"$shim" connect --help >/dev/null 2>&1 && have_connect=1

names=("plain rsync daemon, TCP (floor)" "shim, stock rsync-ssl (openssl)")
cmds=("rsync rsync://127.0.0.1:$plain/" "RSYNC_SSL_TYPE=openssl rsync-ssl localhost::")
if [ -n "$stunnel_bin" ]; then
	names+=("stunnel exec rsync (seed), rsync-ssl")
	cmds+=("RSYNC_SSL_PORT=$stport RSYNC_SSL_TYPE=openssl rsync-ssl localhost::")
fi
if command -v socat >/dev/null; then
	names+=("shim, socat client")
	cmds+=("rsync --rsh=\"sh -c 'exec socat STDIO OPENSSL:localhost:$shimport,cafile=$dir/cert.pem' sh\" rsync://localhost/")
	if [ -n "$stunnel_bin" ]; then
		names+=("stunnel exec rsync (seed), socat client")
		cmds+=("rsync --rsh=\"sh -c 'exec socat STDIO OPENSSL:localhost:$stport,cafile=$dir/cert.pem' sh\" rsync://localhost/")
	fi
fi
if [ "$have_connect" = 1 ]; then
	names+=("shim, rsync-ssl-shim rsync")
	cmds+=("$shim rsync localhost::")
fi

# Warm up caches once per setup, and check each lists the module.
for c in "${cmds[@]}"; do
	out=$(eval "$c" 2>&1) || { echo "failed: $c: $out" >&2; exit 1; }
	grep -q data <<<"$out" || { echo "no module in listing from: $c" >&2; exit 1; }
done

for ((r = 0; r < runs; r++)); do
	for i in "${!cmds[@]}"; do
		t0=$(date +%s%N)
		eval "${cmds[$i]}" >/dev/null 2>&1
		t1=$(date +%s%N)
		echo "$i $(((t1 - t0) / 1000))" >>"$dir/samples"
	done
done

stats() { # microseconds on stdin → "median p95"
	sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; i=int(NR*0.95+0.5); if(i<1)i=1; printf "%.2f %.2f\n", m/1000, a[i]/1000}'
}
floor=""
printf '%-44s %10s %10s %8s\n' "setup ($runs runs each, interleaved)" "median ms" "p95 ms" "ratio"
for i in "${!cmds[@]}"; do
	read -r med p95 < <(awk -v i="$i" '$1==i {print $2}' "$dir/samples" | stats)
	[ -z "$floor" ] && floor=$med
	ratio=$(awk -v a="$med" -v b="$floor" 'BEGIN {printf "%.2f", a/b}')
	printf '%-44s %10s %10s %8s\n' "${names[$i]}" "$med" "$p95" "${ratio}x"
done
echo "rsync $(rsync --version | head -1 | awk '{print $3}'), $(openssl version | awk '{print $1, $2}'), $(nproc) CPUs, $(date -u +%Y-%m-%d)"
