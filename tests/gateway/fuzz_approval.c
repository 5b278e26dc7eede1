/* Fuzzes the approval core with arbitrary inputs: protobuf messages unpacked
 * from the fuzzer's bytes (any field value protobuf-c accepts: huge ticks,
 * unknown enum numbers, long or empty strings, missing stamps), structured
 * operations that reach deep states (decisions on known ids, engine reports
 * with the real command ids, tick ends), and queries with arbitrary cursors.
 * The core must never crash, and its invariants must hold after every step.
 *
 * Input: byte 0 picks the mode, byte 1 the expiry; then operations, each an
 * opcode byte followed by its operands. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approval/approval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t take(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

/* A length byte and that many bytes (fewer at the end of the input). */
static size_t take_blob(reader *r, const uint8_t **blob)
{
    size_t len = take(r);
    if (len > r->n)
        len = r->n;
    *blob = r->p;
    r->p += len;
    r->n -= len;
    return len;
}

static void check(const mc_approval *a)
{
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    uint32_t total = mc_approval_counts(a, counts), sum = 0;
    for (size_t i = 0; i < MC_APPROVAL_STATUS_COUNT; i++)
        sum += counts[i];
    if (sum != total || total > a->capacity)
        abort();
    /* At most one pending action per target, in canonical order. */
    static mc_approval_action all[16];
    size_t n = 0;
    char cursor[MC_APPROVAL_CURSOR_MAX];
    if (mc_approval_list(a, 0, NULL, all, 16, &n, cursor, NULL) != MC_OK || n != total)
        abort();
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (all[i].status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING &&
                all[j].status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING &&
                strcmp(all[i].target_id, all[j].target_id) == 0)
                abort();
        }
        if (i > 0 && (all[i - 1].proposed_at_tick > all[i].proposed_at_tick ||
                      (all[i - 1].proposed_at_tick == all[i].proposed_at_tick &&
                       strcmp(all[i - 1].id, all[i].id) >= 0)))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.mode = (mc_approval_mode)(take(&r) % 3);
    cfg.expiry_ticks = take(&r) % 6;
    cfg.max_actions = 8;
    cfg.max_incidents = 2;
    static mc_approval a;
    mc_outbox out;
    if (mc_approval_init(&a, &cfg, NULL) != MC_OK)
        abort();
    mc_outbox_init(&out, 64);
    static const char *const ids[] = {"a0", "a1", "a2", "a3", "a4", "a5"};
    static const char *const targets[] = {"t0", "t1", "t2"};
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)"run-fuzz";

    for (int steps = 0; r.n > 0 && steps < 256; steps++) {
        uint8_t opcode = take(&r);
        const uint8_t *blob = NULL;
        size_t len = 0;
        mc_error err;
        /* The core may emit up to one message per tracked action plus a
         * watermark; publish (drop) what is there first. */
        if (out.len > 32)
            mc_outbox_clear(&out);
        switch (opcode % 9) {
        case 0: { /* a raw Action */
            len = take_blob(&r, &blob);
            Ops__V1__Action *m = ops__v1__action__unpack(NULL, len, blob);
            if (m != NULL) {
                (void)mc_approval_on_action(&a, m, &out, &err);
                ops__v1__action__free_unpacked(m, NULL);
            }
            break;
        }
        case 1: { /* a raw Incident */
            len = take_blob(&r, &blob);
            Ops__V1__Incident *m = ops__v1__incident__unpack(NULL, len, blob);
            if (m != NULL) {
                (void)mc_approval_on_incident(&a, m, &out, &err);
                ops__v1__incident__free_unpacked(m, NULL);
            }
            break;
        }
        case 2: { /* a raw SimulationEvent */
            len = take_blob(&r, &blob);
            Sim__V1__SimulationEvent *m = sim__v1__simulation_event__unpack(NULL, len, blob);
            if (m != NULL) {
                (void)mc_approval_on_event(&a, m, &out, &err);
                sim__v1__simulation_event__free_unpacked(m, NULL);
            }
            break;
        }
        case 3: { /* a raw recorded decision */
            len = take_blob(&r, &blob);
            Ops__V1__ApprovalDecision *m = ops__v1__approval_decision__unpack(NULL, len, blob);
            if (m != NULL) {
                mc_approval_action v;
                (void)mc_approval_replay_due(&a, m);
                (void)mc_approval_replay_decision(&a, m, &out, &v, &err);
                ops__v1__approval_decision__free_unpacked(m, NULL);
            }
            break;
        }
        case 4: { /* a well-formed proposal */
            uint8_t b = take(&r), c = take(&r);
            stamp.tick = c;
            Ops__V1__Action m = OPS__V1__ACTION__INIT;
            m.stamp = &stamp;
            m.id = (char *)ids[b % 6];
            m.target_id = (char *)targets[(b / 6) % 3];
            m.action_type = (Common__V1__ActionType)(1 + (c % 5));
            m.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
            m.incident_id = (char *)"i0";
            m.proposed_at_tick = c;
            (void)mc_approval_on_action(&a, &m, &out, &err);
            break;
        }
        case 5: { /* a person's decision */
            uint8_t b = take(&r);
            mc_approval_action v;
            (void)mc_approval_on_human_decision(&a, ids[b % 6], (b & 0x80) != 0, "fuzz",
                                                (b & 0x40) ? "because" : "", &out, &v, &err);
            break;
        }
        case 6: { /* the engine's report on an action, with its real command */
            uint8_t b = take(&r);
            mc_approval_action v;
            if (mc_approval_get(&a, ids[b % 6], &v, &err) == MC_OK) {
                Sim__V1__SimulationEvent e = SIM__V1__SIMULATION_EVENT__INIT;
                stamp.tick = mc_approval_open_tick(&a);
                e.stamp = &stamp;
                e.kind =
                    (b & 0x80)
                        ? SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED
                        : SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED;
                e.action_id = (b & 0x40) ? v.id : (char *)"";
                e.command_id = v.command_id;
                (void)mc_approval_on_event(&a, &e, &out, &err);
            }
            break;
        }
        case 7: { /* a tick end */
            uint8_t b = take(&r);
            uint64_t t = b == 0xff ? UINT64_MAX : mc_approval_open_tick(&a) + (b % 4) - 1;
            (void)mc_approval_on_tick_end(&a, t, &out, &err);
            break;
        }
        case 8: { /* a page of any status with a cursor from the input */
            len = take_blob(&r, &blob);
            char cursor[64];
            size_t cl = len < sizeof cursor - 1 ? len : sizeof cursor - 1;
            memcpy(cursor, blob, cl);
            cursor[cl] = '\0';
            mc_approval_action page[3];
            size_t n = 0;
            char next[MC_APPROVAL_CURSOR_MAX];
            (void)mc_approval_list(&a, (uint32_t)opcode << 1, cursor, page, 3, &n, next, &err);
            break;
        }
        }
        size_t nt = 0;
        const mc_approval_transition *t = mc_approval_transitions(&a, &nt);
        for (size_t i = 0; i < nt; i++) {
            if (t[i].from_status == t[i].to_status)
                abort();
        }
        check(&a);
    }
    uint8_t digest[MC_DIGEST_BYTES];
    mc_approval_digest(&a, digest);
    mc_approval_deinit(&a);
    mc_outbox_deinit(&out);
    return 0;
}
