#!/usr/bin/env bash
# Determinism across builds: `microcloud sim` gives the same run hash (every
# record and checkpoint) in each build given (Debug gcc, ASan gcc, clang).
# Builds that are missing are skipped with a message.
#   test_cross_build.sh MICROCLOUD [OTHER_MICROCLOUD ...]
set -euo pipefail
ref=$1
shift
args=(sim --scenario cascade_failure --seed 7 --ticks 200 --approval auto --quiet)
want=$("$ref" "${args[@]}" | sed -n 's/^run hash: //p')
[ -n "$want" ] || { echo "FAIL: no run hash from $ref"; exit 1; }
echo "reference $ref: $want"
compared=0
fail=0
for b in "$@"; do
  if [ ! -x "$b" ]; then
    echo "skip: $b not built"
    continue
  fi
  got=$("$b" "${args[@]}" | sed -n 's/^run hash: //p')
  if [ "$got" = "$want" ]; then
    echo "ok   $b: $got"
  else
    echo "FAIL $b: $got"
    fail=1
  fi
  compared=$((compared + 1))
done
echo "compared $compared other build(s)"
exit $fail
