#!/usr/bin/env bash
# Turn bench.sh's raw numbers (one line per run) into benchmarks.md and
# benchmarks.png: medians per setup, ratios to the plain floor of the same
# run, the issue's targets checked, busy rounds flagged.
#
#   tests/bench/report.sh RAW OUTDIR
set -euo pipefail
raw=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

meta() { sed -n "s/^# $1: //p" "$raw" | head -n1; }
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
eval "$(meta sizes | tr ' ' '\n' | sed 's/^/S_/')"

# Busy rounds: the fixed CPU job took 25% longer than its best in this run.
awk '/^workload=calib / {
	for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	r[++n] = v["round"]; b[n] = v["before_ms"]; a[n] = v["after_ms"]; l[n] = v["load1"]; w[n] = v["what"]
	if (min == "" || b[n] < min) min = b[n]; if (a[n] < min) min = a[n]
} END {
	for (i = 1; i <= n; i++) {
		busy = (b[i] > 1.25 * min || a[i] > 1.25 * min)
		printf "%s %s %d %d %s %d\n", r[i], w[i], b[i], a[i], l[i], busy
	}
}' "$raw" >"$tmp/rounds" # round what before after load1 busy

# Per workload, combo and metric: median, p95, n (and busy runs).
awk 'NR == FNR { busy[$1] = $6; next }
/^workload=(big|small|list|conc|start) / {
	delete v
	for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	for (k in v) if (k != "workload" && k != "combo" && k != "round" && v[k] ~ /^[0-9.e+-]+$/)
		print v["workload"], v["combo"], k, v[k] + 0
	print v["workload"], v["combo"], "busy", busy[v["round"]] + 0
}' "$tmp/rounds" "$raw" | sort -k1,1 -k2,2 -k3,3 -k4,4g |
	awk 'function flush() { if (n) { m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		i = int(n * 0.95 + 0.5); if (i < 1) i = 1; s = 0; for (j = 1; j <= n; j++) s += a[j]
		printf "%s %s %s %g %g %d %g\n", pw, pc, pk, m, a[i], n, s } n = 0 }
	{ if ($1 != pw || $2 != pc || $3 != pk) { flush(); pw = $1; pc = $2; pk = $3 } a[++n] = $4 }
	END { flush() }' >"$tmp/stats" # workload combo metric median p95 n sum

declare -A M
while read -r w c k med p95 n sum; do M["$w $c $k"]="$med $p95 $n $sum"; done <"$tmp/stats"
med() { local x=${M["$1 $2 $3"]:-}; [ -n "$x" ] && echo "${x%% *}" || echo ""; }
p95() { local x=${M["$1 $2 $3"]:-}; [ -n "$x" ] && awk '{print $2}' <<<"$x" || echo ""; }
sum() { local x=${M["$1 $2 $3"]:-}; [ -n "$x" ] && awk '{print $4}' <<<"$x" || echo 0; }
f() { [ -n "$2" ] && printf "%.${1}f" "$2" || echo "–"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}' || echo "–"; }
mib() { [ -n "$1" ] && awk -v a="$1" 'BEGIN {printf "%.1f", a / 1024}' || echo "–"; }

combos=() tlsname=()
declare -A tls
while read -r line; do
	c=$(kv combo "$line")
	combos+=("$c")
	tls[$c]=$(kv tls "$line" | tr '/' ' ')
done < <(grep '^workload=tls ' "$raw")

declare -A lab=([plain]="plain rsync daemon, TCP (floor)" [ssh]="rsync over ssh" [stunnel]="stunnel, exec rsync --daemon"
	[nginx]="nginx stream ssl + PROXY → rsync daemon" [shim-sa]="**shim, socket-activated**"
	[shim-sa-unix]="shim, socket-activated, --pair unix" [shim-listen]="**shim --listen**"
	[rsync]="rsync" [openssl]="rsync-ssl (openssl)" [stunnel-c]="rsync-ssl (stunnel)" [ours]="**rsync-ssl-shim rsync**")
server_of() { echo "${1%%:*}"; }
client_of() { local c=${1#*:}; [ "$c" = stunnel ] && echo stunnel-c || echo "$c"; }
is_ours() { [[ $1 == shim-sa:ours || $1 == shim-listen:ours || $1 == shim-sa-unix:ours ]]; }

gib=$(awk -v m="$S_big_mib" 'BEGIN {print m / 1024}')
fb=$(med big plain:rsync wall_s)
fs=$(med small plain:rsync wall_s)
fl=$(med list plain:rsync ms)
flp=$(p95 list plain:rsync ms)
fc=$(med conc plain:rsync wall_s)
nbusy=$(awk '$6 == 1' "$tmp/rounds" | wc -l)
nrounds=$(wc -l <"$tmp/rounds")
load_end=$(meta "load at end")
calib_min=$(awk 'NR == 1 || $3 < m {m = $3} $4 < m {m = $4} END {print m}' "$tmp/rounds")
calib_max=$(awk '$3 > m {m = $3} $4 > m {m = $4} END {print m}' "$tmp/rounds")
load_max=$(awk '$5 > m {m = $5} END {print m}' "$tmp/rounds")

big_label="$(awk -v m="$S_big_mib" 'BEGIN {print (m >= 1024) ? m / 1024 " GiB" : m " MiB"}')"
small_label="$(printf "%'d" "$S_small_n" 2>/dev/null || echo "$S_small_n") files"

# ---------------------------------------------------------------- chart data
: >"$tmp/chart.dat"
for c in "${combos[@]}"; do
	s=$(server_of "$c") k=$(client_of "$c")
	case $k in rsync | ssh) short=$s ;; stunnel-c) short="$s / rsync-ssl stunnel" ;; openssl) short="$s / rsync-ssl openssl" ;; ours) short="$s / shim client" ;; esac
	d() { local x; x=$("$@"); echo "${x:--}"; }
	printf '"%s" %s %s %s %s %s %d\n' "$short" "$(d med big "$c" wall_s)" "$(d med small "$c" wall_s)" \
		"$(d med list "$c" ms)" "$(d p95 list "$c" ms)" "$(d med conc "$c" wall_s)" "$(is_ours "$c" && echo 1 || echo 0)" >>"$tmp/chart.dat"
done
gnuplot -e "data='$tmp/chart.dat'; out='$out/benchmarks.png'; big='$big_label'; small='$small_label'; conc='$S_conc'" "$here/plot.gp"

# ---------------------------------------------------------------- markdown
{
	echo "# Benchmarks"
	echo
	echo "Every way to serve rsync's daemon protocol encrypted, measured side by side in one run of"
	echo "\`make bench\` (tests/bench/bench.sh) on loopback, with data on tmpfs, against the plain rsync"
	echo "daemon as the floor. Compare ratios to the floor; absolute times move with the machine."
	echo
	echo "- date: $(meta date)"
	echo "- machine: $(meta machine)"
	echo "- versions: rsync $(meta rsync), OpenSSL $(meta openssl), stunnel $(meta stunnel), nginx $(meta nginx),"
	echo "  OpenSSH $(meta openssh), rsync-ssl-shim $(meta rsync-ssl-shim)"
	echo "- workloads: one $big_label file of random bytes; $small_label of 1–8 KiB ($(awk -v b="$S_small_bytes" 'BEGIN {printf "%.0f", b / 1048576}') MiB);"
	echo "  $S_lists sequential module listings (\`rsync HOST::\`) per setup; $S_conc listings started at once."
	echo "  Transfers pull from the server into an empty directory with \`rsync -a\`."
	echo "  Medians of $S_reps runs ($S_conc_reps for the simultaneous listings); setups interleaved, order rotated each round."
	if [ "$nbusy" -gt 0 ] || awk -v l="$load_max" 'BEGIN {exit !(l > 2.5)}'; then
		echo "- **noise: some rounds ran on a busy machine** (1-minute load up to $load_max on"
		echo "  $(meta machine | sed 's/.*, \([0-9]*\) CPUs.*/\1/') CPUs; a fixed CPU job took ${calib_min}–${calib_max} ms; $nbusy of $nrounds rounds"
		echo "  flagged busy, where it took over 1.25× its best; the load includes this benchmark's own 64-at-once"
		echo "  rounds and other work on the machine). Ratios within the run still compare; absolute times"
		echo "  and the tighter targets want a quiet machine."
	else
		echo "- noise: no round flagged busy (a fixed CPU job took ${calib_min}–${calib_max} ms, 1-minute load up to $load_max)."
	fi
	echo "- certificates: one ECDSA P-256 certificate for every TLS server; each pair negotiates its defaults."
	echo
	echo "## Results"
	echo
	echo "| server | client | negotiated | $big_label s | × floor | $small_label s | × floor | listing p50 ms | p95 ms | $S_conc at once s | failed |"
	echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for c in "${combos[@]}"; do
		s=$(server_of "$c") k=$(client_of "$c")
		b=$(med big "$c" wall_s) sm=$(med small "$c" wall_s) l=$(med list "$c" ms) lp=$(p95 list "$c" ms) cc=$(med conc "$c" wall_s)
		cf=$(sum conc "$c" failures)
		fail_b=$(awk -v x="${M["big $c ok"]:-0 0 0 0}" 'BEGIN {split(x, a, " "); print a[3] - a[4]}')
		printf '| %s | %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s |\n' "${lab[$s]}" "${lab[$k]}" "${tls[$c]:-–}" \
			"$(f 2 "$b")" "$([ "$fail_b" -gt 0 ] && echo " ($fail_b failed)")" "$(ratio "$b" "$fb")" \
			"$(f 2 "$sm")" "$(ratio "$sm" "$fs")" "$(f 1 "$l")" "$(f 1 "$lp")" "$(f 2 "$cc")" \
			"$([ -n "$cc" ] && printf %d "$cf" || echo –)"
	done
	echo
	echo "![wall time per setup](benchmarks.png)"
	echo
	echo "## CPU and memory in the $big_label run"
	echo
	echo "CPU seconds (user + system) and peak RSS of every process, each program run under"
	echo "\`/usr/bin/time\`. \"front\" is the TLS or ssh end on the server (stunnel, nginx master and workers,"
	echo "sshd and its per-login processes, the shim); \"helper\" is the client's --rsh program (openssl s_client, stunnel,"
	echo "\`rsync-ssl-shim connect\`, ssh). A peak RSS marked ≤ may be that of a child in the same tree (the"
	echo "front's rsync, the client rsync's helper); the other column is exact."
	echo
	echo "| server | client | server CPU s front + rsync | server CPU s/GiB | server RSS MiB front / rsync | client CPU s rsync + helper | client RSS MiB rsync / helper |"
	echo "|---|---|---:|---:|---:|---:|---:|"
	for c in "${combos[@]}"; do
		s=$(server_of "$c") k=$(client_of "$c")
		fcpu=$(med big "$c" srv_front_cpu) rcpu=$(med big "$c" srv_rsync_cpu)
		tot=$(awk -v a="${fcpu:-0}" -v b="${rcpu:-0}" 'BEGIN {print a + b}')
		ex=$(med big "$c" srv_front_rss_exact)
		printf '| %s | %s | %s + %s | %s | %s%s / %s | %s + %s | %s / %s |\n' "${lab[$s]}" "${lab[$k]}" \
			"$(f 2 "$fcpu")" "$(f 2 "$rcpu")" "$(awk -v t="$tot" -v g="$gib" 'BEGIN {printf "%.2f", t / g}')" \
			"$([ "$ex" = 0 ] && echo "≤")" "$(mib "$(med big "$c" srv_front_rss)")" "$(mib "$(med big "$c" srv_rsync_rss)")" \
			"$(f 2 "$(med big "$c" cli_rsync_cpu)")" "$(f 2 "$(med big "$c" cli_helper_cpu)")" \
			"$([ "$(med big "$c" cli_rsync_rss)" = "$(med big "$c" cli_helper_rss)" ] && echo "≤")$(mib "$(med big "$c" cli_rsync_rss)")" "$(mib "$(med big "$c" cli_helper_rss)")"
	done
	echo
	u=shim-sa-unix:ours t=shim-sa:ours
	echo "Socket pair to rsync, same run (shim socket-activated, shim client): AF_UNIX $(f 2 "$(med big $u wall_s)") s,"
	echo "$(f 2 "$(med big $u srv_front_cpu)") + $(f 2 "$(med big $u srv_rsync_cpu)") server CPU s; loopback TCP $(f 2 "$(med big $t wall_s)") s,"
	echo "$(f 2 "$(med big $t srv_front_cpu)") + $(f 2 "$(med big $t srv_rsync_cpu)") server CPU s."
	echo
	echo "## Process starts"
	echo
	echo "Every connection starts programs: the plain floor forks its daemon and runs one rsync client; the"
	echo "shim adds one shim start on each side and an exec of rsync instead of a fork. Median wall time to start"
	echo "and exit, same run: \`true\` $(f 1 "$(med start true ms)") ms, \`rsync-ssl-shim version\` $(f 1 "$(med start rsync-ssl-shim ms)") ms,"
	echo "\`rsync --version\` $(f 1 "$(med start rsync ms)") ms, \`openssl version\` $(f 1 "$(med start openssl ms)") ms, \`stunnel4 -version\` $(f 1 "$(med start stunnel4 ms)") ms."
	echo
	g0=$(grep '^workload=growth ' "$raw" | head -n1) g1=$(grep '^workload=growth ' "$raw" | tail -n1)
	echo "## One shim over many connections"
	echo
	echo "\`serve --listen\` after 20 warm-up listings: RSS $(mib "$(kv rss_kib "$g0")") MiB, $(kv threads "$g0") threads,"
	echo "$(kv fds "$g0") fds; after $S_seqconns more ($(kv failures "$g1") failed): RSS $(mib "$(kv rss_kib "$g1")") MiB,"
	echo "$(kv threads "$g1") threads, $(kv fds "$g1") fds (peak RSS over the whole run, $S_conc-at-once included: $(mib "$(kv hwm_kib "$g1")") MiB)."
} >"$out/benchmarks.md"

# ---------------------------------------------------------------- targets
ours=shim-sa:ours
ob=$(med big $ours wall_s) os=$(med small $ours wall_s) ol=$(med list $ours ms) olp=$(p95 list $ours ms) oc=$(med conc $ours wall_s)
best_other="" best_other_c=""
for c in "${combos[@]}"; do
	case $(server_of "$c") in plain | shim-*) continue ;; esac
	v=$(med big "$c" wall_s)
	[ -n "$v" ] || continue
	if [ -z "$best_other" ] || awk -v a="$v" -v b="$best_other" 'BEGIN {exit !(a < b)}'; then best_other=$v best_other_c=$c; fi
done
best_stock="" best_stock_c=""
for c in "${combos[@]}"; do
	case $(client_of "$c") in openssl | stunnel-c) ;; *) continue ;; esac
	v=$(med list "$c" ms)
	if [ -z "$best_stock" ] || awk -v a="$v" -v b="$best_stock" 'BEGIN {exit !(a < b)}'; then best_stock=$v best_stock_c=$c; fi
done
srv_cpu() { awk -v a="$(med big "$1" srv_front_cpu)" -v b="$(med big "$1" srv_rsync_cpu)" -v g="$gib" 'BEGIN {printf "%.2f", (a + b) / g}'; }
shim_rss=$(med big $ours srv_front_rss)
g0=$(grep '^workload=growth ' "$raw" | head -n1) g1=$(grep '^workload=growth ' "$raw" | tail -n1)
cf=$(sum conc $ours failures)
verdict() { awk "BEGIN {exit !($1)}" && echo "met" || echo "**missed**"; }
{
	echo
	echo "## Targets (shim socket-activated + shim client)"
	echo
	echo "| target | measured | |"
	echo "|---|---|---|"
	echo "| $big_label wall ≤ 1.3× plain | $(f 2 "$ob") s = $(ratio "$ob" "$fb")× | $(verdict "$ob <= 1.3 * $fb") |"
	echo "| $big_label faster than every other encrypted setup | best other: $(combo="$best_other_c"; echo "${lab[$(server_of "$combo")]} ← ${lab[$(client_of "$combo")]}" | tr -d '*') $(f 2 "$best_other") s ($(ratio "$ob" "$best_other")×) | $(verdict "$ob < $best_other") |"
	echo "| server CPU per GiB ≤ nginx + rsync daemon's | $(srv_cpu $ours) vs $(srv_cpu nginx:ours) s/GiB | $(verdict "$(srv_cpu $ours) <= $(srv_cpu nginx:ours)") |"
	echo "| $small_label ≤ 1.10× plain | $(f 2 "$os") s = $(ratio "$os" "$fs")× | $(verdict "$os <= 1.10 * $fs") |"
	echo "| listing p50 ≤ plain + 3 ms | $(f 1 "$ol") ms = plain + $(awk -v a="$ol" -v b="$fl" 'BEGIN {printf "%.1f", a - b}') ms | $(verdict "$ol <= $fl + 3") |"
	echo "| listing p95 ≤ plain + 6 ms | $(f 1 "$olp") ms = plain + $(awk -v a="$olp" -v b="$flp" 'BEGIN {printf "%.1f", a - b}') ms | $(verdict "$olp <= $flp + 6") |"
	echo "| listing beats stock rsync-ssl against any server | $(f 1 "$ol") ms vs best stock $(f 1 "$best_stock") ms ($(echo "${lab[$(server_of "$best_stock_c")]}" | tr -d '*'), $(echo "${lab[$(client_of "$best_stock_c")]}")) | $(verdict "$ol < $best_stock") |"
	echo "| $S_conc at once: no failure | $cf failed | $(verdict "$cf == 0") |"
	echo "| $S_conc at once: wall ≤ 2× plain | $(f 2 "$oc") s = $(ratio "$oc" "$fc")× | $(verdict "$oc <= 2 * $fc") |"
	echo "| shim RSS ≤ 12 MiB per connection | $(mib "$shim_rss") MiB$([ "$(med big $ours srv_front_rss_exact)" = 0 ] && echo " (≤: rsync's)") | $(verdict "$shim_rss <= 12 * 1024") |"
	echo "| no growth over $S_seqconns sequential connections | RSS $(mib "$(kv rss_kib "$g0")") → $(mib "$(kv rss_kib "$g1")") MiB, threads $(kv threads "$g0") → $(kv threads "$g1"), fds $(kv fds "$g0") → $(kv fds "$g1") | $(verdict "$(kv fds "$g1") <= $(kv fds "$g0") && $(kv threads "$g1") <= $(kv threads "$g0") + 2 && $(kv rss_kib "$g1") <= $(kv rss_kib "$g0") * 1.2 + 1024") |"
} >>"$out/benchmarks.md"

if [ -f "$here/benchmarks-notes.md" ]; then
	{ echo; cat "$here/benchmarks-notes.md"; } >>"$out/benchmarks.md"
fi
{
	echo
	echo "Raw numbers, one line per run: [benchmarks.raw](benchmarks.raw)."
} >>"$out/benchmarks.md"
