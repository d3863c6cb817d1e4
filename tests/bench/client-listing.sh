#!/usr/bin/env bash
# Module listing over TLS: "rsync-ssl-shim rsync rsync://localhost:PORT/"
# against stock "rsync-ssl" (openssl type, RSYNC_SSL_CA_CERT set), run
# side by side (alternating) against the same stunnel + rsync --daemon
# server on loopback. Prints the median, p10 and p90 wall time of each,
# then what "check" says about a healthy and a broken server.
#
# usage: tests/bench/client-listing.sh [PATH-TO-rsync-ssl-shim] [RUNS]
set -euo pipefail
shim=$(realpath "${1:-./rsync-ssl-shim}")
runs=${2:-50}
for p in rsync rsync-ssl openssl stunnel; do
  command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 1; }
done

. "$(dirname "$0")/lib.sh"
bench_init
bench_certs
bench_rsyncd_conf "$dir/rsyncd.conf" "pid file ="
mkdir -p "$dir/up"
printf '[up]\npath = %s\n' "$dir/up" >>"$dir/rsyncd.conf"
port=$(bench_port)
bench_stunnel_conf "$dir/stunnel.conf" "$port" "$(command -v rsync)" 3
bench_bg stunnel "$dir/stunnel.conf" 2>"$dir/stunnel.log"
bench_wait_listen "$port"

export RSYNC_SSL_CA_CERT="$dir/cert.pem"
url="rsync://localhost:$port/"
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
: > "$dir/shim.txt"; : > "$dir/stock.txt"
for _ in $(seq 2); do "$shim" rsync "$url" >/dev/null; RSYNC_SSL_TYPE=openssl rsync-ssl "$url" >/dev/null 2>&1; done  # warm caches
for _ in $(seq "$runs"); do
  ms "$shim" rsync "$url" >> "$dir/shim.txt"
  ms env RSYNC_SSL_TYPE=openssl rsync-ssl "$url" >> "$dir/stock.txt"
done
stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "median %.1f ms  p10 %.1f ms  p90 %.1f ms  (n=%d)\n", a[int((NR+1)/2)]/1000, a[int(NR*0.1)+1]/1000, a[int(NR*0.9)]/1000, NR}'; }
echo "listing $url, $runs runs each, alternating"
printf '  rsync-ssl-shim rsync:         %s' "$(stats "$dir/shim.txt")"; echo
printf '  rsync-ssl (openssl s_client): %s' "$(stats "$dir/stock.txt")"; echo
echo
echo "\$ rsync-ssl-shim check localhost:$port      # healthy"
"$shim" check "localhost:$port" || true
echo
echo "\$ RSYNC_SSL_CA_CERT= rsync-ssl-shim check localhost:$port data   # module, no CA check"
RSYNC_SSL_CA_CERT= "$shim" check "localhost:$port" data || true
echo
echo "\$ unset RSYNC_SSL_CA_CERT; rsync-ssl-shim check localhost:$port   # broken: unknown CA"
(unset RSYNC_SSL_CA_CERT; "$shim" check "localhost:$port") || true
echo
other=$((port == 65535 ? 1 : port + 1))
echo "\$ rsync-ssl-shim check 127.0.0.1:$other   # broken: nothing listens"
"$shim" check "127.0.0.1:$other" || true
