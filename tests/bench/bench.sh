#!/usr/bin/env bash
# Every way to run rsync's daemon protocol encrypted, side by side in one run
# on loopback and tmpfs, against the plain rsync daemon as the floor:
#
#   servers  plain "rsync --daemon" on TCP (no encryption, the floor)
#            stunnel with "exec = rsync --daemon"
#            nginx stream ssl + proxy_protocol to an rsync daemon ("proxy protocol = yes")
#            rsync over ssh to a private sshd
#            rsync-ssl-shim serve under systemd-socket-activate --accept --inetd
#            (the rsync-ssl.socket shape; also with --pair unix for the 1 GiB run)
#            rsync-ssl-shim serve --listen
#   clients  for every TLS server: rsync-ssl (openssl type), rsync-ssl (stunnel
#            type), rsync-ssl-shim rsync
#   work     one big incompressible file; many small files; sequential module
#            listings (p50/p95); simultaneous listings (wall, failures); CPU
#            seconds and peak RSS of every process in the big-file run;
#            the shim's RSS, threads and fds over many sequential connections
#
# Runs are interleaved (every setup once per round, the order rotated each
# round) so that noise hits all alike; a fixed CPU job timed before and after
# each round flags rounds where something else was using the machine.
#
#   tests/bench/bench.sh [BINARY]        (default ./rsync-ssl-shim)
#   BENCH_QUICK=1     small sizes, one round: a smoke run of about two minutes
#   BENCH_OUT=DIR     where benchmarks.md, .png and .raw go (default docs)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

shim=$(readlink -f "${1:-./rsync-ssl-shim}")
out=${BENCH_OUT:-docs}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	big_mib=128 small_n=2000 lists=30 conc=64 reps=1 conc_reps=1 seqconns=100
else
	big_mib=1024 small_n=20000 lists=200 conc=64 reps=3 conc_reps=3 seqconns=1000
fi
sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
bench_need rsync rsync-ssl openssl stunnel4 nginx systemd-socket-activate ssh ssh-keygen "$sshd_bin" \
	/usr/bin/time gnuplot ss perl pgrep
[ -x "$shim" ] || { echo "no binary at $shim (make build first)" >&2; exit 1; }
nginx_stream=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$nginx_stream" ] || { echo "needs libnginx-mod-stream ($nginx_stream)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

bench_init
mkdir -p "$dir/bin" "$dir/log" "$dir/m" "$dir/ngx" "$dir/run"
raw="$dir/raw"
: >"$raw"
rsync_bin=$(command -v rsync)
FMT="%U %S %M"
say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- fixtures
say "fixtures in tmpfs: ${big_mib} MiB file, $small_n small files"
bench_certs
export RSYNC_SSL_CA_CERT="$dir/cert.pem"
bench_rsyncd_conf "$dir/rsyncd.conf" "listen backlog = 4096"
bench_rsyncd_conf "$dir/rsyncd-proxy.conf" "listen backlog = 4096" "proxy protocol = yes" "proxy protocol hosts = 127.0.0.1"
head -c "${big_mib}M" /dev/urandom >"$dir/src/big"
mkdir -p "$dir/src/small"
perl -e '
	my ($root, $n) = @ARGV; srand(7);
	open(my $r, "<", "/dev/urandom") or die; my $i = 0;
	for (my $d = 0; $i < $n; $d++) {
		mkdir "$root/$d" or die;
		for (my $f = 0; $f < 100 && $i < $n; $f++, $i++) {
			read($r, my $buf, 1024 + int(rand(7169))) or die;
			open(my $o, ">", "$root/$d/$f") or die; print $o $buf; close $o;
		}
	}' "$dir/src/small" "$small_n"
small_bytes=$(du -sb "$dir/src/small" | cut -f1)

# ssh: a private sshd on loopback with its own host key and one authorized key.
ssh-keygen -q -t ecdsa -b 256 -N '' -f "$dir/ssh_host_key"
ssh-keygen -q -t ecdsa -b 256 -N '' -f "$dir/id"
cp "$dir/id.pub" "$dir/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true

# Recording wrappers: each appends "user sys maxrss-KiB" of its program.
wrap() { # NAME FILE PROGRAM [ARGS...]
	local name=$1 file=$2
	shift 2
	{
		echo '#!/bin/sh'
		printf 'exec /usr/bin/time -a -o %q -f %q' "$dir/m/$file" "$FMT"
		printf ' %q' "$@"
		echo ' "$@"'
	} >"$dir/bin/$name"
	chmod +x "$dir/bin/$name"
}
wrap rsync-timed srv-rsync "$rsync_bin"
wrap openssl-timed cli-helper "$(command -v openssl)"
wrap stunnel-timed cli-helper "$(command -v stunnel4)"
wrap connect-timed cli-helper "$shim" connect
ssh_opts=(-i "$dir/id" -o "UserKnownHostsFile=$dir/known_hosts" -o BatchMode=yes -o LogLevel=ERROR)

# ---------------------------------------------------------------- servers
declare -A port srv_pids
# start_server NAME MODE: MODE is lean (as a user runs it), measure (every
# process under /usr/bin/time) or probe (logs the negotiated TLS).
start_server() {
	local s=$1 mode=$2 p T=() TR=() rs=$rsync_bin pids=""
	if [ "$mode" = measure ]; then
		T=(/usr/bin/time -a -o "$dir/m/srv-front" -f "$FMT")
		TR=(/usr/bin/time -a -o "$dir/m/srv-rsync" -f "$FMT")
		rs=$dir/bin/rsync-timed
	fi
	p=$(bench_port)
	port[$s]=$p
	case $s in
	plain)
		bench_bg "${TR[@]}" "$rsync_bin" --daemon --no-detach --address=127.0.0.1 --port="$p" \
			--config="$dir/rsyncd.conf"
		pids=$bench_last_pid
		;;
	stunnel)
		bench_stunnel_conf "$dir/run/stunnel.conf" "$p" "$rs" "$([ "$mode" = probe ] && echo info || echo notice)"
		bench_bg "${T[@]}" stunnel4 "$dir/run/stunnel.conf" 2>>"$dir/log/stunnel.log"
		pids=$bench_last_pid
		;;
	nginx)
		local b
		b=$(bench_port)
		bench_bg "${TR[@]}" "$rsync_bin" --daemon --no-detach --address=127.0.0.1 --port="$b" \
			--config="$dir/rsyncd-proxy.conf"
		pids=$bench_last_pid
		cat >"$dir/ngx/nginx.conf" <<-CONF
			load_module $nginx_stream;
			worker_processes auto;
			pid $dir/ngx/nginx.pid;
			error_log $dir/log/nginx.err;
			events { worker_connections 1024; }
			stream {
			    log_format tls "\$ssl_protocol \$ssl_cipher";
			    server {
			        listen 127.0.0.1:$p ssl;
			        ssl_certificate $dir/cert.pem;
			        ssl_certificate_key $dir/key.pem;
			        proxy_pass 127.0.0.1:$b;
			        proxy_protocol on;
			        $([ "$mode" = probe ] && echo "access_log $dir/log/nginx.access tls;")
			    }
			}
		CONF
		bench_wait_listen "$b"
		bench_bg "${T[@]}" nginx -p "$dir/ngx" -c "$dir/ngx/nginx.conf" -g 'daemon off;'
		pids+=" $bench_last_pid"
		;;
	ssh)
		cat >"$dir/run/sshd_config" <<-CONF
			ListenAddress 127.0.0.1
			HostKey $dir/ssh_host_key
			PidFile none
			AuthorizedKeysFile $dir/authorized_keys
			StrictModes no
			UsePAM no
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
		CONF
		echo "[127.0.0.1]:$p $(cut -d' ' -f1-2 "$dir/ssh_host_key.pub")" >"$dir/known_hosts"
		bench_bg "${T[@]}" "$sshd_bin" -D -e -f "$dir/run/sshd_config" -p "$p" 2>>"$dir/log/sshd.log"
		pids=$bench_last_pid
		;;
	shim-sa | shim-sa-unix | shim-listen)
		local a=(serve --cert "$dir/cert.pem" --key "$dir/key.pem" --rsyncd-conf "$dir/rsyncd.conf" --rsync "$rs")
		# A wrapper script hides the rsync version the shim reads off the
		# binary: name what "auto" picks for this rsync.
		[ "$mode" = measure ] && a+=(--proxy-protocol hosts)
		[ "$s" = shim-sa-unix ] && a+=(--pair unix)
		if [ "$s" = shim-listen ]; then
			bench_bg "${T[@]}" "$shim" "${a[@]}" --listen "127.0.0.1:$p" 2>>"$dir/log/$s.log"
		else
			bench_bg systemd-socket-activate --accept --inetd -l "127.0.0.1:$p" \
				"${T[@]}" "$shim" "${a[@]}" 2>>"$dir/log/$s.log"
		fi
		pids=$bench_last_pid
		;;
	esac
	srv_pids[$s]=$pids
	bench_wait_listen "$p"
}
stop_server() {
	local p
	for p in ${srv_pids[$1]}; do bench_stop "$p"; done
	srv_pids[$1]=""
}

# ---------------------------------------------------------------- clients
# A combination is SERVER:CLIENT.
tls_servers=(stunnel nginx shim-sa shim-listen)
combos=(plain:rsync ssh:ssh)
for s in "${tls_servers[@]}"; do for c in openssl stunnel ours; do combos+=("$s:$c"); done; done
big_combos=("${combos[@]}" shim-sa-unix:ours)
declare -A label=(
	[plain]="plain rsync daemon (floor)" [ssh]="rsync over ssh" [stunnel]="stunnel exec rsync"
	[nginx]="nginx stream + PROXY" [shim-sa]="shim, socket-activated" [shim-sa-unix]="shim, socket-activated, --pair unix"
	[shim-listen]="shim --listen"
	[rsync]="rsync" [openssl]="rsync-ssl (openssl)" [stunnel-c]="rsync-ssl (stunnel)" [ours]="rsync-ssl-shim rsync"
)
combo_label() {
	local s=${1%%:*} c=${1#*:}
	case $c in rsync | ssh) echo "${label[$s]}" ;; stunnel) echo "${label[$s]} ← ${label[stunnel-c]}" ;;
	*) echo "${label[$s]} ← ${label[$c]}" ;; esac
}
combo_short() { # for the chart
	local s=${1%%:*} c=${1#*:}
	case $c in rsync | ssh) echo "$s" ;; *) echo "$s/$c" ;; esac
}

# client_cmd COMBO MODE [MODULE-PATH DEST]: sets CMD; no path = list modules.
client_cmd() {
	local s=${1%%:*} c=${1#*:} mode=$2 path=${3:-} dest=${4:-} p=${port[${1%%:*}]}
	local opts=() url
	[ -n "$path" ] && opts=(-a)
	CMD=()
	[ "$mode" = measure ] && CMD=(/usr/bin/time -o "$dir/m/cli-rsync" -f "$FMT")
	case $c in
	rsync) CMD+=(rsync "${opts[@]}" "rsync://127.0.0.1:$p/${path:+data/$path}" ${dest:+"$dest"}) ;;
	ssh)
		local sh="ssh -p $p ${ssh_opts[*]}"
		[ "$mode" = measure ] && sh="/usr/bin/time -a -o $dir/m/cli-helper -f '$FMT' $sh"
		if [ -n "$path" ]; then
			CMD+=(rsync "${opts[@]}" -e "$sh")
			[ "$mode" = measure ] && CMD+=(--rsync-path="$dir/bin/rsync-timed")
			CMD+=("127.0.0.1:$dir/src/$path" "$dest")
		else
			CMD+=(rsync -e "$sh" --rsync-path="rsync --config=$dir/rsyncd.conf" 127.0.0.1::)
		fi
		;;
	openssl | stunnel)
		url="rsync://localhost:$p/${path:+data/$path}"
		CMD+=(env RSYNC_SSL_TYPE="$c")
		if [ "$mode" = measure ]; then
			[ "$c" = openssl ] && CMD+=(RSYNC_SSL_OPENSSL="$dir/bin/openssl-timed")
			[ "$c" = stunnel ] && CMD+=(RSYNC_SSL_STUNNEL="$dir/bin/stunnel-timed")
		fi
		CMD+=(rsync-ssl "${opts[@]}" "$url" ${dest:+"$dest"})
		;;
	ours)
		url="rsync://localhost:$p/${path:+data/$path}"
		if [ "$mode" = measure ]; then
			# What "rsync-ssl-shim rsync" execs, with the helper recorded.
			CMD+=(rsync --rsh="$dir/bin/connect-timed" "${opts[@]}" "$url" ${dest:+"$dest"})
		else
			CMD+=("$shim" rsync "${opts[@]}" "$url" ${dest:+"$dest"})
		fi
		;;
	esac
}

# ---------------------------------------------------------------- noise
round=0
declare -A calib_before calib_after load_before
round_start() {
	round=$((round + 1))
	calib_before[$round]=$(bench_cpu_calib)
	load_before[$round]=$(cut -d' ' -f1 /proc/loadavg)
}
round_end() {
	calib_after[$round]=$(bench_cpu_calib)
	echo "workload=calib round=$round what=$1 before_ms=${calib_before[$round]} after_ms=${calib_after[$round]} load1=${load_before[$round]}" >>"$raw"
}
rotate() { # rotate ARRAY-NAME BY: print the array rotated
	local -n arr=$1
	local n=${#arr[@]} i
	for ((i = 0; i < n; i++)); do echo "${arr[$(((i + $2) % n))]}"; done
}
now_us() { echo "${EPOCHREALTIME/./}"; }

# ---------------------------------------------------------------- 1: big file
# Every server fresh for each run, all processes under /usr/bin/time.
rd() { # FILE → "user+sys maxrss" of its last line (0 0 when missing)
	if [ -s "$1" ]; then tail -n1 "$1" | awk '{printf "%.3f %d\n", $1 + $2, $3}'; else echo "0 0"; fi
}
say "big file: ${#big_combos[@]} setups x $reps"
for ((r = 0; r < reps; r++)); do
	round_start
	while read -r cb; do
		s=${cb%%:*}
		rm -f "$dir/m"/*
		start_server "$s" measure
		rm -rf "$dir/dst"
		mkdir -p "$dir/dst"
		client_cmd "$cb" measure big "$dir/dst/"
		t0=$(now_us)
		ok=1
		"${CMD[@]}" >/dev/null 2>"$dir/log/client.err" || ok=0
		t1=$(now_us)
		[ "$(stat -c %s "$dir/dst/big" 2>/dev/null)" = "$(stat -c %s "$dir/src/big")" ] || ok=0
		[ "$ok" = 1 ] || say "FAILED $cb: $(tail -n3 "$dir/log/client.err")"
		stop_server "$s"
		read -r fc fr < <(rd "$dir/m/srv-front")
		read -r rc rr < <(rd "$dir/m/srv-rsync")
		read -r cc cr < <(rd "$dir/m/cli-rsync")
		read -r hc hr < <(rd "$dir/m/cli-helper")
		# A wrapper's numbers include what it waited for: take the
		# recorded descendants out of the CPU. Peak RSS is the largest of
		# the tree, so the front end's own is exact only when larger.
		s_front=""
		if [ -s "$dir/m/srv-front" ]; then
			sub=$rc
			[ "$s" = nginx ] && sub=0 # its rsync daemon is not its child
			s_front="srv_front_cpu=$(awk -v a="$fc" -v b="$sub" 'BEGIN {x = a - b; if (x < 0) x = 0; printf "%.3f", x}') srv_front_rss=$fr srv_front_rss_exact=$([ "$fr" -gt "$rr" ] || [ "$s" = nginx ] && echo 1 || echo 0)"
		fi
		cli_self=$(awk -v a="$cc" -v b="$hc" 'BEGIN {x = a - b; if (x < 0) x = 0; printf "%.3f", x}')
		echo "workload=big round=$round combo=$cb ok=$ok wall_s=$(((t1 - t0) / 1000))e-3 $s_front srv_rsync_cpu=$rc srv_rsync_rss=$rr cli_rsync_cpu=$cli_self cli_rsync_rss=$cr cli_helper_cpu=$hc cli_helper_rss=$hr" >>"$raw"
	done < <(rotate big_combos "$r")
	round_end big
	rm -rf "$dir/dst"
done

# ---------------------------------------------------------------- lean servers
for s in plain stunnel nginx ssh shim-sa shim-listen; do start_server "$s" probe; done
# The negotiated TLS of each pair, from the server's log (ssh: the client's).
declare -A tls
for cb in "${combos[@]}"; do
	s=${cb%%:*}
	client_cmd "$cb" lean
	lo=$("${CMD[@]}" 2>&1) || { echo "listing failed: $cb: $lo" >&2; exit 1; }
	grep -q '^data' <<<"$lo" || { echo "no module listed by $cb: $lo" >&2; exit 1; }
	case $s in
	plain) tls[$cb]="none" ;;
	ssh)
		tls[$cb]=$(ssh -v -p "${port[ssh]}" "${ssh_opts[@]}" 127.0.0.1 true 2>&1 |
			sed -n 's/.*kex: server->client cipher: \([^ ]*\) MAC: \([^ ]*\).*/SSH-2 \1 \2/p' | head -n1)
		tls[$cb]=${tls[$cb]/ <implicit>/} ;;
	stunnel)
		sleep 0.1
		tls[$cb]=$(grep -E 'TLSv1\.[0-9] ciphersuite' "$dir/log/stunnel.log" | tail -n1 |
			sed 's/.*: \(TLSv1\.[0-9]\) ciphersuite: \([^ ]*\).*/\1 \2/') ;;
	nginx)
		sleep 0.1
		tls[$cb]=$(tail -n1 "$dir/log/nginx.access") ;;
	shim-*)
		sleep 0.05
		tls[$cb]=$(grep ' served ' "$dir/log/$s.log" | tail -n1 | sed 's/.* tls=\([^ ]*\) cipher=\([^ ]*\) .*/\1 \2/') ;;
	esac
	say "  $cb: ${tls[$cb]}"
done
tls[shim-sa-unix:ours]=${tls[shim-sa:ours]}
# Lean from here on: stunnel at its default log level, nginx without access log.
for s in stunnel nginx; do stop_server "$s"; start_server "$s" lean; done

# ---------------------------------------------------------------- 2: small files
say "small files: ${#combos[@]} setups x $reps"
for ((r = 0; r < reps; r++)); do
	round_start
	while read -r cb; do
		rm -rf "$dir/dst"
		mkdir -p "$dir/dst"
		client_cmd "$cb" lean small "$dir/dst/"
		ok=1
		t0=$(now_us)
		"${CMD[@]}" >/dev/null 2>"$dir/log/client.err" || ok=0
		t1=$(now_us)
		[ "$(du -sb "$dir/dst/small" 2>/dev/null | cut -f1)" = "$small_bytes" ] || ok=0
		[ "$ok" = 1 ] || say "FAILED $cb: $(tail -n3 "$dir/log/client.err")"
		echo "workload=small round=$round combo=$cb ok=$ok wall_s=$(((t1 - t0) / 1000))e-3" >>"$raw"
	done < <(rotate combos "$r")
	round_end small
done
rm -rf "$dir/dst"

# ---------------------------------------------------------------- 3: listings
say "listings: ${#combos[@]} setups x $lists"
for ((i = 0; i < lists; i++)); do
	((i % 20 == 0)) && round_start
	while read -r cb; do
		client_cmd "$cb" lean
		ok=1
		t0=$(now_us)
		"${CMD[@]}" >/dev/null 2>&1 || ok=0
		t1=$(now_us)
		echo "workload=list round=$round combo=$cb ok=$ok ms=$(((t1 - t0) / 1000)).$(printf %03d $(((t1 - t0) % 1000)))" >>"$raw"
	done < <(rotate combos "$i")
	((i % 20 == 19 || i == lists - 1)) && round_end list
done

# ---------------------------------------------------------------- 4: simultaneous
say "simultaneous listings: $conc at once, ${#combos[@]} setups x $conc_reps"
for ((r = 0; r < conc_reps; r++)); do
	round_start
	while read -r cb; do
		client_cmd "$cb" lean
		rm -rf "$dir/conc"
		mkdir -p "$dir/conc"
		t0=$(now_us)
		jobs_=()
		for ((j = 0; j < conc; j++)); do
			("${CMD[@]}" >"$dir/conc/$j.out" 2>&1 && grep -q '^data' "$dir/conc/$j.out" || touch "$dir/conc/$j.failed") &
			jobs_+=($!)
		done
		wait "${jobs_[@]}" || true # the servers are children too: wait for these only
		t1=$(now_us)
		fails=$(find "$dir/conc" -name '*.failed' | wc -l)
		echo "workload=conc round=$round combo=$cb failures=$fails wall_s=$(((t1 - t0) / 1000))e-3" >>"$raw"
		[ "$fails" = 0 ] || say "  $cb: $fails of $conc failed: $(cat "$dir/conc"/*.out | sort | uniq -c | sort -rn | head -n2)"
	done < <(rotate combos "$r")
	round_end conc
done

# ---------------------------------------------------------------- process starts
# What a listing is made of: each side of each setup starts programs.
say "process starts"
start_names=(true rsync-ssl-shim rsync openssl stunnel4)
start_cmds=("true" "$shim version" "rsync --version" "openssl version" "stunnel4 -version")
for ((i = 0; i < 30; i++)); do
	for k in "${!start_cmds[@]}"; do
		t0=$(now_us)
		${start_cmds[$k]} >/dev/null 2>&1 || true
		t1=$(now_us)
		echo "workload=start combo=${start_names[$k]} ms=$(((t1 - t0) / 1000)).$(printf %03d $(((t1 - t0) % 1000)))" >>"$raw"
	done
done

# ---------------------------------------------------------------- 5: sequential growth
say "growth: $seqconns sequential connections to shim --listen"
lp=""
for c in $(pgrep -P "${srv_pids[shim-listen]}" 2>/dev/null) ${srv_pids[shim-listen]}; do
	[ "$(cat "/proc/$c/comm" 2>/dev/null)" = rsync-ssl-shim ] && lp=$c
done
snap() {
	local rss threads fds
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$lp/status")
	threads=$(awk '/^Threads/ {print $2}' "/proc/$lp/status")
	fds=$(ls "/proc/$lp/fd" | wc -l)
	echo "rss_kib=$rss threads=$threads fds=$fds"
}
client_cmd shim-listen:ours lean
for ((j = 0; j < 20; j++)); do "${CMD[@]}" >/dev/null 2>&1; done
sleep 0.5
echo "workload=growth at=after_20 $(snap)" >>"$raw"
gfail=0
for ((j = 0; j < seqconns; j++)); do "${CMD[@]}" >/dev/null 2>&1 || gfail=$((gfail + 1)); done
sleep 0.5
echo "workload=growth at=after_$((seqconns + 20)) failures=$gfail $(snap) hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$lp/status")" >>"$raw"

for s in plain stunnel nginx ssh shim-sa shim-listen; do stop_server "$s"; done

# ---------------------------------------------------------------- report
say "report"
{
	echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, Linux $(uname -r), $(df -T "$dir" | awk 'NR == 2 {print $2}') scratch"
	echo "# rsync: $(rsync --version | head -n1 | awk '{print $3}')"
	echo "# openssl: $(openssl version | awk '{print $2}')"
	echo "# stunnel: $(stunnel4 -version 2>&1 | awk '/^stunnel/ {print $2; exit}')"
	echo "# nginx: $(nginx -v 2>&1 | sed 's,.*nginx/,,')"
	echo "# openssh: $(ssh -V 2>&1 | sed 's/^OpenSSH_\([^,]*\),.*/\1/')"
	echo "# rsync-ssl-shim: $("$shim" version 2>&1 | head -n1 | awk '{print $NF}'), $(go version "$shim" 2>/dev/null | awk '{print $2}' || true)"
	echo "# sizes: big_mib=$big_mib small_n=$small_n small_bytes=$small_bytes lists=$lists conc=$conc reps=$reps conc_reps=$conc_reps seqconns=$seqconns"
	echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	for cb in "${big_combos[@]}"; do echo "workload=tls combo=$cb tls=${tls[$cb]// //}"; done
	cat "$raw"
} >"$out/benchmarks.raw"
"$here/report.sh" "$out/benchmarks.raw" "$out"
say "wrote $out/benchmarks.md, benchmarks.png, benchmarks.raw"
