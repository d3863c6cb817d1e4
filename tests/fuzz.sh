#!/bin/sh
# Run every go test -fuzz target of the packages for a while each and print
# how many executions each ran without a finding.
#   tests/fuzz.sh [SECONDS]        (default 5; make stress passes more)
# A finding fails the script; go test leaves the input under the package's
# testdata/fuzz/ to be committed with the fix. With FUZZ_REPORT=FILE the
# per-target counts are also written to FILE (the robustness table reads it).
set -eu
secs=${1:-5}
cd "$(dirname "$0")/.."
GO=${GO:-go}
report=${FUZZ_REPORT:-}
[ -n "$report" ] && : > "$report"
status=0
printf '%-56s %14s\n' target executions
# Every package of the module but the integration tests, as go list names
# them, so a package added later is fuzzed without editing this list.
mod=$($GO list -m)
for pkg in $($GO list ./... | grep -v "/tests$" | sed "s|^$mod|.|"); do
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		# Go's fuzzing coordinator (internal/fuzz, go1.26) can fail a target
		# with a bare "context deadline exceeded" when -fuzztime runs out:
		# its stop() compares the error with the workers' context before
		# that context is cancelled, a race that a loaded machine hits. A
		# finding always writes its input to testdata/fuzz/; a failure that
		# wrote none is run once more, and fails if it recurs.
		corpus="$pkg/testdata/fuzz/$target"
		for try in 1 2; do
			before=$(ls "$corpus" 2>/dev/null | wc -l)
			rc=0
			out=$($GO test -run '^$' -fuzz "^${target}\$" -fuzztime "${secs}s" "$pkg" 2>&1) || rc=$?
			[ "$rc" = 0 ] && break
			after=$(ls "$corpus" 2>/dev/null | wc -l)
			if [ "$try" = 1 ] && [ "$after" = "$before" ] && printf '%s\n' "$out" | grep -q '^    context deadline exceeded$'; then
				echo "fuzz: $pkg $target: context deadline exceeded, no failing input written; running it again" >&2
				continue
			fi
			break
		done
		if [ "$rc" != 0 ]; then
			echo "$out"
			echo "FAIL: $pkg $target found a failing input" >&2
			status=1
			continue
		fi
		execs=$(printf '%s\n' "$out" | sed -n 's/.*execs: \([0-9]*\).*/\1/p' | tail -n 1)
		name=${pkg#./}
		[ "$name" = . ] && name=main
		printf '%-56s %14s\n' "$name.$target" "${execs:-?}"
		[ -n "$report" ] && printf '%s %s %s\n' "$name.$target" "${execs:-?}" "$secs" >> "$report"
	done
done
exit $status
