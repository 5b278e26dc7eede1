#!/usr/bin/env bash
# Acceptance 2: a person heals cascade_failure through the HTTP API.
#
# The four services run cascade_failure (seed 42) in lockstep with
# APPROVAL_MODE=manual. The test acts like an operator at the dashboard: it
# polls ListPendingActions and approves each pending action with
# ApproveAction and the bearer token, until the engine stops at the budget
# (STOP_AFTER_TICKS).
#
# SPEED=20 ticks/s: a person (here a 0.1 s poll) must see a proposal before
# it expires (ACTION_EXPIRY_TICKS=30 ticks, 1.5 s at this speed); at full
# speed a proposal would expire between two polls. 200 ticks take ~10 s.
#
# BUDGET 200 ticks, as in test_cascade_auto.sh: offline, with every proposal
# approved at once, the last incident resolves at tick 176 (the latency of
# the database's 120-tick dependency_latency fault, ticks 30..149); the
# approvals here come a few ticks after each proposal, which changes nothing
# for the latency incidents and leaves the error ones (resolved by tick 69
# offline) far inside the budget.
#
# Asserted: an approval without the token is refused and changes nothing;
# the database incident is detected; the database's RESTART_SERVICE is
# proposed, approved by our actor (not by a policy) and executed; every
# action we approved ends EXECUTED; nothing is approved by a policy; every
# incident resolves by the budget; the trace passes `microcloud replay
# verify --component engine` (`all` run and printed, not asserted); the
# metrics table holds every published sample exactly once.
#
#   test_cascade_manual.sh BUILD_DIR        (under scripts/with-services)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
acc_init cascade_manual "$1"
BUDGET=200
ACTOR=acceptance-operator

export SCENARIO=cascade_failure SEED=42 SIM_MODE=lockstep SPEED=20 APPROVAL_MODE=manual
export STOP_AFTER_TICKS=$BUDGET

acc_start

approved=0 too_late=0
denied_checked=0
: >"$ACC_WORK/approved.txt"
while :; do
  st=$(acc_state)
  tick=$(printf '%s' "$st" | jq -r '.tick // empty' 2>/dev/null)
  [ -n "$tick" ] && [ "$tick" -ge $BUDGET ] && [ "$(printf '%s' "$st" | jq -r '.running // false')" = false ] && break
  [ $SECONDS -lt $((ACC_T0 + 150)) ] || acc_die "the run did not reach tick $BUDGET within 150 s (at ${tick:-?}; state $(acc_state))"
  pending=$(acc_api ListPendingActions '{}' | jq -r '.actions[]? | [.id, .actionType, .targetId, .proposedAtTick] | @tsv' 2>/dev/null)
  while IFS=$'\t' read -r id type target ptick; do
    [ -n "$id" ] || continue
    if [ "$denied_checked" = 0 ]; then
      # A request without the token, then with a wrong one: both refused.
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -d "{\"actionId\":\"$id\",\"actor\":\"intruder\"}" "$ACC_ORCH/ops.v1.ActionService/ApproveAction")
      acc_eq "ApproveAction without a token is refused (HTTP status)" 401 "$code"
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -H 'Authorization: Bearer not-the-token' \
        -d "{\"actionId\":\"$id\",\"actor\":\"intruder\"}" "$ACC_ORCH/ops.v1.ActionService/ApproveAction")
      acc_eq "ApproveAction with a wrong token is refused (HTTP status)" 401 "$code"
      denied_checked=1
    fi
    resp=$(acc_api ApproveAction "{\"actionId\":\"$id\",\"actor\":\"$ACTOR\",\"reason\":\"looks right\"}" "$API_TOKEN")
    st=$(printf '%s' "$resp" | jq -r '.action.status // empty' 2>/dev/null)
    if [ "$st" = ACTION_STATUS_APPROVED ] || [ "$st" = ACTION_STATUS_EXECUTED ]; then
      approved=$((approved + 1))
      printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$type" "$target" "$ptick" "$tick" >>"$ACC_WORK/approved.txt"
      acc_log "approved $type on $target (proposed at $ptick, engine at $tick)"
    elif printf '%s' "$resp" | grep -Eq '"failed_precondition".*is (SUPERSEDED|EXPIRED)'; then
      # Between the list and the click the agent replaced the proposal (a
      # newer one on the same target) or it expired: a person sees the same
      # and approves the newer one on the next look.
      too_late=$((too_late + 1))
      acc_log "too late for $type on $target (proposed at $ptick, engine at $tick): $(printf '%s' "$resp" | jq -r .message)"
    else
      acc_fail "ApproveAction of pending $type on $target answered: $resp"
    fi
  done <<<"$pending"
  sleep 0.1
done
last=$tick
acc_log "the engine stopped at tick $last after $approved approvals ($too_late proposals replaced or expired before our click)"
acc_wait_trace_tick "$last" 30 || acc_fail "tick $last did not reach the trace within 30 s"
acc_wait_ingest "$last" 60 || acc_fail "the metrics table did not reach tick $last within 60 s"
acc_check "the intruder's attempts were tested on a pending action" test "$denied_checked" = 1

db_inc=$(acc_sql "select min(opened_at_tick) from incidents where target_id = 'database' and rule_name like 'error_rate%'")
acc_check "an error-rate incident opened on the database (tick ${db_inc:-none})" test -n "$db_inc"
n_restart=$(acc_sql "select count(*) from actions where target_id = 'database' and action_type = 1")
acc_check "the agent proposed RESTART_SERVICE on the database ($n_restart)" test "${n_restart:-0}" -gt 0
# The first one we approved (an earlier one may have been replaced before
# our click, see above).
restart=$(acc_sql "select id, status, decided_by from actions where target_id = 'database' and action_type = 1 and decided_by = '$ACTOR' order by proposed_at_tick limit 1")
IFS='|' read -r restart_id restart_status restart_by <<<"$restart"
acc_check "our operator approved a RESTART_SERVICE of the database" test -n "$restart_id"
acc_eq "the database restart we approved is EXECUTED (status 4)" 4 "${restart_status:-none}"
acc_check "the approval went through our API calls" grep -q "^$restart_id" "$ACC_WORK/approved.txt"
by_policy=$(acc_sql "select count(*) from actions where decided_by like 'policy%'")
acc_eq "no action approved by a policy in manual mode" 0 "$by_policy"
not_exec=$(acc_sql "select coalesce(string_agg(target_id || ':' || action_type || '=' || status, ', '), '') from actions where decided_by = '$ACTOR' and status <> 4")
acc_eq "every action we approved was executed (others)" "" "$not_exec"
n_ours=$(acc_sql "select count(*) from actions where decided_by = '$ACTOR'")
acc_eq "the actions table credits our operator with each approval" "$approved" "$n_ours"

hist=$(acc_api GetActionHistory "{\"targetId\":\"database\"}")
actor=$(printf '%s' "$hist" | jq -r --arg id "$restart_id" \
  '.entries[] | select(.actionId == $id and .toStatus == "ACTION_STATUS_APPROVED") | .actor' 2>/dev/null)
acc_eq "GetActionHistory: the database restart's approval names our operator" "$ACTOR" "${actor:-none}"

open=$(acc_sql "select count(*) from incidents where not resolved")
acc_eq "no incident left open at tick $last" 0 "$open"
late=$(acc_sql "select coalesce(string_agg(target_id || '/' || rule_name || '@' || coalesce(resolved_at_tick::text, 'open'), ', '), '') from incidents where resolved_at_tick is null or resolved_at_tick > $BUDGET")
acc_eq "every incident resolved by tick $BUDGET (late ones)" "" "$late"
acc_log "incidents: $(acc_sql 'select count(*) from incidents'); last resolved at tick $(acc_sql 'select max(resolved_at_tick) from incidents')"

mc_stack_stop
trace=$(acc_trace) || acc_die "expected exactly one trace in TRACE_DIR"
"$ACC_MC" replay verify "$trace" --component engine >"$ACC_WORK/verify-engine.txt" 2>&1
rc=$?
acc_eq "replay verify --component engine of the live trace (exit status)" 0 "$rc"
[ "$rc" = 0 ] || grep -E '^(DIVERGED|  the|  engine|    \$)' "$ACC_WORK/verify-engine.txt" | head -6 >&2
"$ACC_MC" replay verify "$trace" --component all >"$ACC_WORK/verify-all.txt" 2>&1
acc_log "replay verify --component all (not asserted): exit $?, $(grep -E '^(verdict|DIVERGED)' "$ACC_WORK/verify-all.txt" | tr '\n' ' ')"
acc_trace_samples "$trace" >"$ACC_WORK/published.txt"
acc_check_exactly_once "$ACC_WORK/published.txt"
acc_finish
