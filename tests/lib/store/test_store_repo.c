/* lib/store incident and action repositories against a real PostgreSQL:
 * upserts, idempotent inserts, compare-and-set status changes with history,
 * keyset paging, filters, the pending queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log/log.h"
#include "store/store.h"
#include "store_testutil.h"

typedef struct fixture {
    st_db db;
    mc_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    st_db_create(&f->db);
    f->s = st_open_migrated(&f->db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    mc_store_free(f->s);
    st_db_drop(&f->db);
    free(f);
    return 0;
}

enum { KIND_INCIDENT = 1, KIND_ACTION = 2 };

static void test_incident_upsert(void **state)
{
    fixture *f = *state;
    mc_error err = {0};
    char id[37];
    st_uuid(id, KIND_INCIDENT, 1);
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = "run-7";
    stamp.tick = 10;
    Ops__V1__Incident in = OPS__V1__INCIDENT__INIT;
    in.stamp = &stamp;
    in.id = id;
    in.severity = COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_WARNING;
    in.title = "High CPU on api";
    in.description = "cpu_usage 91.5 > 85";
    in.rule_name = "high_cpu";
    in.target_id = "api";
    in.metric_name = "cpu_usage";
    in.observed_value = 91.5;
    in.threshold = 85;
    in.state = OPS__V1__INCIDENT_STATE__INCIDENT_STATE_OPENED;
    in.opened_at_tick = 10;
    in.updated_at_tick = 10;
    in.detected_at_unix_ms = INT64_C(1767225610123);
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);
    /* Redelivery of the same message: no change, no error. */
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);

    /* An update at tick 12 raises severity; then a stale one (tick 11)
     * arrives late and must not undo it. */
    in.severity = COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL;
    in.observed_value = 99.25;
    in.updated_at_tick = 12;
    in.state = OPS__V1__INCIDENT_STATE__INCIDENT_STATE_UPDATED;
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);
    in.severity = COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_ERROR;
    in.observed_value = 95;
    in.updated_at_tick = 11;
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);

    Ops__V1__Incident *got = NULL;
    assert_int_equal(mc_store_incident_get(f->s, id, &got, &err), MC_OK);
    assert_string_equal(got->id, id);
    assert_int_equal(got->severity, 4);
    assert_true(got->observed_value == 99.25);
    assert_int_equal(got->updated_at_tick, 12);
    assert_int_equal(got->opened_at_tick, 10);
    assert_false(got->resolved);
    assert_int_equal(got->resolved_at_tick, 0);
    assert_int_equal(got->detected_at_unix_ms, INT64_C(1767225610123));
    assert_string_equal(got->stamp->run_id, "run-7");
    assert_string_equal(got->rule_name, "high_cpu");
    assert_string_equal(got->title, "High CPU on api");
    ops__v1__incident__free_unpacked(got, NULL);

    /* Resolve at 15; an update of the same tick after it does not reopen. */
    in.severity = COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL;
    in.state = OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED;
    in.resolved = true;
    in.resolved_at_tick = 15;
    in.updated_at_tick = 15;
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);
    in.resolved = false;
    in.resolved_at_tick = 0;
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_OK);
    assert_int_equal(mc_store_incident_get(f->s, id, &got, &err), MC_OK);
    assert_true(got->resolved);
    assert_int_equal(got->resolved_at_tick, 15);
    ops__v1__incident__free_unpacked(got, NULL);

    /* Bad input: clear errors, nothing stored. */
    in.id = "not-a-uuid";
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_ERR_INVALID);
    in.id = id;
    in.severity = 0;
    assert_int_equal(mc_store_incident_upsert(f->s, &in, &err), MC_ERR_INVALID);
    char other[37];
    st_uuid(other, KIND_INCIDENT, 999);
    assert_int_equal(mc_store_incident_get(f->s, other, &got, &err), MC_ERR_NOT_FOUND);
    assert_null(got);
}

/* An action proposed at tick t for target, numbered n. */
static void make_action(Ops__V1__Action *a, Common__V1__Stamp *stamp, char id[37], char inc[37],
                        uint32_t n, uint64_t tick, const char *target, int type)
{
    ops__v1__action__init(a);
    common__v1__stamp__init(stamp);
    stamp->run_id = "run-7";
    stamp->tick = tick;
    st_uuid(id, KIND_ACTION, n);
    st_uuid(inc, KIND_INCIDENT, n);
    a->stamp = stamp;
    a->id = id;
    a->incident_id = inc;
    a->action_type = type;
    a->target_id = (char *)target;
    a->status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
    a->reason = "error rate above 5%";
    a->proposed_at_tick = tick;
    a->expires_at_tick = tick + 30;
}

static void test_action_insert_cas_history(void **state)
{
    fixture *f = *state;
    mc_error err = {0};
    Ops__V1__Action a;
    Common__V1__Stamp stamp;
    char id[37], inc[37];
    make_action(&a, &stamp, id, inc, 1, 40, "api", 1);
    bool inserted = false;
    assert_int_equal(mc_store_action_insert(f->s, &a, &inserted, &err), MC_OK);
    assert_true(inserted);
    /* Redelivery: nothing inserted, no second history row. */
    assert_int_equal(mc_store_action_insert(f->s, &a, &inserted, &err), MC_OK);
    assert_false(inserted);

    Ops__V1__Action *got = NULL;
    assert_int_equal(mc_store_action_get(f->s, id, &got, &err), MC_OK);
    assert_string_equal(got->id, id);
    assert_string_equal(got->incident_id, inc);
    assert_int_equal(got->status, COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING);
    assert_int_equal(got->proposed_at_tick, 40);
    assert_int_equal(got->updated_at_tick, 40);
    assert_int_equal(got->expires_at_tick, 70);
    assert_string_equal(got->target_id, "api");
    assert_string_equal(got->stamp->run_id, "run-7");
    assert_string_equal(got->supersedes_action_id, "");
    ops__v1__action__free_unpacked(got, NULL);

    /* PENDING -> APPROVED by alice. */
    mc_store_action_transition t = {
        .action_id = id,
        .expected_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING,
        .to_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED,
        .actor = "alice",
        .decided_by = "alice",
        .tick = 42,
        .reason = "looks right",
    };
    assert_int_equal(mc_store_action_status_update(f->s, &t, &got, &err), MC_OK);
    assert_int_equal(got->status, COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED);
    assert_string_equal(got->decided_by, "alice");
    assert_string_equal(got->status_reason, "looks right");
    assert_int_equal(got->updated_at_tick, 42);
    ops__v1__action__free_unpacked(got, NULL);

    /* A second approver (or the expiry) loses the race: refused, naming the
     * current status, nothing changed. */
    t.actor = "bob";
    t.decided_by = "bob";
    t.to_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED;
    t.tick = 43;
    got = (Ops__V1__Action *)&a;
    assert_int_equal(mc_store_action_status_update(f->s, &t, &got, &err), MC_ERR_STATE);
    assert_null(got);
    assert_non_null(strstr(err.msg, "ACTION_STATUS_APPROVED"));
    assert_non_null(strstr(err.msg, "expected ACTION_STATUS_PENDING"));
    assert_non_null(strstr(err.msg, id));

    /* The engine applied it: APPROVED -> EXECUTED, decided_by kept. */
    mc_store_action_transition t2 = {
        .action_id = id,
        .expected_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED,
        .to_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED,
        .actor = "engine",
        .tick = 44,
    };
    assert_int_equal(mc_store_action_status_update(f->s, &t2, NULL, &err), MC_OK);
    assert_int_equal(mc_store_action_get(f->s, id, &got, &err), MC_OK);
    assert_int_equal(got->status, COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED);
    assert_string_equal(got->decided_by, "alice");
    ops__v1__action__free_unpacked(got, NULL);

    /* Unknown action; unconditional change of another. */
    char missing[37];
    st_uuid(missing, KIND_ACTION, 5000);
    t2.action_id = missing;
    assert_int_equal(mc_store_action_status_update(f->s, &t2, NULL, &err), MC_ERR_NOT_FOUND);
    Ops__V1__Action b;
    Common__V1__Stamp bstamp;
    char bid[37], binc[37];
    make_action(&b, &bstamp, bid, binc, 2, 41, "db", 2);
    assert_int_equal(mc_store_action_insert(f->s, &b, NULL, &err), MC_OK);
    mc_store_action_transition t3 = {
        .action_id = bid,
        .to_status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED,
        .actor = "system",
        .tick = 45,
        .reason = "replaced",
    };
    assert_int_equal(mc_store_action_status_update(f->s, &t3, NULL, &err), MC_OK);

    /* History of both, per action in the order recorded. */
    mc_store_history_list h = {0};
    const char *ids[] = {id, bid, missing};
    assert_int_equal(mc_store_action_history(f->s, ids, 3, &h, &err), MC_OK);
    assert_int_equal(h.n, 5);
    /* Ordered by action id: id (…0001) before bid (…0002). */
    assert_string_equal(h.items[0]->action_id, id);
    assert_int_equal(h.items[0]->from_status, 0);
    assert_int_equal(h.items[0]->to_status, 1);
    assert_string_equal(h.items[0]->actor, "agent");
    assert_int_equal(h.items[0]->tick, 40);
    assert_int_equal(h.items[1]->from_status, 1);
    assert_int_equal(h.items[1]->to_status, 2);
    assert_string_equal(h.items[1]->actor, "alice");
    assert_string_equal(h.items[1]->reason, "looks right");
    assert_int_equal(h.items[2]->to_status, 4);
    assert_string_equal(h.items[2]->actor, "engine");
    assert_int_equal(h.items[2]->tick, 44);
    assert_string_equal(h.items[3]->action_id, bid);
    assert_string_equal(h.items[4]->action_id, bid);
    assert_int_equal(h.items[4]->from_status, 1);
    assert_int_equal(h.items[4]->to_status, 7);
    assert_true(h.items[4]->recorded_at_unix_ms > INT64_C(1600000000000));
    mc_store_history_list_clear(&h);

    /* An id with quotes cannot change the array: it is just not a UUID. */
    const char *evil[] = {"\"},{\"x"};
    assert_int_equal(mc_store_action_history(f->s, evil, 1, &h, &err), MC_ERR_INVALID);
    assert_int_equal(h.n, 0);
}

#define NACT 25

static void insert_many(fixture *f)
{
    mc_error err = {0};
    static const char *targets[] = {"api", "db", "cache"};
    for (uint32_t i = 0; i < NACT; i++) {
        Ops__V1__Action a;
        Common__V1__Stamp stamp;
        char id[37], inc[37];
        /* Ticks repeat (i / 2), so paging must break ties by id. */
        make_action(&a, &stamp, id, inc, 100 + i, 1000 + i / 2, targets[i % 3], 1 + (int)(i % 5));
        if (i % 4 == 3)
            a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED;
        if (mc_store_action_insert(f->s, &a, NULL, &err) != MC_OK)
            fail_msg("insert %u: %s", i, err.msg);
    }
}

static void test_paging_and_filters(void **state)
{
    fixture *f = *state;
    mc_error err = {0};
    insert_many(f);
    bool seen[NACT] = {false};
    mc_store_action_page page = {0};
    char token[96] = "";
    uint64_t prev_tick = UINT64_MAX;
    char prev_id[37] = "";
    size_t sizes[4] = {0};
    int pages = 0;
    do {
        assert_true(pages < 4);
        assert_int_equal(mc_store_action_list(f->s, NULL, 10, token, &page, &err), MC_OK);
        sizes[pages++] = page.n;
        for (size_t i = 0; i < page.n; i++) {
            const Ops__V1__Action *a = page.items[i];
            unsigned n = 0;
            assert_int_equal(sscanf(a->id + 24, "%x", &n), 1);
            assert_true(n >= 100 && n < 100 + NACT);
            assert_false(seen[n - 100]); /* no repeats */
            seen[n - 100] = true;
            /* Strictly descending by (tick, id). */
            assert_true(a->proposed_at_tick < prev_tick ||
                        (a->proposed_at_tick == prev_tick && strcmp(a->id, prev_id) < 0));
            prev_tick = a->proposed_at_tick;
            snprintf(prev_id, sizeof prev_id, "%s", a->id);
        }
        snprintf(token, sizeof token, "%s", page.next_page_token);
        /* Rows added after the first page land before it and do not shift
         * the pages that follow. */
        if (pages == 1) {
            Ops__V1__Action a;
            Common__V1__Stamp stamp;
            char id[37], inc[37];
            make_action(&a, &stamp, id, inc, 900, 5000, "api", 1);
            assert_int_equal(mc_store_action_insert(f->s, &a, NULL, &err), MC_OK);
        }
    } while (token[0] != '\0');
    assert_int_equal(pages, 3);
    assert_int_equal(sizes[0], 10);
    assert_int_equal(sizes[1], 10);
    assert_int_equal(sizes[2], 5);
    for (int i = 0; i < NACT; i++)
        assert_true(seen[i]); /* no gaps */

    /* Filters: status set, target, type, tick range; and combined. */
    mc_store_action_filter flt = {.status_mask = 1u << 3};
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 6); /* i = 3, 7, 11, 15, 19, 23 */
    for (size_t i = 0; i < page.n; i++)
        assert_int_equal(page.items[i]->status, 3);
    assert_string_equal(page.next_page_token, "");
    flt = (mc_store_action_filter){.status_mask = (1u << 1) | (1u << 3), .target_id = "db"};
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 8); /* i % 3 == 1 */
    flt = (mc_store_action_filter){.action_type = 2};
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 5); /* i % 5 == 1 */
    for (size_t i = 0; i < page.n; i++)
        assert_int_equal(page.items[i]->action_type, 2);
    flt = (mc_store_action_filter){.tick_min = 1003, .tick_max = 1005};
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 6); /* i = 6..11 */
    flt = (mc_store_action_filter){.tick_min = 1003, .tick_max = 1005, .target_id = "api",
                                   .run_id = "run-7"};
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 2); /* i = 6, 9 */
    flt.run_id = "other-run";
    assert_int_equal(mc_store_action_list(f->s, &flt, 100, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 0);
    /* Paging with a filter. */
    flt = (mc_store_action_filter){.target_id = "api"};
    assert_int_equal(mc_store_action_list(f->s, &flt, 5, NULL, &page, &err), MC_OK);
    assert_int_equal(page.n, 5);
    snprintf(token, sizeof token, "%s", page.next_page_token);
    assert_int_equal(mc_store_action_list(f->s, &flt, 5, token, &page, &err), MC_OK);
    assert_int_equal(page.n, 5); /* 9 of 25 plus the late one: 10 in all */
    assert_string_equal(page.next_page_token, "");

    /* A malformed token is refused. */
    const char *bad[] = {"garbage", "a1.", "a1.12", "a1.12.zzzzzzzz-0000-4000-8000-000000000001",
                         "a1.-3.00000002-0000-4000-8000-000000000064",
                         "a1.99999999999999999999.00000002-0000-4000-8000-000000000064",
                         "a1.12.00000002-0000-4000-8000-000000000064x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mc_store_action_list(f->s, NULL, 10, bad[i], &page, &err),
                         MC_ERR_INVALID);
    mc_store_action_page_clear(&page);
}

static void test_pending_oldest_first(void **state)
{
    fixture *f = *state;
    mc_error err = {0};
    insert_many(f);
    mc_store_action_page page = {0};
    assert_int_equal(mc_store_action_list_pending(f->s, 0, &page, &err), MC_OK);
    assert_int_equal(page.n, NACT - 6);
    for (size_t i = 0; i < page.n; i++) {
        assert_int_equal(page.items[i]->status, 1);
        if (i > 0)
            assert_true(page.items[i - 1]->proposed_at_tick < page.items[i]->proposed_at_tick ||
                        (page.items[i - 1]->proposed_at_tick == page.items[i]->proposed_at_tick &&
                         strcmp(page.items[i - 1]->id, page.items[i]->id) < 0));
    }
    assert_int_equal(page.items[0]->proposed_at_tick, 1000);
    assert_int_equal(mc_store_action_list_pending(f->s, 3, &page, &err), MC_OK);
    assert_int_equal(page.n, 3);
    mc_store_action_page_clear(&page);
    mc_store_action_page_clear(&page);
    mc_store_action_page_clear(NULL);
}

int main(void)
{
    mc_log_init("test_store_repo", MC_LOG_ERROR, MC_LOG_FORMAT_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_incident_upsert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_action_insert_cas_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paging_and_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_oldest_first, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
