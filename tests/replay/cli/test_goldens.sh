#!/usr/bin/env bash
# Every golden trace (traces/goldens.txt) verifies (exit 0, every component),
# and `microcloud sim` with its scenario, seed, ticks and approval mode
# reproduces it: `replay diff` exits 0 and, with the golden's start time, the
# files are byte-identical except for the header's build id and compiler.
#   test_goldens.sh MICROCLOUD SOURCE_DIR
set -euo pipefail
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MC_SCENARIO_DIR="$src/engine/scenarios"
fail=0
n=0
while read -r name scenario seed ticks approval; do
  case "$name" in ''|'#'*) continue ;; esac
  n=$((n + 1))
  golden="$src/traces/$name.mctrace"
  size=$(stat -c %s "$golden")
  if [ "$size" -gt $((2 * 1024 * 1024)) ]; then
    echo "FAIL $name: $size bytes, over 2 MiB"; fail=1
  fi
  if ! "$bin" replay verify "$golden" --component all --quiet > "$tmp/verify.txt"; then
    echo "FAIL $name: replay verify"; cat "$tmp/verify.txt"; fail=1
  else
    echo "ok   $name: verify identical"
  fi
  "$bin" sim --scenario "$scenario" --seed "$seed" --ticks "$ticks" --approval "$approval" \
    --start-time 1767225600000 --trace "$tmp/$name.mctrace" --quiet > /dev/null
  if ! "$bin" replay diff "$golden" "$tmp/$name.mctrace" > "$tmp/diff.txt"; then
    echo "FAIL $name: sim does not reproduce the golden"; cat "$tmp/diff.txt"; fail=1
  else
    echo "ok   $name: sim reproduces it"
  fi
done < "$src/traces/goldens.txt"
[ "$n" -ge 3 ] || { echo "FAIL: expected at least 3 goldens, found $n"; fail=1; }
exit $fail
