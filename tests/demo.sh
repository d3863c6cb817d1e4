#!/usr/bin/env bash
# make demo: a throwaway CA and certificate, an example module served through
# real socket activation (systemd-socket-activate, the same hand-over as
# rsync-ssl-isolated.socket, Accept=yes), pulled with stock rsync-ssl and with this
# binary. Everything lives in a temporary directory and everything started is
# stopped. Each step ends with a line saying what happened; the first step
# that goes wrong says so, shows the logs, and ends the demo with exit 1.
#
#   tests/demo.sh [BINARY]      DEMO_PORT (default 8874): the port to listen on
set -euo pipefail

port=${DEMO_PORT:-8874}
# Served connections end on their own: at once when the client closes, at the
# latest after serve's --linger (5 s) once rsync is done. The demo waits that
# long and a margin for a loaded machine, and no longer.
drain=${DEMO_DRAIN_SECONDS:-15}
# Each program the demo runs, and the Debian package it comes from (the
# Makefile's DEMO_DEBS installs them: "make demo-deps").
need="rsync:rsync rsync-ssl:rsync openssl:openssl systemd-socket-activate:systemd ss:iproute2 pgrep:procps"
missing=""
debs=""
for p in $need; do
	command -v "${p%%:*}" >/dev/null && continue
	missing="$missing ${p%%:*}"
	case " $debs " in *" ${p#*:} "*) ;; *) debs="$debs ${p#*:}" ;; esac
done
if [ -n "$missing" ]; then
	echo "the demo needs:$missing (Debian packages:$debs; run 'make demo-deps' as root, or apt-get install$debs)" >&2
	exit 1
fi
shim=$(readlink -f "${1:-./rsync-ssl-shim}")

dir=$(mktemp -d -t rsync-ssl-demo.XXXXXX)
pid=""
cur="0. setup"
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
step() {
	cur=$1
	printf '\n\033[1m== %s\033[0m\n' "$*"
}
ok() { echo "   ok: $*"; }
fail() {
	trap - ERR
	echo >&2
	echo "demo FAILED at step ${cur%% *} $*" >&2
	for f in shim.log rsyncd.log; do
		if [ -s "$dir/$f" ]; then
			echo "   last lines of $f:" >&2
			tail -n 10 "$dir/$f" | sed 's/^/     /' >&2
		fi
	done
	exit 1
}
# Any command that fails unexpectedly names the step it broke.
trap 'fail "(exit $?): $BASH_COMMAND"' ERR
# indent shows a program's output under its step.
indent() { sed 's/^/   /'; }

step "1. A throwaway CA and a server certificate for localhost (ECDSA P-256)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj "/CN=rsync-ssl-shim demo CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
	-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
	-days 1 -extfile "$dir/san.ext" -out "$dir/server.pem" 2>/dev/null
openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null
ok "$dir/ca.pem signs $dir/server.pem (key $dir/server.key)"

step "2. An rsync module 'demo' with a few files"
mkdir -p "$dir/module/docs"
echo "hello over TLS" >"$dir/module/hello.txt"
head -c 1048576 /dev/urandom >"$dir/module/random.bin"
for i in 1 2 3; do echo "file $i" >"$dir/module/docs/note-$i.txt"; done
cat >"$dir/rsyncd.conf" <<CONF
log file = $dir/rsyncd.log
use chroot = no
uid = $(id -u)
gid = $(id -g)

[demo]
path = $dir/module
comment = rsync-ssl-shim demo module
read only = yes
CONF
indent <"$dir/rsyncd.conf"
ok "module 'demo': $(find "$dir/module" -type f | wc -l) files, $(du -sk "$dir/module" | cut -f1) KiB"

step "3. Socket activation on 127.0.0.1:$port: one rsync-ssl-shim per connection, nothing else listens"
echo "   systemd-socket-activate --accept --inetd -l 127.0.0.1:$port $shim serve --cert ... --key ... --rsyncd-conf ..."
systemd-socket-activate --accept --inetd -l "127.0.0.1:$port" \
	"$shim" serve --cert "$dir/server.pem" --key "$dir/server.key" \
	--rsyncd-conf "$dir/rsyncd.conf" --rsync "$(command -v rsync)" 2>"$dir/shim.log" &
pid=$!
# Wait for the socket without connecting to it: a probe connection would be
# a client like any other, and show up in the log.
listening=""
for _ in $(seq 100); do
	if ss -Hltnp "sport = :$port" 2>/dev/null | grep -q "pid=$pid,"; then
		listening=1
		break
	fi
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$listening" ]; then
	kill -0 "$pid" 2>/dev/null || fail "systemd-socket-activate exited without listening on 127.0.0.1:$port (port taken? set DEMO_PORT)"
	fail "systemd-socket-activate does not listen on 127.0.0.1:$port after 10 s"
fi
ok "systemd-socket-activate (pid $pid) listens on 127.0.0.1:$port; no shim and no rsync run yet"

export RSYNC_SSL_CA_CERT="$dir/ca.pem" RSYNC_SSL_PORT="$port" RSYNC_SSL_TYPE=openssl
conns=0
step "4. List the modules with stock rsync-ssl"
echo "   RSYNC_SSL_CA_CERT=ca.pem RSYNC_SSL_PORT=$port rsync-ssl localhost::"
rsync-ssl localhost:: >"$dir/out" 2>&1 || fail "rsync-ssl localhost:: exited $?: $(cat "$dir/out")"
conns=$((conns + 1))
grep -v '^verify depth' "$dir/out" | indent
grep -q '^demo[[:space:]]' "$dir/out" || fail "the listing does not name the module 'demo'"
ok "the server listed module 'demo' over TLS, its certificate verified against ca.pem"

step "5. Pull the module"
echo "   rsync-ssl -av localhost::demo/ ./pulled/"
rsync-ssl -av "localhost::demo/" "$dir/pulled/" >"$dir/out" 2>&1 || fail "rsync-ssl pull exited $?: $(cat "$dir/out")"
conns=$((conns + 1))
grep -v '^verify depth' "$dir/out" | indent
diff -r "$dir/module" "$dir/pulled" >/dev/null || fail "the pulled tree differs from the module"
ok "pulled tree is identical to the module"

step "6. The same with this binary as the client, and its hop-by-hop check"
echo "   rsync-ssl-shim rsync -a localhost::demo/ ./pulled2/"
"$shim" rsync -a "localhost::demo/" "$dir/pulled2/" >"$dir/out" 2>&1 || fail "rsync-ssl-shim rsync exited $?: $(cat "$dir/out")"
conns=$((conns + 1))
indent <"$dir/out"
diff -r "$dir/module" "$dir/pulled2" >/dev/null || fail "the tree pulled by rsync-ssl-shim rsync differs from the module"
ok "pulled tree is identical to the module"
echo "   rsync-ssl-shim check localhost demo"
"$shim" check localhost demo >"$dir/out" 2>&1 || fail "check exited $?: $(cat "$dir/out")"
conns=$((conns + 1))
indent <"$dir/out"
grep -q 'all 5 hops work' "$dir/out" || fail "check did not report all 5 hops working"
ok "check walked resolve, tcp, tls, rsync and module: all work"

step "7. A plain rsync client on the TLS port is told why it cannot connect"
echo "   rsync rsync://localhost:$port/"
code=0
rsync "rsync://localhost:$port/" >"$dir/out" 2>&1 || code=$?
conns=$((conns + 1))
indent <"$dir/out"
[ "$code" = 5 ] || fail "plain rsync exited $code, want 5 (error starting client-server protocol)"
grep -q '^@ERROR: this port speaks rsync over TLS' "$dir/out" || fail "plain rsync was not told in its own protocol"
ok "plain rsync got an @ERROR line in its own protocol and exit 5, not a TLS alert"

step "8. Every connection ends on its own: wait (at most ${drain} s) for the shims to exit"
# Each served connection is one shim process below the socket, and rsync
# below it. Each logs its line when it ends, so the log is read after this.
waited=0
start=$(date +%s%N)
while children=$(pgrep -P "$pid" | tr '\n' ' ') && [ -n "$children" ]; do
	if [ "$waited" -ge $((drain * 10)) ]; then
		ps -o pid,etime,args -p "${children// /,}" 2>/dev/null | indent >&2 || true
		fail "after ${drain} s these are still running below the socket: $children"
	fi
	sleep 0.1
	waited=$((waited + 1))
done
ms=$((($(date +%s%N) - start) / 1000000))
ok "all $conns connections ended; the last shim was gone ${ms} ms after the last client finished"

step "9. What the shim logged: one summary line per connection (under systemd, journald keeps it)"
grep 'rsync-ssl-shim\[' "$dir/shim.log" | indent || true
# Every line names its peer; each connection has exactly one summary, served
# or refused, and may have notes before it (such as which data path it took).
peers=$(grep -o 'rsync-ssl-shim\[[0-9]*\]: \(tls handshake with \)\?127\.0\.0\.1:[0-9]*' "$dir/shim.log" |
	grep -o '127\.0\.0\.1:[0-9]*' | sort -u | wc -l)
served=$(grep -c ': served ' "$dir/shim.log" || true)
refused=$(grep -c ': tls handshake with 127\.0\.0\.1:[0-9]*: .*answered with @ERROR' "$dir/shim.log" || true)
[ "$peers" = "$conns" ] || fail "the shim's lines name $peers clients, and there were $conns connections"
[ "$served" = 4 ] && [ "$refused" = 1 ] || fail "want 4 sessions served and 1 refused, the log has $served and $refused"
ok "each of the $conns connections has its summary: $served served, $refused refused before rsync was started"

step "10. What rsync logged: the client address came through the PROXY header"
indent <"$dir/rsyncd.log"
grep -q 'connect from localhost (127.0.0.1)' "$dir/rsyncd.log" || fail "rsync did not log the client's address"
# A healthy session leaves rsync's log clean, check's included: a log full
# of errors from health checks teaches admins to stop reading it.
bad=$(grep -ci 'error\|warning' "$dir/rsyncd.log" || true)
[ "$bad" = 0 ] || fail "rsync logged $bad error or warning lines for healthy clients"
ok "rsync saw each client as 127.0.0.1, the real peer, and logged no error or warning"

step "11. Between connections nothing runs but the activation socket"
children=$(pgrep -P "$pid" | tr '\n' ' ' || true)
[ -z "$children" ] || fail "still running below the socket: $children"
ss -Hltnp "sport = :$port" 2>/dev/null | indent || true
owners=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | sort -u | tr '\n' ' ')
[ "$owners" = "pid=$pid " ] || fail "port $port is held by $owners, not only by the activation socket (pid $pid)"
ok "no shim and no rsync left running; only the activation socket (pid $pid) listens on :$port"

echo
echo "Done: every step worked. Next: README.md, \"Install on Debian 12\"."
