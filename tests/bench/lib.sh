# Shared setup for the benchmark scripts in this directory; source it.
#
#   bench_init            scratch directory $dir on tmpfs, cleanup on exit
#   bench_need PROG...    fail early when a program is missing
#   bench_port            a free loopback TCP port
#   bench_wait_listen P   wait until something listens on 127.0.0.1:P
#   bench_certs           $dir/cert.pem, $dir/key.pem: ECDSA P-256, CN=localhost
#   bench_rsyncd_conf F [GLOBAL-LINE...]   rsyncd.conf with module [data] = $dir/src
#   bench_bg CMD...       start CMD in the background, stopped by PID on exit
#   bench_stop PID        stop one background process (and the program
#                         /usr/bin/time runs, when PID is such a wrapper)
#   bench_cpu_calib       milliseconds of a fixed CPU-bound job (noise probe)

bench_pids=()
bench_used_ports=" "

bench_init() {
	local base=/dev/shm
	[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
	dir=$(mktemp -d "$base/rsync-ssl-bench.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	local p
	for p in "${bench_pids[@]}"; do bench_stop "$p"; done
	[ -n "${dir:-}" ] && rm -rf "$dir"
}

bench_need() {
	local p
	for p in "$@"; do
		command -v "$p" >/dev/null || { echo "needs $p" >&2; exit 1; }
	done
}

bench_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		case $bench_used_ports in *" $p "*) continue ;; esac
		ss -Hltn "sport = :$p" | grep -q . && continue
		bench_used_ports+="$p "
		echo "$p"
		return
	done
}

bench_wait_listen() {
	local _
	for _ in $(seq 200); do
		ss -Hltn "sport = :$1" | grep -q . && return 0
		sleep 0.025
	done
	echo "port $1 never opened" >&2
	return 1
}

bench_certs() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
}

bench_rsyncd_conf() {
	local f=$1 l
	shift
	mkdir -p "$dir/src" "$dir/log"
	{
		echo "use chroot = no"
		echo "uid = $(id -u)"
		echo "gid = $(id -g)"
		echo "log file = $dir/log/rsyncd.log"
		for l in "$@"; do echo "$l"; done
		echo "[data]"
		echo "path = $dir/src"
		echo "read only = yes"
	} >"$f"
}

# bench_stunnel_conf FILE PORT RSYNC DEBUG: the classic setup, stunnel with
# "exec = rsync --daemon" on 127.0.0.1:PORT, serving $dir/rsyncd.conf.
bench_stunnel_conf() {
	cat >"$1" <<-CONF
		foreground = yes
		pid =
		debug = $4
		[rsync]
		accept = 127.0.0.1:$2
		cert = $dir/cert.pem
		key = $dir/key.pem
		exec = $3
		execArgs = rsync --daemon --config=$dir/rsyncd.conf
	CONF
}

bench_bg() {
	"$@" &
	bench_pids+=($!)
	bench_last_pid=$!
}

bench_stop() {
	local p=$1 c
	kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
	if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = time ]; then
		# GNU time dies of SIGTERM without a report: stop what it runs.
		for c in $(pgrep -P "$p"); do kill "$c" 2>/dev/null || true; done
	else
		kill "$p" 2>/dev/null || true
	fi
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.02; done
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

bench_cpu_calib() {
	[ -f "$dir/calib.bin" ] || head -c 32M /dev/zero >"$dir/calib.bin"
	local t0=${EPOCHREALTIME/./}
	sha256sum "$dir/calib.bin" >/dev/null
	local t1=${EPOCHREALTIME/./}
	echo $(((t1 - t0) / 1000))
}
