#!/usr/bin/env bash
# The lint must flag exactly the forbidden calls of fixtures/bad_core.c,
# each with its line, and nothing in comments, strings or longer names.
set -u
root=$1
out=$("$root/scripts/lint-determinism" "$root/tests/lint/fixtures/bad_core.c")
rc=$?
fail() { echo "lint self-test: $*"; echo "--- lint output:"; echo "$out"; exit 1; }
[ $rc -eq 1 ] || fail "expected exit status 1, got $rc"
expect=(
  "bad_core.c:10: time()"
  "bad_core.c:11: rand()"
  "bad_core.c:11: random()"
  "bad_core.c:12: getenv()"
  "bad_core.c:14: clock_gettime()"
  "bad_core.c:15: qsort()"
)
for e in "${expect[@]}"; do
  grep -qF "$e" <<< "$out" || fail "missing finding: $e"
done
n=$(grep -c "is not allowed" <<< "$out")
[ "$n" -eq ${#expect[@]} ] || fail "expected ${#expect[@]} findings, got $n"
# And a clean file passes.
clean=$(mktemp -d)
trap 'rm -rf "$clean"' EXIT
printf 'int f(int tick) { return tick + 1; }\n' > "$clean/ok.c"
"$root/scripts/lint-determinism" "$clean" >/dev/null || fail "a clean file was flagged"
echo "lint self-test: ok (${#expect[@]} findings as expected)"
