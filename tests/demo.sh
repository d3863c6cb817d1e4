#!/usr/bin/env bash
# make demo: a throwaway CA and certificate, an example module served through
# real socket activation (systemd-socket-activate, the same hand-over as
# rsync-ssl.socket with Accept=yes), pulled with stock rsync-ssl. Everything
# lives in a temporary directory and everything started is stopped.
set -euo pipefail

shim=$(readlink -f "${1:-./rsync-ssl-shim}")
port=${DEMO_PORT:-8874}
need="rsync rsync-ssl openssl systemd-socket-activate"
missing=""
for p in $need; do command -v "$p" >/dev/null || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "demo needs:$missing (run 'make deps' as root)" >&2
	exit 1
fi

dir=$(mktemp -d -t rsync-ssl-demo.XXXXXX)
pid=""
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A throwaway CA and a server certificate for localhost (ECDSA P-256)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj "/CN=rsync-ssl-shim demo CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
	-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
	-days 1 -extfile "$dir/san.ext" -out "$dir/server.pem" 2>/dev/null
echo "   $dir/ca.pem, $dir/server.pem, $dir/server.key"

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
sed 's/^/   /' "$dir/rsyncd.conf"

step "3. Socket activation on 127.0.0.1:$port: one rsync-ssl-shim per connection, nothing else listens"
echo "   systemd-socket-activate --accept --inetd -l 127.0.0.1:$port $shim serve --cert ... --key ... --rsyncd-conf ..."
systemd-socket-activate --accept --inetd -l "127.0.0.1:$port" \
	"$shim" serve --cert "$dir/server.pem" --key "$dir/server.key" \
	--rsyncd-conf "$dir/rsyncd.conf" --rsync "$(command -v rsync)" 2>"$dir/shim.log" &
pid=$!
# Wait for the socket without connecting to it: a probe connection would be
# a client like any other, and show up in the log.
for _ in $(seq 50); do
	ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
	sleep 0.1
done

export RSYNC_SSL_CA_CERT="$dir/ca.pem" RSYNC_SSL_PORT="$port" RSYNC_SSL_TYPE=openssl
step "4. List the modules with stock rsync-ssl"
echo "   RSYNC_SSL_CA_CERT=ca.pem RSYNC_SSL_PORT=$port rsync-ssl localhost::"
rsync-ssl localhost:: 2>&1 | grep -v '^verify depth' | sed 's/^/   /'

step "5. Pull the module"
echo "   rsync-ssl -av localhost::demo/ ./pulled/"
rsync-ssl -av "localhost::demo/" "$dir/pulled/" 2>&1 | grep -v '^verify depth' | sed 's/^/   /'
if diff -r "$dir/module" "$dir/pulled" >/dev/null; then
	echo "   pulled tree is identical to the module"
else
	echo "   pulled tree differs from the module" >&2
	exit 1
fi

step "6. The same with this binary as the client, and its hop-by-hop check"
echo "   rsync-ssl-shim rsync -a localhost::demo/ ./pulled2/"
"$shim" rsync -a "localhost::demo/" "$dir/pulled2/"
diff -r "$dir/module" "$dir/pulled2" >/dev/null && echo "   pulled tree is identical to the module"
echo "   rsync-ssl-shim check localhost demo"
"$shim" check localhost demo 2>&1 | sed 's/^/   /'

step "7. A plain rsync client on the TLS port is told why it cannot connect"
echo "   rsync rsync://localhost:$port/"
rsync "rsync://localhost:$port/" 2>&1 | sed 's/^/   /' || true

step "8. What the shim logged: one line per connection (under systemd, journald keeps it)"
grep 'rsync-ssl-shim\[' "$dir/shim.log" | sed 's/^/   /'

step "9. What rsync logged: the client address came through the PROXY header"
sed 's/^/   /' "$dir/rsyncd.log"

step "10. Between connections nothing runs but the activation socket"
children=$(pgrep -P "$pid" || true)
if [ -z "$children" ]; then
	echo "   no shim and no rsync left running; listening on :$port:"
else
	echo "   still running below the socket: $children" >&2
	exit 1
fi
ss -Hltnp "sport = :$port" 2>/dev/null | sed 's/^/   /' || true
echo
echo "Done. Next: README.md, \"Install on Debian 12\"."
