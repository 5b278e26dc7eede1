#!/usr/bin/env bash
# Acceptance 1: the live stack heals cascade_failure on its own.
#
# The four services run cascade_failure (seed 42) in lockstep at full speed
# with APPROVAL_MODE=auto. Expected, from the offline closed loop
# (`microcloud sim --scenario cascade_failure --seed 42 --ticks 300
# --approval auto --json`), which runs the same cores:
#   - the database's error burst (tick 30) is detected on the database itself
#     (error_rate_* at tick 33; checkout already at 32);
#   - the agent proposes RESTART_SERVICE on the database (tick 36) and on the
#     services it drags down, then escalates (REBALANCE_TRAFFIC, SCALE_UP);
#     16 proposals, all approved by the policy and executed;
#   - every incident resolves: the errors by tick 69 once the database is
#     restarted, the latency ones once the 120-tick dependency_latency fault
#     (ticks 30..149) is over and the detector's windows have cleared — the
#     last at tick 176.
# BUDGET: every incident opened during the run must be resolved at or before
# tick 200 (the offline 176 plus 24 ticks of margin). The engine pauses
# itself at tick BUDGET (STOP_AFTER_TICKS), a tick boundary, so the live
# trace can be compared with the offline run of BUDGET ticks.
#
# Then: the actions table and GetActionHistory (HTTP) show the database's
# restart PENDING -> APPROVED -> EXECUTED; in lockstep the live proposals are
# the offline ones (tick, type, target); the trace the engine recorded passes
# `microcloud replay verify --component engine` (`--component all` is run and
# its verdict printed, not asserted); the metrics table holds every sample the
# engine published exactly once.
#
#   test_cascade_auto.sh BUILD_DIR        (under scripts/with-services)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
acc_init cascade_auto "$1"
BUDGET=200

export SCENARIO=cascade_failure SEED=42 SIM_MODE=lockstep SPEED=max APPROVAL_MODE=auto
export STOP_AFTER_TICKS=$BUDGET

# The offline reference of the same run (pure cores, no services).
"$ACC_MC" sim --scenario cascade_failure --seed 42 --ticks $BUDGET --approval auto --json \
  --trace "$ACC_WORK/offline.mctrace" >"$ACC_WORK/offline.json" ||
  acc_die "microcloud sim (offline reference) failed"
jq -e '.scorecard.incidents.opened > 0 and .scorecard.incidents.opened == .scorecard.incidents.resolved' \
  "$ACC_WORK/offline.json" >/dev/null ||
  acc_die "the offline reference does not resolve every incident within $BUDGET ticks (budget out of date?)"
"$ACC_MC" replay inspect "$ACC_WORK/offline.mctrace" --subject ops.actions 2>/dev/null |
  jq -r '[.payload.proposedAtTick, .payload.actionType, .payload.targetId] | @tsv' >"$ACC_WORK/offline-actions.txt"

acc_start
last=$(acc_wait_stopped $BUDGET 120) || acc_die "the run did not stop at tick $BUDGET within 120 s (at $last)"
acc_log "the engine stopped at tick $last"
# The trace holds the tick once the orchestrator's watermark for it is in.
acc_wait_trace_tick "$last" 30 || acc_fail "tick $last did not reach the trace within 30 s"
acc_wait_ingest "$last" 60 || acc_fail "the metrics table did not reach tick $last within 60 s"

# --- detection, proposal, approval, execution (actions table) ---
db_inc=$(acc_sql "select min(opened_at_tick) from incidents where target_id = 'database' and rule_name like 'error_rate%'")
acc_check "an error-rate incident opened on the root cause, the database (tick ${db_inc:-none})" \
  test -n "$db_inc"
[ -n "$db_inc" ] && acc_check "the database incident opened within 10 ticks of the fault (tick 30)" \
  test "$db_inc" -le 40
restart=$(acc_sql "select id, status, decided_by, proposed_at_tick from actions where target_id = 'database' and action_type = 1 order by proposed_at_tick limit 1")
IFS='|' read -r restart_id restart_status restart_by restart_tick <<<"$restart"
acc_check "the agent proposed RESTART_SERVICE on the database" test -n "$restart_id"
acc_eq "the database restart is EXECUTED (status 4) in the actions table" 4 "${restart_status:-none}"
acc_eq "the database restart was approved by the auto policy" "policy:auto" "${restart_by:-none}"
not_done=$(acc_sql "select count(*) from actions where status <> 4")
acc_eq "every proposed action was executed (actions not EXECUTED)" 0 "$not_done"

# --- the same through the API, as the dashboard sees it ---
hist=$(acc_api GetActionHistory '{"targetId":"database","actionType":"ACTION_TYPE_RESTART_SERVICE"}')
path=$(printf '%s' "$hist" | jq -r --arg id "$restart_id" \
  '[.entries[] | select(.actionId == $id) | .toStatus] | join(">")' 2>/dev/null)
acc_eq "GetActionHistory: the database restart went through" \
  "ACTION_STATUS_PENDING>ACTION_STATUS_APPROVED>ACTION_STATUS_EXECUTED" "${path:-$hist}"
api_status=$(printf '%s' "$hist" | jq -r --arg id "$restart_id" '.actions[] | select(.id == $id) | .status' 2>/dev/null)
acc_eq "GetActionHistory: its current status" ACTION_STATUS_EXECUTED "${api_status:-none}"

# --- recovery within the budget ---
open=$(acc_sql "select count(*) from incidents where not resolved")
acc_eq "no incident left open at tick $last" 0 "$open"
late=$(acc_sql "select coalesce(string_agg(target_id || '/' || rule_name || '@' || coalesce(resolved_at_tick::text, 'open'), ', '), '') from incidents where resolved_at_tick is null or resolved_at_tick > $BUDGET")
acc_eq "every incident resolved by tick $BUDGET (late ones)" "" "$late"
n_inc=$(acc_sql "select count(*) from incidents")
acc_log "incidents: $n_inc; last resolved at tick $(acc_sql 'select max(resolved_at_tick) from incidents')"

# --- lockstep: the live proposals are the closed loop's ---
acc_sql "select proposed_at_tick, action_type, target_id from actions where proposed_at_tick <= $BUDGET order by proposed_at_tick, action_type, target_id" |
  tr '|' '\t' >"$ACC_WORK/live-actions.num"
# The offline list names the types; map them to their numbers.
sed -e 's/ACTION_TYPE_RESTART_SERVICE/1/; s/ACTION_TYPE_SCALE_UP/2/; s/ACTION_TYPE_SCALE_DOWN/3/' \
    -e 's/ACTION_TYPE_DRAIN_NODE/4/; s/ACTION_TYPE_REBALANCE_TRAFFIC/5/' "$ACC_WORK/offline-actions.txt" |
  sort -k1,1n -k2,2n -k3,3 >"$ACC_WORK/offline-actions.num"
if diff -q "$ACC_WORK/offline-actions.num" "$ACC_WORK/live-actions.num" >/dev/null; then
  acc_ok "the live proposals equal the offline closed loop's ($(wc -l <"$ACC_WORK/live-actions.num") actions)"
else
  acc_fail "the live proposals differ from the offline closed loop's (< offline, > live):"
  diff "$ACC_WORK/offline-actions.num" "$ACC_WORK/live-actions.num" | grep '^[<>]' | head -10 >&2
fi

# --- stop (the engine closes the trace), then the trace and the metrics ---
mc_stack_stop
trace=$(acc_trace) || acc_die "expected exactly one trace in TRACE_DIR"
"$ACC_MC" replay verify "$trace" --component engine >"$ACC_WORK/verify-engine.txt" 2>&1
rc=$?
acc_eq "replay verify --component engine of the live trace (exit status)" 0 "$rc"
[ "$rc" = 0 ] || grep -E '^(DIVERGED|  the|  engine|    \$)' "$ACC_WORK/verify-engine.txt" | head -6 >&2
"$ACC_MC" replay verify "$trace" --component all >"$ACC_WORK/verify-all.txt" 2>&1
acc_log "replay verify --component all (not asserted): exit $?, $(grep -E '^(verdict|DIVERGED)' "$ACC_WORK/verify-all.txt" | tr '\n' ' ')"

acc_trace_samples "$trace" >"$ACC_WORK/published.txt"
acc_eq "the trace holds every tick up to the pause" "$last" "$(tail -1 "$ACC_WORK/published.txt" | cut -d' ' -f1)"
acc_check_exactly_once "$ACC_WORK/published.txt"
acc_finish
