#!/usr/bin/env bash
# replay publish against the real nats-server of scripts/with-services
# (NATS_URL): every record of the chosen ticks is published and acked, none
# is taken for a duplicate (replays get their own message ids), twice.
#   test_publish.sh MICROCLOUD SOURCE_DIR
set -uo pipefail
bin=$1
src=$2
golden="$src/traces/normal.mctrace"
if [ -z "${NATS_URL:-}" ]; then
  echo "NATS_URL is not set: run under scripts/with-services"
  exit 1
fi
want=$("$bin" replay inspect "$golden" --ticks 1:40 | wc -l)
pfx="t$$_"
fails=0
for i in 1 2; do
  out=$("$bin" replay publish "$golden" --speed 0 --ticks 1:40 --subject-prefix "$pfx." \
        --stream-prefix "$pfx" --json 2>/dev/null | tail -1)
  echo "run $i: $out (want $want)"
  if ! echo "$out" | jq -e --argjson w "$want" \
      '.ok and .published == $w and .acked == $w and .duplicates == 0 and .failures == 0 and .ticks == 40' > /dev/null; then
    echo "FAIL publish run $i"
    fails=$((fails + 1))
  fi
done
[ "$fails" -eq 0 ]
