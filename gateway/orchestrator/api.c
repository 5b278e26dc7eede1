/* ActionService over Connect: the approval workflow's API.
 *
 * ListPendingActions reads the core (it is the authority on what is
 * pending); ApproveAction and RejectAction are inputs to the core, answered
 * once the transition is stored; GetActionHistory reads the database
 * (filters and keyset paging over every action ever stored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "ops/v1/action_service.pb-c.h"
#include "orch_internal.h"

#define API_PAGE_DEFAULT 100
#define API_PAGE_MAX 1000

enum { RPC_LIST = 0, RPC_APPROVE = 1, RPC_REJECT = 2, RPC_HISTORY = 3 };

static void on_list(mc_http_connect_call *call, const ProtobufCMessage *msg, void *ctx)
{
    mc_orch *o = ctx;
    mc_http_counter_inc(o->m_rpc[RPC_LIST]);
    const Ops__V1__ListPendingActionsRequest *r = (const void *)msg;
    if (!orch_read_auth_ok(o, mc_http_connect_call_request(call), "ListPendingActions")) {
        mc_http_connect_fail(call, MC_CONNECT_UNAUTHENTICATED, "bearer token required");
        return;
    }
    size_t max = r->page_size == 0 ? API_PAGE_DEFAULT
                 : r->page_size > API_PAGE_MAX ? API_PAGE_MAX
                                               : r->page_size;
    mc_approval_action *views = calloc(max, sizeof *views);
    Ops__V1__Action *msgs = calloc(max, sizeof *msgs);
    Ops__V1__Action **ptrs = calloc(max, sizeof *ptrs);
    if (views == NULL || msgs == NULL || ptrs == NULL) {
        free(views);
        free(msgs);
        free(ptrs);
        mc_http_connect_fail(call, MC_CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t n = 0;
    char next[MC_APPROVAL_CURSOR_MAX] = "";
    mc_error err = {0};
    mc_status st =
        mc_approval_list_pending(&o->core, r->page_token, views, max, &n, next, &err);
    if (st != MC_OK) {
        mc_http_connect_fail(call, st == MC_ERR_INVALID ? MC_CONNECT_INVALID_ARGUMENT
                                                        : mc_http_connect_code_from_status(st),
                             "page_token: %s", err.msg);
    } else {
        for (size_t i = 0; i < n; i++) {
            mc_approval_action_to_proto(&views[i], &msgs[i]);
            ptrs[i] = &msgs[i];
        }
        Ops__V1__ListPendingActionsResponse resp = OPS__V1__LIST_PENDING_ACTIONS_RESPONSE__INIT;
        resp.n_actions = n;
        resp.actions = ptrs;
        resp.next_page_token = next;
        mc_http_connect_respond(call, &resp.base);
    }
    free(views);
    free(msgs);
    free(ptrs);
}

/* Answers an approve/reject call once its transition is stored. */
static void decision_stored(orch_job *j)
{
    mc_http_connect_call *call = j->hook_ctx;
    Ops__V1__Action a;
    mc_approval_action_to_proto(&j->view, &a);
    if (j->approve) {
        Ops__V1__ApproveActionResponse resp = OPS__V1__APPROVE_ACTION_RESPONSE__INIT;
        resp.action = &a;
        mc_http_connect_respond(call, &resp.base);
    } else {
        Ops__V1__RejectActionResponse resp = OPS__V1__REJECT_ACTION_RESPONSE__INIT;
        resp.action = &a;
        mc_http_connect_respond(call, &resp.base);
    }
}

static void decide(mc_orch *o, mc_http_connect_call *call, const char *action_id, bool approve,
                   const char *actor, const char *reason)
{
    const char *what = approve ? "ApproveAction" : "RejectAction";
    if (!orch_auth_ok(o, mc_http_connect_call_request(call), what)) {
        mc_http_connect_fail(call, MC_CONNECT_UNAUTHENTICATED, "a valid bearer token is required");
        return;
    }
    if (action_id == NULL || action_id[0] == '\0') {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "action_id is required");
        return;
    }
    if (!approve && (reason == NULL || reason[0] == '\0')) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "reason is required to reject");
        return;
    }
    if (actor == NULL || actor[0] == '\0')
        actor = "api";
    mc_approval_action view;
    memset(&view, 0, sizeof view);
    mc_error err = {0};
    mc_status st = mc_approval_on_human_decision(&o->core, action_id, approve, actor,
                                                 reason ? reason : "", &o->outbox, &view, &err);
    switch (st) {
    case MC_OK:
        break;
    case MC_ERR_NOT_FOUND:
        mc_outbox_clear(&o->outbox);
        mc_http_connect_fail(call, MC_CONNECT_NOT_FOUND, "action %s not found", action_id);
        return;
    case MC_ERR_STATE:
        mc_outbox_clear(&o->outbox);
        mc_http_connect_fail(call, MC_CONNECT_FAILED_PRECONDITION,
                             "action %s is %s, not PENDING", action_id,
                             mc_approval_status_name(view.status));
        return;
    case MC_ERR_INVALID:
        mc_outbox_clear(&o->outbox);
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "%s", err.msg);
        return;
    default:
        mc_outbox_clear(&o->outbox);
        mc_http_connect_fail(call, mc_http_connect_code_from_status(st), "%s", err.msg);
        return;
    }
    MC_LOG_INFO(approve ? "action approved" : "action rejected", MC_LF_STR("action_id", action_id),
                MC_LF_STR("actor", actor), MC_LF_UINT("tick", view.updated_at_tick));
    /* The answer waits for the history row (a barrier job behind the
     * transition's); the publishes are handed to the bus before. */
    (void)orch_after_core(o, NULL, 0);
    orch_job *j = orch_job_new(o, ORCH_JOB_BARRIER);
    if (j == NULL) {
        mc_http_connect_fail(call, MC_CONNECT_INTERNAL, "decision made; out of memory answering");
        return;
    }
    j->approve = approve;
    j->view = view;
    snprintf(j->action_id, sizeof j->action_id, "%s", action_id);
    j->hook = decision_stored;
    j->hook_ctx = call;
    orch_job_submit(o, j);
}

static void on_approve(mc_http_connect_call *call, const ProtobufCMessage *msg, void *ctx)
{
    mc_orch *o = ctx;
    mc_http_counter_inc(o->m_rpc[RPC_APPROVE]);
    const Ops__V1__ApproveActionRequest *r = (const void *)msg;
    decide(o, call, r->action_id, true, r->actor, r->reason);
}

static void on_reject(mc_http_connect_call *call, const ProtobufCMessage *msg, void *ctx)
{
    mc_orch *o = ctx;
    mc_http_counter_inc(o->m_rpc[RPC_REJECT]);
    const Ops__V1__RejectActionRequest *r = (const void *)msg;
    decide(o, call, r->action_id, false, r->actor, r->reason);
}

/* ---- GetActionHistory ---- */

typedef struct history_req {
    mc_http_connect_call *call;
    mc_store_action_filter filter;
    char target[MC_APPROVAL_TARGET_MAX];
    uint32_t page_size;
    char token[128];
    mc_store_action_page page;
    mc_store_history_list hist;
} history_req;

mc_status orch_api_history_work(mc_store *s, orch_job *j);
mc_status orch_api_history_work(mc_store *s, orch_job *j)
{
    history_req *h = j->history;
    mc_status st = mc_store_action_list(s, &h->filter, h->page_size, h->token, &h->page,
                                        &j->base.err);
    if (st != MC_OK || h->page.n == 0)
        return st;
    const char **ids = calloc(h->page.n, sizeof *ids);
    if (ids == NULL)
        return mc_error_set(&j->base.err, MC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < h->page.n; i++)
        ids[i] = h->page.items[i]->id;
    st = mc_store_action_history(s, (const char *const *)ids, h->page.n, &h->hist, &j->base.err);
    free(ids);
    return st;
}

static void history_done(orch_job *j)
{
    history_req *h = j->history;
    if (j->base.status != MC_OK) {
        mc_status st = j->base.status;
        mc_http_connect_fail(h->call,
                             st == MC_ERR_INVALID ? MC_CONNECT_INVALID_ARGUMENT
                                                  : mc_http_connect_code_from_status(st),
                             "%s", j->base.err.msg);
    } else {
        Ops__V1__GetActionHistoryResponse resp = OPS__V1__GET_ACTION_HISTORY_RESPONSE__INIT;
        resp.n_actions = h->page.n;
        resp.actions = h->page.items;
        resp.n_entries = h->hist.n;
        resp.entries = h->hist.items;
        resp.next_page_token = h->page.next_page_token;
        mc_http_connect_respond(h->call, &resp.base);
    }
    mc_store_action_page_clear(&h->page);
    mc_store_history_list_clear(&h->hist);
    free(h);
    j->history = NULL;
}

static void on_history(mc_http_connect_call *call, const ProtobufCMessage *msg, void *ctx)
{
    mc_orch *o = ctx;
    mc_http_counter_inc(o->m_rpc[RPC_HISTORY]);
    const Ops__V1__GetActionHistoryRequest *r = (const void *)msg;
    if (!orch_read_auth_ok(o, mc_http_connect_call_request(call), "GetActionHistory")) {
        mc_http_connect_fail(call, MC_CONNECT_UNAUTHENTICATED, "bearer token required");
        return;
    }
    if (r->to_tick != 0 && r->to_tick < r->from_tick) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                             "to_tick (%llu) is below from_tick (%llu)",
                             (unsigned long long)r->to_tick, (unsigned long long)r->from_tick);
        return;
    }
    if (strlen(r->page_token) >= sizeof(((history_req *)0)->token) ||
        strlen(r->target_id) >= MC_APPROVAL_TARGET_MAX) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "page_token or target_id too long");
        return;
    }
    history_req *h = calloc(1, sizeof *h);
    orch_job *j = orch_job_new(o, ORCH_JOB_HISTORY);
    if (h == NULL || j == NULL) {
        free(h);
        free(j);
        mc_http_connect_fail(call, MC_CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < r->n_statuses; i++) {
        int s = (int)r->statuses[i];
        if (s <= 0 || s >= MC_APPROVAL_STATUS_COUNT) {
            free(h);
            free(j);
            mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "statuses[%zu]: unknown status %d",
                                 i, s);
            return;
        }
        h->filter.status_mask |= 1u << s;
    }
    if ((int)r->action_type < 0 || (int)r->action_type > 64) {
        free(h);
        free(j);
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "action_type: unknown value");
        return;
    }
    snprintf(h->target, sizeof h->target, "%s", r->target_id);
    h->filter.target_id = h->target[0] ? h->target : NULL;
    h->filter.action_type = r->action_type;
    h->filter.tick_min = r->from_tick;
    h->filter.tick_max = r->to_tick;
    h->page_size = r->page_size == 0 ? API_PAGE_DEFAULT
                   : r->page_size > API_PAGE_MAX ? API_PAGE_MAX
                                                 : r->page_size;
    snprintf(h->token, sizeof h->token, "%s", r->page_token);
    h->call = call;
    j->history = h;
    j->hook = history_done;
    orch_job_submit(o, j);
}

static const mc_http_connect_method methods[] = {
    {"ListPendingActions", &ops__v1__list_pending_actions_request__descriptor,
     &ops__v1__list_pending_actions_response__descriptor, on_list, false},
    {"ApproveAction", &ops__v1__approve_action_request__descriptor,
     &ops__v1__approve_action_response__descriptor, on_approve, false},
    {"RejectAction", &ops__v1__reject_action_request__descriptor,
     &ops__v1__reject_action_response__descriptor, on_reject, false},
    {"GetActionHistory", &ops__v1__get_action_history_request__descriptor,
     &ops__v1__get_action_history_response__descriptor, on_history, false},
};

mc_status orch_api_register(mc_orch *o, mc_error *err)
{
    static const mc_http_connect_service svc = {"ops.v1.ActionService", methods,
                                                sizeof methods / sizeof methods[0]};
    return mc_http_connect_register(o->srv, &svc, o, err);
}
