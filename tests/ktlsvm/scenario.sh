#!/bin/sh
# Runs inside the kernel TLS test VM (see init): rsync-ssl-shim serve with
# the kernel data path against stock clients, then the CPU cost of both
# data paths. Every result is one console line the Go test parses:
#   KTLS-CHECK <name> PASS|FAIL [detail]
#   KTLS-CPU datapath=<ktls|bridge> mib=<n> cpu_s=<s> wall_s=<s>
set -u
CA=/etc/ktls/ca.pem
CERT=/etc/ktls/cert.pem
KEY=/etc/ktls/key.pem
HOST=ktls.test
W=/tmp/w
mkdir -p $W

say() { echo "KTLS-$*"; }
pass() { say "CHECK $1 PASS"; }
step() { say "STEP $* at $(cut -d' ' -f1 /proc/uptime)"; }
fail() { n=$1; shift; say "CHECK $n FAIL $*"; }
check() { n=$1; shift; if "$@"; then pass "$n"; else fail "$n" "($*)"; fi; }

# One sum over a tree: every file's path and sha256.
treesum() { (cd "$1" && find . -type f | sort | xargs sha256sum | sha256sum | cut -d' ' -f1); }
same() { a=$(treesum "$1"); b=$(treesum "$2"); [ -n "$a" ] && [ "$a" = "$b" ]; }

say "KERNEL $(uname -r) ULP $(cat /proc/sys/net/ipv4/tcp_available_ulp) ENTROPY $(cat /proc/sys/kernel/random/entropy_avail)"

step tree
# The tree: small files, a directory, an empty file, a 3 MiB file.
mkdir -p /srv/data/sub /srv/up /srv/big
i=0
while [ $i -lt 40 ]; do
	head -c $((i * 997 + 1)) /dev/urandom > /srv/data/f$i
	i=$((i + 1))
done
: > /srv/data/sub/empty
head -c 3145728 /dev/urandom > /srv/data/sub/three-mib
echo "text line" > /srv/data/sub/text

cat > /etc/rsyncd.conf <<CONF
use chroot = no
uid = root
gid = root
log file = /tmp/rsyncd.log
[data]
path = /srv/data
read only = yes
[up]
path = /srv/up
read only = no
[denied]
path = /srv/data
hosts deny = 192.0.2.1
[big]
path = /srv/big
read only = yes
CONF

# rsync behind a wrapper that records its arguments: proof that no PROXY
# protocol was asked of it.
wrap() { # name real-rsync
	printf '#!/bin/sh\necho "$*" >> /tmp/argv-%s.log\nexec %s "$@"\n' "$1" "$2" > /usr/bin/rsync$1-argv
	chmod +x /usr/bin/rsync$1-argv
}
wrap 350 /usr/bin/rsync
wrap 327 /opt/rsync327/rsync

step servers
serve() { # port logfile args...
	port=$1 log=$2
	shift 2
	rsync-ssl-shim serve --listen 192.0.2.1:$port --cert $CERT --key $KEY \
		--rsyncd-conf /etc/rsyncd.conf "$@" > /dev/null 2> "$log" &
	echo $!
}
P_KTLS=$(serve 874 /tmp/serve-ktls.log --datapath ktls --rsync /usr/bin/rsync350-argv --proxy-protocol hosts)
P_OLD=$(serve 875 /tmp/serve-old.log --datapath ktls --rsync /usr/bin/rsync327-argv --proxy-protocol plain \
	--rsync-arg=--log-file=/tmp/rsyncd-327.log)
P_BRIDGE=$(serve 876 /tmp/serve-bridge.log --datapath bridge)
P_AUTO=$(serve 877 /tmp/serve-auto.log)
P_CERT=$(serve 878 /tmp/serve-cert.log --datapath ktls --client-ca $CA --rsync /usr/bin/rsync350-argv --proxy-protocol hosts)
for log in /tmp/serve-ktls.log /tmp/serve-old.log /tmp/serve-bridge.log /tmp/serve-auto.log /tmp/serve-cert.log; do
	n=0
	while ! grep -q "serving" $log && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
	grep -q "serving" $log || fail start-$(basename $log .log) "$(cat $log)"
done

ossl() { # port rsync-args...: rsync-ssl with openssl s_client
	port=$1
	shift
	RSYNC_SSL_TYPE=openssl RSYNC_SSL_CA_CERT=$CA RSYNC_SSL_PORT=$port RSYNC_PORT=0 timeout 300 rsync-ssl "$@"
}
viasocat() { # port rsync-args...: socat as rsync's --rsh
	port=$1
	shift
	timeout 300 rsync --rsh="sh -c 'exec socat STDIO OPENSSL:$HOST:$port,cafile=$CA,verify=1' sh" "$@"
}
viashim() { # port rsync-args...
	port=$1
	shift
	RSYNC_SSL_CA_CERT=$CA RSYNC_SSL_PORT=$port timeout 300 rsync-ssl-shim rsync "$@"
}

step clients
# Pull and push with each stock client.
for c in ossl viasocat viashim; do
	$c 874 -a rsync://$HOST/data/ $W/pull-$c/ > $W/$c.out 2>&1
	check pull-$c same /srv/data $W/pull-$c
	$c 874 -a /srv/data/ rsync://$HOST/up/push-$c/ > $W/$c-push.out 2>&1
	check push-$c same /srv/data /srv/up/push-$c
done

step helper-paths
# The helper's own data paths, each named: kernel TLS (splice) and user
# space, against the server's kernel path (874) and its bridge (876), whose
# records crypto/tls writes. The wrapper keeps the helper's CPU ticks.
cat > /usr/bin/helper-wrap <<'WRAP'
#!/bin/sh
rsync-ssl-shim connect "$@"
rc=$?
awk '{print $16 + $17}' /proc/$$/stat > /tmp/helper-ticks
exit $rc
WRAP
chmod +x /usr/bin/helper-wrap
viahelper() { # datapath port rsync-args...
	dp=$1 port=$2
	shift 2
	RSYNC_SSL_CA_CERT=$CA RSYNC_SSL_PORT=$port timeout 300 rsync --rsh="/usr/bin/helper-wrap --datapath $dp" "$@"
}
for dp in ktls user; do
	for port in 874 876; do
		viahelper $dp $port -a rsync://$HOST/data/ $W/pull-h-$dp-$port/ > $W/h-$dp-$port.out 2>&1
		check pull-helper-$dp-$port same /srv/data $W/pull-h-$dp-$port
		viahelper $dp $port -a /srv/data/ rsync://$HOST/up/push-h-$dp-$port/ > $W/h-$dp-$port-push.out 2>&1
		check push-helper-$dp-$port same /srv/data /srv/up/push-h-$dp-$port
	done
done
# A stock TLS server that sends session tickets after the handshake
# (OpenSSL sends two): socat in front of a plain rsync daemon on loopback.
# The helper's kernel path must pass over them.
rsync --daemon --address=127.0.0.1 --port=873 --config=/etc/rsyncd.conf --log-file=/tmp/rsyncd-plain.log
socat OPENSSL-LISTEN:879,bind=192.0.2.1,reuseaddr,fork,cert=$CERT,key=$KEY,verify=0 TCP:127.0.0.1:873 2> /tmp/socat-server.log &
P_SOCAT=$!
sleep 1
viahelper ktls 879 -a rsync://$HOST/data/ $W/pull-h-tickets/ > $W/h-tickets.out 2>&1
check pull-helper-ktls-tickets same /srv/data $W/pull-h-tickets
viahelper ktls 879 -a /srv/data/ rsync://$HOST/up/push-h-tickets/ > $W/h-tickets-push.out 2>&1
check push-helper-ktls-tickets same /srv/data /srv/up/push-h-tickets
kill $P_SOCAT
# A server that refuses the helper's (missing) certificate after the
# handshake: its alert reaches the kernel, and the helper names it.
viahelper ktls 878 rsync://$HOST/data/ > $W/h-alert.out 2>&1
check helper-ktls-alert sh -c "grep -q 'server refused the session' $W/h-alert.out && grep -q 'client certificate' $W/h-alert.out"

# rsync 3.2.7 over the kernel path.
ossl 875 -a rsync://$HOST/data/ $W/pull-old/ > $W/old.out 2>&1
check pull-rsync327 same /srv/data $W/pull-old
check real-address-rsync327 grep -q "connect from .*(192.0.2.1)" /tmp/rsyncd-327.log

# hosts deny sees the real client.
ossl 874 rsync://$HOST/denied/ > $W/denied.out 2>&1
check hosts-deny grep -q "@ERROR: access denied to denied from .*(192.0.2.1)" $W/denied.out
grep -q "@ERROR" $W/denied.out || cat $W/denied.out

# rsync logged the client's own address, and was never asked for a PROXY
# header.
check real-address grep -q "connect from .*(192.0.2.1)" /tmp/rsyncd.log
check never-127 sh -c '! grep -q "connect from .*(127.0.0.1)" /tmp/rsyncd.log'
check argv-no-proxy sh -c '[ -s /tmp/argv-350.log ] && [ -s /tmp/argv-327.log ] && ! grep -q -e proxyprotocol=yes -e proxyprotocolhosts /tmp/argv-350.log /tmp/argv-327.log'

# Every session of the kernel-path servers was served on it.
check datapath-ktls sh -c 'grep -q "datapath=ktls" /tmp/serve-ktls.log && ! grep -q "datapath=bridge" /tmp/serve-ktls.log /tmp/serve-old.log'

# A client that fails the certificate policy never reaches rsync.
before=$(wc -l < /tmp/argv-350.log)
ossl 878 rsync://$HOST/data/ > $W/nocert.out 2>&1
after=$(wc -l < /tmp/argv-350.log)
check refused-before-rsync sh -c "[ $before = $after ] && grep -q 'client sent no certificate' /tmp/serve-cert.log"

# auto takes the kernel path where the module is loaded.
ossl 877 -a rsync://$HOST/data/ $W/pull-auto/ > $W/auto.out 2>&1
check auto-ktls sh -c "grep -q datapath=ktls /tmp/serve-auto.log"

# Sessions the kernel path does not cover: auto bridges them with one line
# saying why, ktls refuses them.
tls12() { # port rsync-args...: socat capped at TLS 1.2
	port=$1
	shift
	timeout 300 rsync --rsh="sh -c 'exec socat STDIO OPENSSL:$HOST:$port,cafile=$CA,verify=1,openssl-max-proto-version=TLS1.2' sh" "$@"
}
tls12 877 -a rsync://$HOST/data/ $W/pull-tls12/ > $W/tls12.out 2>&1
check auto-tls12-bridge sh -c "grep -q 'datapath=bridge fallback=.the client negotiated TLSv1.2; the kernel path takes TLS 1.3 only.' /tmp/serve-auto.log && grep -q 'tls=TLSv1.2 .*datapath=bridge' /tmp/serve-auto.log"
check auto-tls12-pull same /srv/data $W/pull-tls12
tls12 874 rsync://$HOST/data/ > $W/tls12-ktls.out 2>&1
check ktls-tls12-refused sh -c "grep -q 'the client negotiated TLSv1.2; the kernel path takes TLS 1.3 only; refused (--datapath ktls)' /tmp/serve-ktls.log"
printf '@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n#list\n' |
	timeout 20 openssl s_client -connect $HOST:877 -servername $HOST -CAfile $CA -quiet \
	-ciphersuites TLS_CHACHA20_POLY1305_SHA256 > $W/chacha.out 2>&1
check auto-chacha-bridge sh -c "grep -q 'datapath=bridge fallback=.cipher TLS_CHACHA20_POLY1305_SHA256 is not one the kernel path covers' /tmp/serve-auto.log && grep -q '^data' $W/chacha.out"

# A KeyUpdate (openssl s_client's "k" command) mid-session: the kernel
# cannot follow it, rsync's read fails, the session ends, the shim says why.
( printf '@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n'; sleep 2; printf 'k\n'; sleep 4 ) |
	timeout 20 openssl s_client -connect $HOST:874 -servername $HOST -CAfile $CA > $W/keyupdate.out 2>&1
sleep 1
check keyupdate-ends grep -q "KeyUpdate" /tmp/serve-ktls.log
# close_notify mid-session ("Q"): the same clean end.
( printf '@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n'; sleep 2; printf 'Q\n'; sleep 2 ) |
	timeout 20 openssl s_client -connect $HOST:874 -servername $HOST -CAfile $CA > $W/q.out 2>&1
sleep 1
check close-notify-ends grep -q "close_notify" /tmp/serve-ktls.log
# After both, a normal pull still works: nothing was corrupted.
rm -rf $W/pull-after
ossl 874 -a rsync://$HOST/data/ $W/pull-after/ > $W/after.out 2>&1
check pull-after-aborts same /srv/data $W/pull-after

for f in /tmp/serve-ktls.log /tmp/serve-old.log /tmp/serve-auto.log /tmp/serve-cert.log; do
	sed "s|^|LOG $(basename $f): |" $f
done

step cpu
# CPU seconds of each serve process (and the rsyncs it reaped) for a
# pull of a big file; TCG emulation distorts absolute numbers.
MIB=${KTLS_MIB:-32}
dd if=/dev/urandom of=/srv/big/big.bin bs=1048576 count=$MIB 2>/dev/null
ticks() { awk '{print $14 + $15 + $16 + $17}' /proc/$1/stat; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
for round in 1 2 3; do
	for dp in ktls bridge; do
		if [ $dp = ktls ]; then port=874 pid=$P_KTLS; else port=876 pid=$P_BRIDGE; fi
		rm -rf $W/big
		t0=$(ticks $pid) w0=$(uptime_s)
		viashim $port -a rsync://$HOST/big/ $W/big/ > $W/big.out 2>&1
		rc=$?
		sleep 0.5
		t1=$(ticks $pid) w1=$(uptime_s)
		if [ $rc = 0 ] && same /srv/big $W/big; then
			say "CPU datapath=$dp mib=$MIB cpu_s=$(awk "BEGIN{print ($t1 - $t0) / 100}") wall_s=$(awk "BEGIN{print $w1 - $w0}")"
		else
			fail cpu-pull-$dp "exit $rc: $(tail -3 $W/big.out)"
		fi
	done
done

# The helper's CPU for the same pull from, and push to, the server's kernel
# path, on each of the helper's paths; the plain daemon's pull wall time
# beside them.
for round in 1 2 3 4 5; do
	rm -rf $W/big
	w0=$(uptime_s)
	timeout 300 rsync -a rsync://127.0.0.1:873/big/ $W/big/ > $W/big-plain.out 2>&1
	rc=$?
	w1=$(uptime_s)
	if [ $rc = 0 ] && same /srv/big $W/big; then
		say "WALL setup=plain mib=$MIB wall_s=$(awk "BEGIN{print $w1 - $w0}")"
	else
		fail wall-plain "exit $rc: $(tail -3 $W/big-plain.out)"
	fi
	for mode in ktls user; do
		rm -rf $W/big /tmp/helper-ticks
		w0=$(uptime_s)
		viahelper $mode 874 -a rsync://$HOST/big/ $W/big/ > $W/big-h.out 2>&1
		rc=$?
		w1=$(uptime_s)
		if [ $rc = 0 ] && same /srv/big $W/big && [ -s /tmp/helper-ticks ]; then
			say "HELPER clientpath=$mode mib=$MIB cpu_s=$(awk '{print $1 / 100}' /tmp/helper-ticks) wall_s=$(awk "BEGIN{print $w1 - $w0}")"
		else
			fail cpu-helper-$mode "exit $rc: $(tail -3 $W/big-h.out)"
		fi
		rm -rf /srv/up/bigpush /tmp/helper-ticks
		w0=$(uptime_s)
		viahelper $mode 874 -a /srv/big/ rsync://$HOST/up/bigpush/ > $W/big-hp.out 2>&1
		rc=$?
		w1=$(uptime_s)
		if [ $rc = 0 ] && same /srv/big /srv/up/bigpush && [ -s /tmp/helper-ticks ]; then
			say "HELPERPUSH clientpath=$mode mib=$MIB cpu_s=$(awk '{print $1 / 100}' /tmp/helper-ticks) wall_s=$(awk "BEGIN{print $w1 - $w0}")"
		else
			fail cpu-helperpush-$mode "exit $rc: $(tail -3 $W/big-hp.out)"
		fi
	done
done

for p in $P_KTLS $P_OLD $P_BRIDGE $P_AUTO $P_CERT; do kill $p; done
sleep 0.5
for f in $W/*.out; do sed "s|^|OUT $(basename $f): |" $f | tail -5; done
