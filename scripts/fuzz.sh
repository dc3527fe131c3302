#!/bin/sh
# fuzz.sh runs go-test fuzz targets one after the other and reports each.
#
#   scripts/fuzz.sh FUZZTIME MINIMIZETIME pkg:FuzzName...
#
# Every target runs even when an earlier one fails. A target fails when it
# writes a new failing input under its testdata/fuzz (a real finding), or
# when go test fails for another reason (a build error, a crash of the
# harness). Go 1.26's fuzz coordinator sometimes ends a duration-bounded
# run with a bare "context deadline exceeded" although no input failed
# (golang/go#75804, fixed in 1.27): such a run, with no new failing input,
# is retried once, and a second flake is reported as a flake, not a
# failure. The exit status is 1 when any target failed.
set -u
fuzztime=$1
mintime=$2
shift 2

go=${GO:-go}
log=$(mktemp)
trap 'rm -f "$log" "$log.before" "$log.rc"' EXIT
summary=""
failed=0

# crashers lists the files under a target's testdata/fuzz directory.
crashers() {
	ls "$1" 2>/dev/null | sort
}

for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	dir=$pkg/testdata/fuzz/$fn
	result=""
	for attempt in 1 2; do
		echo "== $fn ($pkg) for $fuzztime (attempt $attempt)"
		crashers "$dir" >"$log.before"
		{
			$go test -run='^$' -fuzz="^$fn\$" -fuzztime="$fuzztime" \
				-fuzzminimizetime="$mintime" "$pkg" 2>&1
			echo $? >"$log.rc"
		} | tee "$log"
		rc=$(cat "$log.rc")
		new=$(crashers "$dir" | comm -13 "$log.before" -)
		if [ -n "$new" ] || grep -q 'Failing input written to' "$log"; then
			result="FAIL: new failing input in $dir: $(echo $new)"
			break
		fi
		if [ "$rc" -eq 0 ]; then
			result="ok"
			[ $attempt -eq 1 ] || result="ok (retried after a coordinator flake)"
			break
		fi
		if grep -q 'context deadline exceeded' "$log"; then
			result="flake: coordinator 'context deadline exceeded', no failing input"
			continue
		fi
		result="FAIL: go test exit status $rc"
		break
	done
	case $result in FAIL*) failed=1 ;; esac
	summary="$summary$(printf '%-22s %-18s %s' "$fn" "$pkg" "$result")
"
done

echo "== fuzz results ($fuzztime per target)"
printf '%s' "$summary"
exit $failed
