#!/usr/bin/env bash
# microcloud end to end: determinism, divergence, damage, output formats,
# scripted human decisions, --help and usage errors.
#   test_cli.sh MICROCLOUD SOURCE_DIR
set -uo pipefail
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export MC_SCENARIO_DIR="$src/engine/scenarios"
golden="$src/traces/cascade_failure.mctrace"
fails=0
check() { # check NAME WANT_RC GOT_RC
  if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: exit $3, want $2"; fails=$((fails + 1)); fi
}
expect() { # expect NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@" > /dev/null; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}

# The same sim twice: the same run hash, and with the same start time the
# same bytes.
for i in 1 2; do
  "$bin" sim --scenario cascade_failure --seed 11 --ticks 120 --start-time 1000 \
    --trace "$tmp/run$i.mctrace" --json > "$tmp/run$i.json"
  check "sim run $i" 0 $?
done
h1=$(jq -r .runHash "$tmp/run1.json"); h2=$(jq -r .runHash "$tmp/run2.json")
expect "same sim, same run hash ($h1)" test -n "$h1" -a "$h1" = "$h2"
expect "same sim, same bytes" cmp -s "$tmp/run1.mctrace" "$tmp/run2.mctrace"
expect "sim prints seed, scenario, build, reproduce" \
  jq -e '.seed == 11 and .scenario == "cascade_failure" and (.build | length > 0) and (.reproduce | test("--seed 11"))' "$tmp/run1.json"
# Another seed is another run.
"$bin" sim --scenario cascade_failure --seed 12 --ticks 120 --json --quiet > "$tmp/run3.json"
expect "another seed, another run hash" test "$(jq -r .runHash "$tmp/run3.json")" != "$h1"
# The reproduce command reproduces.
repro=$(jq -r .reproduce "$tmp/run1.json" | sed "s|^microcloud|$bin|; s|$tmp/run1.mctrace|$tmp/repro.mctrace|")
eval "$repro --json" > "$tmp/repro.json"
expect "the reproduce command gives the same run" test "$(jq -r .runHash "$tmp/repro.json")" = "$h1"
expect "the reproduce command gives the same bytes" cmp -s "$tmp/run1.mctrace" "$tmp/repro.mctrace"
# The trace exists already: refused without --force.
"$bin" sim --scenario cascade_failure --ticks 5 --trace "$tmp/run1.mctrace" > /dev/null 2>&1
check "sim refuses to overwrite a trace" 64 $?

# A changed detection rule: verify of the golden diverges (exit 1), names the
# detector and tick; replay diff names the first changed action.
"$bin" replay verify "$golden" --override detector.error_rate_critical=20 --json > "$tmp/ovr.json"
check "verify with a changed rule" 1 $?
expect "verify names the diverging detector message" \
  jq -e '.verdict == "diverged" and .divergence.component == "detector" and .divergence.subject == "ops.incidents" and .divergence.tick > 0 and (.divergence.fields | length > 0) and .configDiffers' "$tmp/ovr.json"
expect "verify's reproduce command carries the override" \
  jq -e '.reproduce | test("--component detector") and test("error_rate_critical=20")' "$tmp/ovr.json"
"$bin" sim --scenario cascade_failure --seed 42 --ticks 300 --override detector.error_rate_critical=20 \
  --trace "$tmp/ovr.mctrace" --quiet > /dev/null
"$bin" replay diff "$golden" "$tmp/ovr.mctrace" --json > "$tmp/diff.json"
check "diff of the golden and a changed-rule run" 1 $?
expect "diff names the first changed action" \
  jq -e '.decisions.firstChangedAction.type == "RESTART_SERVICE" and .decisions.firstChangedAction.target == "checkout" and .decisions.firstChangedAction.proposedAtTick == 34' "$tmp/diff.json"
expect "diff names the first diverging digest (detector)" \
  jq -e '.firstDigestDivergence.component == "detector"' "$tmp/diff.json"
"$bin" replay diff "$golden" "$tmp/ovr.mctrace" > "$tmp/diff.txt"
expect "diff text has the field diff and a reproduce line" \
  grep -q 'ruleName: A "error_rate_critical", B "error_rate_high"' "$tmp/diff.txt"
# A decision rule change shows in the agent alone.
"$bin" replay verify "$golden" --component agent --override decider.restart_on_critical_errors.min_open_ticks=5 --json > "$tmp/agent.json"
check "verify --component agent with a changed decision rule" 1 $?
expect "the agent's first differing action is named" \
  jq -e '.divergence.component == "agent" and .divergence.subject == "ops.actions"' "$tmp/agent.json"

# Damage: a flipped byte in the middle, a torn tail, not a trace at all.
cp "$golden" "$tmp/flip.mctrace"
size=$(stat -c %s "$tmp/flip.mctrace")
printf '\xff' | dd of="$tmp/flip.mctrace" bs=1 seek=$((size / 2)) conv=notrunc status=none
"$bin" replay verify "$tmp/flip.mctrace" > "$tmp/flip.txt"
check "verify of a damaged trace" 2 $?
expect "damage names frame and offset" grep -q 'byte offset' "$tmp/flip.txt"
head -c $((size - 100)) "$golden" > "$tmp/torn.mctrace"
"$bin" replay verify "$tmp/torn.mctrace" > /dev/null
check "verify of a torn trace" 2 $?
echo "not a trace" > "$tmp/junk.mctrace"
"$bin" replay verify "$tmp/junk.mctrace" > /dev/null
check "verify of a non-trace" 2 $?
"$bin" replay diff "$golden" "$tmp/flip.mctrace" > /dev/null 2>&1
check "diff with a damaged trace" 2 $?
"$bin" replay inspect "$tmp/flip.mctrace" > /dev/null 2>&1
check "inspect of a damaged trace" 2 $?

# inspect: JSON lines, filters, summary.
"$bin" replay inspect "$golden" --checkpoints --header > "$tmp/all.jsonl"
check "inspect" 0 $?
expect "inspect output parses as JSON lines" jq -e -s 'length > 300' "$tmp/all.jsonl"
lines=$(wc -l < "$tmp/all.jsonl")
records=$(jq -s '[.[] | select(.subject)] | length' "$tmp/all.jsonl")
expect "inspect prints every record ($records of $lines lines)" test "$records" -gt 1000
"$bin" replay inspect "$golden" --ticks 30:60 --subject 'ops.*' > "$tmp/ops.jsonl"
expect "inspect --ticks --subject filters" \
  jq -e -s 'length > 0 and all(.[]; (.subject | startswith("ops.")) and .tick >= 30 and .tick <= 60)' "$tmp/ops.jsonl"
expect "inspect decodes payloads by subject" \
  jq -e -s 'any(.[]; .subject == "ops.actions" and .payload.actionType == "ACTION_TYPE_RESTART_SERVICE")' "$tmp/ops.jsonl"
"$bin" replay inspect "$golden" --summary --json > "$tmp/sum.json"
expect "inspect --summary counts per subject and tick range" \
  jq -e '.bySubject["sim.watermark"].records == 300 and (.byTickRange | length) == 4' "$tmp/sum.json"

# Scripted human decisions in manual mode; verify re-feeds them.
cat > "$tmp/decisions.txt" <<'DEC'
# tick action-match verdict reason
36 RESTART_SERVICE:database approve
36 :checkout reject not now
40 * approve
DEC
"$bin" sim --scenario cascade_failure --ticks 150 --approval manual --decisions "$tmp/decisions.txt" \
  --trace "$tmp/manual.mctrace" --json > "$tmp/manual.json"
check "sim with scripted decisions" 0 $?
expect "scripted decisions were applied" \
  jq -e '[.decisions[] | .applied] | add > 0' "$tmp/manual.json"
expect "human decisions are recorded" \
  sh -c "'$bin' replay inspect '$tmp/manual.mctrace' --subject ops.decisions | jq -e -s 'any(.[]; .payload.source == \"DECISION_SOURCE_HUMAN\" and .payload.actor == \"script\")' > /dev/null"
"$bin" replay verify "$tmp/manual.mctrace" --component orchestrator --quiet > "$tmp/manual-verify.txt"
check "verify of a run with human decisions (orchestrator)" 0 $?
"$bin" replay verify "$tmp/manual.mctrace" --quiet > /dev/null
check "verify of a run with human decisions (all)" 0 $?
printf '36 RESTART_SERVICE:database maybe\n' > "$tmp/bad.txt"
"$bin" sim --scenario cascade_failure --ticks 5 --approval manual --decisions "$tmp/bad.txt" > "$tmp/bad.out" 2>&1
check "a bad decisions file" 64 $?
expect "the bad line is named" grep -q 'bad.txt:1:' "$tmp/bad.out"

# Signed traces.
key=$(printf '%064x' 7)
printf '%s\n' "$key" > "$tmp/secret.key"
TRACE_SIGNING_KEY="$tmp/secret.key" "$bin" sim --scenario normal --ticks 20 --trace "$tmp/signed.mctrace" --json > "$tmp/signed.json"
expect "TRACE_SIGNING_KEY signs" jq -e '.trace.signed' "$tmp/signed.json"
"$bin" replay verify "$tmp/signed.mctrace" --json --quiet > "$tmp/sv.json"
expect "a signed trace verifies" jq -e '.verdict == "identical" and (.signature | test("signed"))' "$tmp/sv.json"

# Scorecard in JSON.
expect "the scorecard has MTTD, MTTR, SLO damage, actions and the final digest" \
  jq -e '.scorecard.faults[0].mttdTicks >= 0 and (.scorecard.sloDamage.serviceTicks >= 0) and .scorecard.actions.proposed >= 0 and (.scorecard.finalStateDigest.combined | length == 64)' "$tmp/run1.json"

# --help everywhere, usage errors.
for c in "" "sim" "replay verify" "replay diff" "replay inspect" "replay publish"; do
  # shellcheck disable=SC2086
  "$bin" $c --help > "$tmp/help.txt"
  check "microcloud $c --help" 0 $?
done
"$bin" sim > /dev/null 2>&1; check "sim without --scenario" 64 $?
"$bin" replay verify "$golden" --component nope > /dev/null 2>&1; check "verify --component nope" 64 $?
"$bin" bogus > /dev/null 2>&1; check "unknown command" 64 $?
"$bin" sim --scenario no_such_scenario --ticks 1 > /dev/null 2>&1; check "unknown scenario" 64 $?

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
