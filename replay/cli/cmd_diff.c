/* microcloud replay diff: compare two recorded runs. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/v1/enums.pb-c.h"
#include "core/digest.h"
#include "detector/rulefile.h"
#include "harness/msgdiff.h"
#include "harness/subjects.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "trace/reader.h"
#include "trace/writer.h"

static void diff_usage(FILE *f)
{
    fprintf(
        f, "usage: microcloud replay diff A B [options]\n"
           "\n"
           "Compares two traces as runs: the first record that differs (tick, subject, producer\n"
           "sequence, a field-level JSON diff), which core's state digest diverged first, and a\n"
           "decision summary (actions added, removed or changed, with ticks and reasons). The\n"
           "headers' build id, compiler and start time are shown but do not count as differences.\n"
           "Exit: 0 same run, 1 different, 2 a trace is damaged, torn or unreadable.\n"
           "\n"
           "  --max-diffs N   field differences shown (default 20)\n"
           "  --max-actions N actions listed per kind (default 50)\n"
           "  --json          one JSON object instead of text\n");
}

typedef struct act {
    char id[64];
    uint64_t tick;
    int type;
    char target[128];
    char reason[512];
    uint32_t escalation;
    char outcome[48];
    uint64_t outcome_tick;
    char outcome_reason[256];
    char result[16]; /* executed / failed / "" */
    uint64_t result_tick;
} act;

typedef struct run {
    const char *path;
    Trace__V1__TraceHeader *h;
    act *acts;
    size_t n_acts, cap_acts;
    uint8_t (*cp)[4][32]; /* per tick */
    uint8_t *cp_has;      /* per tick: bit per stage */
    uint64_t cp_cap;
    uint64_t records, last_tick;
    char problem[512];
} run;

/* cp_has bits: 1 << (stage - 1) per digest recorded, and this one when the
 * tick has a checkpoint at all. */
#define CP_PRESENT 0x80u

static act *find_act(run *r, const char *id)
{
    for (size_t i = r->n_acts; i-- > 0;)
        if (strcmp(r->acts[i].id, id) == 0)
            return &r->acts[i];
    return NULL;
}

static int collect(run *r)
{
    mc_error err = {0};
    mc_trace_reader *rd = NULL;
    if (mc_trace_reader_open(r->path, NULL, &rd, &err) != MC_OK) {
        snprintf(r->problem, sizeof r->problem, "%s", err.msg);
        return -1;
    }
    size_t hlen = 0;
    const uint8_t *hb = mc_trace_reader_header_bytes(rd, &hlen);
    r->h = trace__v1__trace_header__unpack(NULL, hlen, hb);
    int rc = 0;
    for (;;) {
        mc_trace_record rec;
        if (mc_trace_reader_next(rd, &rec, &err) != MC_OK) {
            snprintf(r->problem, sizeof r->problem, "damaged: %s", err.msg);
            rc = -1;
            break;
        }
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            uint64_t t = rec.checkpoint->tick;
            if (t >= r->cp_cap) {
                uint64_t ncap = r->cp_cap ? r->cp_cap : 1024;
                while (ncap <= t)
                    ncap *= 2;
                void *a = realloc(r->cp, ncap * sizeof *r->cp);
                uint8_t *b = a ? realloc(r->cp_has, ncap) : NULL;
                if (!a || !b) {
                    snprintf(r->problem, sizeof r->problem, "out of memory");
                    if (a)
                        r->cp = a;
                    rc = -1;
                    break;
                }
                r->cp = a;
                r->cp_has = b;
                memset(r->cp_has + r->cp_cap, 0, ncap - r->cp_cap);
                r->cp_cap = ncap;
            }
            r->cp_has[t] |= CP_PRESENT;
            for (size_t i = 0; i < rec.checkpoint->n_digests; i++) {
                const Trace__V1__ComponentDigest *cd = rec.checkpoint->digests[i];
                /* An all-zero digest was not recorded (FORMAT.md). */
                if (cd->stage >= 1 && cd->stage <= 4 &&
                    mc_trace_digest_present(cd->digest.data, cd->digest.len)) {
                    memcpy(r->cp[t][cd->stage - 1], cd->digest.data, 32);
                    r->cp_has[t] |= (uint8_t)(1u << (cd->stage - 1));
                }
            }
            continue;
        }
        if (rec.kind != MC_TRACE_KIND_RECORD)
            continue;
        r->records++;
        r->last_tick = rec.tick;
        bool is_act = strcmp(rec.subject, "ops.actions") == 0;
        bool is_dec = strcmp(rec.subject, "ops.decisions") == 0;
        bool is_ev = strcmp(rec.subject, "sim.events") == 0;
        if (!is_act && !is_dec && !is_ev)
            continue;
        ProtobufCMessage *m = mc_subject_unpack(rec.subject, rec.payload, rec.payload_len);
        if (!m)
            continue;
        if (is_act) {
            const Ops__V1__Action *a = (Ops__V1__Action *)m;
            if (r->n_acts == r->cap_acts) {
                size_t ncap = r->cap_acts ? r->cap_acts * 2 : 64;
                act *na = realloc(r->acts, ncap * sizeof *na);
                if (!na) {
                    protobuf_c_message_free_unpacked(m, NULL);
                    snprintf(r->problem, sizeof r->problem, "out of memory");
                    rc = -1;
                    break;
                }
                r->acts = na;
                r->cap_acts = ncap;
            }
            act *x = &r->acts[r->n_acts++];
            memset(x, 0, sizeof *x);
            snprintf(x->id, sizeof x->id, "%s", a->id);
            x->tick = a->proposed_at_tick ? a->proposed_at_tick : rec.tick;
            x->type = (int)a->action_type;
            snprintf(x->target, sizeof x->target, "%s", a->target_id);
            snprintf(x->reason, sizeof x->reason, "%s", a->reason);
            x->escalation = a->escalation_level;
            snprintf(x->outcome, sizeof x->outcome, "pending");
        } else if (is_dec) {
            const Ops__V1__ApprovalDecision *d = (Ops__V1__ApprovalDecision *)m;
            act *x = find_act(r, d->action_id);
            if (x) {
                const char *src =
                    d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN    ? "human"
                    : d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY ? "policy"
                                                                                    : "system";
                snprintf(x->outcome, sizeof x->outcome, "%s by %s",
                         d->approved
                             ? "approved"
                             : (d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM
                                    ? "dropped"
                                    : "rejected"),
                         src);
                x->outcome_tick = d->effective_tick ? d->effective_tick : rec.tick;
                snprintf(x->outcome_reason, sizeof x->outcome_reason, "%s", d->reason);
            }
        } else {
            const Sim__V1__SimulationEvent *e = (Sim__V1__SimulationEvent *)m;
            bool ap =
                e->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED;
            bool rf =
                e->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED;
            act *x = (ap || rf) && e->action_id ? find_act(r, e->action_id) : NULL;
            if (x) {
                snprintf(x->result, sizeof x->result, "%s", ap ? "executed" : "failed");
                x->result_tick = e->applied_at_tick ? e->applied_at_tick : rec.tick;
            }
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (rc == 0 && mc_trace_reader_state(rd) == MC_TRACE_TORN) {
        const mc_trace_problem *p = mc_trace_reader_problem(rd);
        snprintf(r->problem, sizeof r->problem, "torn: %s", p ? p->what : "no footer");
        rc = -1;
    }
    mc_trace_reader_free(rd);
    return rc;
}

static void run_free(run *r)
{
    if (r->h)
        trace__v1__trace_header__free_unpacked(r->h, NULL);
    free(r->acts);
    free(r->cp);
    free(r->cp_has);
}

static bool same_key(const act *a, const act *b)
{
    return a->tick == b->tick && a->type == b->type && strcmp(a->target, b->target) == 0;
}

static json_t *act_json(const act *a)
{
    json_t *j = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s}", "actionId", a->id, "proposedAtTick",
                          (json_int_t)a->tick, "type", mc_rulefile_action_type_name(a->type),
                          "target", a->target, "reason", a->reason, "outcome", a->outcome);
    if (a->outcome_tick)
        json_object_set_new(j, "outcomeTick", json_integer((json_int_t)a->outcome_tick));
    if (a->outcome_reason[0])
        json_object_set_new(j, "outcomeReason", json_string(a->outcome_reason));
    if (a->result[0]) {
        json_object_set_new(j, "result", json_string(a->result));
        json_object_set_new(j, "resultTick", json_integer((json_int_t)a->result_tick));
    }
    return j;
}

static void act_print(const char *mark, const act *a)
{
    printf("  %s tick %" PRIu64 " %s %s: %s", mark, a->tick, mc_rulefile_action_type_name(a->type),
           a->target, a->outcome);
    if (a->outcome_tick)
        printf(" at %" PRIu64, a->outcome_tick);
    if (a->result[0])
        printf(", %s at %" PRIu64, a->result, a->result_tick);
    printf("\n      reason: %s\n", a->reason);
}

/* The first record that differs, in a lockstep read of both files. */
typedef struct first_diff {
    bool found;
    uint64_t index; /* record number, from 1 */
    uint64_t tick_a, tick_b, seq_a, seq_b;
    uint32_t stage_a, stage_b;
    char subj_a[64], subj_b[64];
    bool has_a, has_b;
    uint8_t *pa, *pb;
    size_t la, lb;
} first_diff;

static int first_record_diff(const char *pa, const char *pb, first_diff *fd, char *problem,
                             size_t cap)
{
    memset(fd, 0, sizeof *fd);
    mc_error err = {0};
    mc_trace_reader *ra = NULL, *rb = NULL;
    if (mc_trace_reader_open(pa, NULL, &ra, &err) != MC_OK ||
        mc_trace_reader_open(pb, NULL, &rb, &err) != MC_OK) {
        snprintf(problem, cap, "%s", err.msg);
        mc_trace_reader_free(ra);
        return -1;
    }
    int rc = 0;
    for (;;) {
        mc_trace_record a, b;
        do {
            if (mc_trace_reader_next(ra, &a, &err) != MC_OK) {
                a.kind = MC_TRACE_KIND_NONE;
                rc = -1;
            }
        } while (a.kind != MC_TRACE_KIND_NONE && a.kind != MC_TRACE_KIND_RECORD);
        do {
            if (mc_trace_reader_next(rb, &b, &err) != MC_OK) {
                b.kind = MC_TRACE_KIND_NONE;
                rc = -1;
            }
        } while (b.kind != MC_TRACE_KIND_NONE && b.kind != MC_TRACE_KIND_RECORD);
        if (rc)
            break;
        bool ha = a.kind == MC_TRACE_KIND_RECORD, hb = b.kind == MC_TRACE_KIND_RECORD;
        if (!ha && !hb)
            break;
        fd->index++;
        if (ha && hb && a.tick == b.tick && a.stage == b.stage &&
            a.producer_seq == b.producer_seq && strcmp(a.subject, b.subject) == 0 &&
            a.payload_len == b.payload_len &&
            (a.payload_len == 0 || memcmp(a.payload, b.payload, a.payload_len) == 0))
            continue;
        fd->found = true;
        if (ha) {
            fd->has_a = true;
            fd->tick_a = a.tick;
            fd->seq_a = a.producer_seq;
            fd->stage_a = a.stage;
            snprintf(fd->subj_a, sizeof fd->subj_a, "%s", a.subject);
            fd->pa = malloc(a.payload_len + 1);
            if (fd->pa && a.payload_len)
                memcpy(fd->pa, a.payload, a.payload_len);
            fd->la = a.payload_len;
        }
        if (hb) {
            fd->has_b = true;
            fd->tick_b = b.tick;
            fd->seq_b = b.producer_seq;
            fd->stage_b = b.stage;
            snprintf(fd->subj_b, sizeof fd->subj_b, "%s", b.subject);
            fd->pb = malloc(b.payload_len + 1);
            if (fd->pb && b.payload_len)
                memcpy(fd->pb, b.payload, b.payload_len);
            fd->lb = b.payload_len;
        }
        break;
    }
    if (rc)
        snprintf(problem, cap, "%s", err.msg);
    mc_trace_reader_free(ra);
    mc_trace_reader_free(rb);
    return rc;
}

static bool bytes_eq(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

int mc_cmd_diff(int argc, char **argv)
{
    enum { O_MAX = 1000, O_MAXA, O_JSON, O_HELP };
    static const struct option opts[] = {{"max-diffs", required_argument, 0, O_MAX},
                                         {"max-actions", required_argument, 0, O_MAXA},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    size_t max_diffs = 20, max_acts = 50;
    bool json = false;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MAX: max_diffs = (size_t)strtoul(optarg, NULL, 10); break;
        case O_MAXA: max_acts = (size_t)strtoul(optarg, NULL, 10); break;
        case O_JSON: json = true; break;
        case O_HELP:
        case 'h': diff_usage(stdout); return MC_EXIT_OK;
        default: diff_usage(stderr); return MC_EXIT_USAGE;
        }
    }
    if (optind + 2 != argc) {
        fprintf(stderr, "microcloud replay diff: expected two traces A B (try --help)\n");
        return MC_EXIT_USAGE;
    }
    run A = {0}, B = {0};
    A.path = argv[optind];
    B.path = argv[optind + 1];
    if (collect(&A) != 0 || collect(&B) != 0) {
        fprintf(stderr, "microcloud replay diff: %s: %s\n", A.problem[0] ? A.path : B.path,
                A.problem[0] ? A.problem : B.problem);
        run_free(&A);
        run_free(&B);
        return MC_EXIT_DAMAGED;
    }
    first_diff fd;
    char problem[512] = "";
    if (first_record_diff(A.path, B.path, &fd, problem, sizeof problem) != 0) {
        fprintf(stderr, "microcloud replay diff: %s\n", problem);
        run_free(&A);
        run_free(&B);
        return MC_EXIT_DAMAGED;
    }

    /* Header fields that make a different run, and those that do not. */
    json_t *hdiff = json_array();
    const Trace__V1__TraceHeader *ha = A.h, *hb = B.h;
#define HSTR(f, counts)                                                                            \
    if (strcmp(nz(ha->f), nz(hb->f)) != 0)                                                         \
    json_array_append_new(hdiff, json_pack("{s:s,s:s,s:s,s:b}", "field", #f, "a", nz(ha->f), "b",  \
                                           nz(hb->f), "differentRun", counts))
    HSTR(scenario, 1);
    HSTR(run_id, 1);
    HSTR(mode, 1);
    HSTR(approval_mode, 1);
    HSTR(build_id, 0);
    HSTR(compiler, 0);
#undef HSTR
    if (ha->seed != hb->seed)
        json_array_append_new(hdiff, json_pack("{s:s,s:I,s:I,s:b}", "field", "seed", "a",
                                               (json_int_t)ha->seed, "b", (json_int_t)hb->seed,
                                               "differentRun", 1));
    if (!bytes_eq(ha->topology_digest, hb->topology_digest))
        json_array_append_new(hdiff, json_pack("{s:s,s:s,s:s,s:b}", "field", "topology_digest", "a",
                                               "", "b", "", "differentRun", 1));
    if (!bytes_eq(ha->config_digest, hb->config_digest))
        json_array_append_new(hdiff, json_pack("{s:s,s:s,s:s,s:b}", "field", "config_digest", "a",
                                               "", "b", "", "differentRun", 1));
    bool header_differs = false;
    {
        size_t i;
        json_t *e;
        json_array_foreach(hdiff, i, e) if (json_is_true(json_object_get(e, "differentRun")))
            header_differs = true;
    }

    /* Which core's digest diverged first. */
    bool dig_found = false;
    uint64_t dig_tick = 0;
    uint32_t dig_stage = 0;
    uint64_t common = A.cp_cap < B.cp_cap ? A.cp_cap : B.cp_cap;
    bool cp_count_differs = false;
    for (uint64_t t = 0; t < (A.cp_cap > B.cp_cap ? A.cp_cap : B.cp_cap) && !dig_found; t++) {
        uint8_t fa = t < A.cp_cap ? A.cp_has[t] : 0, fb = t < B.cp_cap ? B.cp_has[t] : 0;
        /* A tick checkpointed in one run only differs; which cores a
         * checkpoint covers does not (a live trace has the engine's digest
         * only): digests are compared where both runs have them. */
        if ((fa & CP_PRESENT) != (fb & CP_PRESENT))
            cp_count_differs = true;
        if (t >= common)
            continue;
        for (uint32_t s = 0; s < 4; s++)
            if ((fa & fb & (1u << s)) && memcmp(A.cp[t][s], B.cp[t][s], 32) != 0) {
                dig_found = true;
                dig_tick = t;
                dig_stage = s + 1;
                break;
            }
    }

    /* Decision summary: actions keyed by (proposed tick, type, target). */
    json_t *added = json_array(), *removed = json_array(), *changed = json_array();
    size_t n_added = 0, n_removed = 0, n_changed = 0;
    const act *first_changed = NULL;
    const char *first_changed_kind = NULL;
    for (size_t i = 0; i < A.n_acts; i++) {
        const act *a = &A.acts[i];
        const act *b = NULL;
        for (size_t j = 0; j < B.n_acts && !b; j++)
            if (same_key(a, &B.acts[j]))
                b = &B.acts[j];
        if (!b) {
            if (n_removed++ < max_acts)
                json_array_append_new(removed, act_json(a));
            if (!first_changed || a->tick < first_changed->tick) {
                first_changed = a;
                first_changed_kind = "removed";
            }
        } else if (strcmp(a->reason, b->reason) != 0 || strcmp(a->outcome, b->outcome) != 0 ||
                   strcmp(a->result, b->result) != 0 || a->outcome_tick != b->outcome_tick ||
                   a->result_tick != b->result_tick || a->escalation != b->escalation) {
            if (n_changed++ < max_acts)
                json_array_append_new(changed,
                                      json_pack("{s:o,s:o}", "a", act_json(a), "b", act_json(b)));
            if (!first_changed || a->tick < first_changed->tick) {
                first_changed = a;
                first_changed_kind = "changed";
            }
        }
    }
    for (size_t j = 0; j < B.n_acts; j++) {
        const act *b = &B.acts[j];
        bool found = false;
        for (size_t i = 0; i < A.n_acts && !found; i++)
            found = same_key(&A.acts[i], b);
        if (!found) {
            if (n_added++ < max_acts)
                json_array_append_new(added, act_json(b));
            if (!first_changed || b->tick < first_changed->tick) {
                first_changed = b;
                first_changed_kind = "added";
            }
        }
    }

    bool differ = fd.found || header_differs || dig_found || cp_count_differs;
    json_t *fields = NULL;
    if (fd.found) {
        const char *subj = fd.has_a ? fd.subj_a : fd.subj_b;
        bool same_subject = fd.has_a && fd.has_b && strcmp(fd.subj_a, fd.subj_b) == 0;
        if (same_subject || !(fd.has_a && fd.has_b))
            fields = mc_msgdiff(subj, fd.has_a ? fd.pa : NULL, fd.la, fd.has_b ? fd.pb : NULL,
                                fd.lb, max_diffs);
    }
    char repro[2048] = "";
    mc_shell_append(repro, sizeof repro, mc_prog);
    mc_shell_append(repro, sizeof repro, "replay");
    mc_shell_append(repro, sizeof repro, "diff");
    mc_shell_append(repro, sizeof repro, A.path);
    mc_shell_append(repro, sizeof repro, B.path);
    char hex_a[65], hex_b[65];
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "command", json_string("replay diff"));
        json_object_set_new(o, "a", json_string(A.path));
        json_object_set_new(o, "b", json_string(B.path));
        json_object_set_new(o, "build", json_string(mc_trace_build_id()));
        json_object_set_new(o, "identical", json_boolean(!differ));
        json_object_set_new(o, "header", hdiff);
        hdiff = NULL;
        if (fd.found) {
            json_t *d = json_object();
            json_object_set_new(d, "record", json_integer((json_int_t)fd.index));
            json_object_set_new(d, "tick",
                                json_integer((json_int_t)(fd.has_a ? fd.tick_a : fd.tick_b)));
            json_object_set_new(d, "subject", json_string(fd.has_a ? fd.subj_a : fd.subj_b));
            json_object_set_new(d, "producerSeq",
                                json_integer((json_int_t)(fd.has_a ? fd.seq_a : fd.seq_b)));
            if (fd.has_a)
                json_object_set_new(d, "a",
                                    json_pack("{s:I,s:s,s:s,s:I}", "tick", (json_int_t)fd.tick_a,
                                              "component", mc_stage_name(fd.stage_a), "subject",
                                              fd.subj_a, "producerSeq", (json_int_t)fd.seq_a));
            if (fd.has_b)
                json_object_set_new(d, "b",
                                    json_pack("{s:I,s:s,s:s,s:I}", "tick", (json_int_t)fd.tick_b,
                                              "component", mc_stage_name(fd.stage_b), "subject",
                                              fd.subj_b, "producerSeq", (json_int_t)fd.seq_b));
            json_object_set_new(d, "fields", fields ? json_incref(fields) : json_array());
            json_object_set_new(o, "firstDifference", d);
        }
        if (dig_found) {
            mc_digest_hex(A.cp[dig_tick][dig_stage - 1], hex_a);
            mc_digest_hex(B.cp[dig_tick][dig_stage - 1], hex_b);
            json_object_set_new(o, "firstDigestDivergence",
                                json_pack("{s:I,s:s,s:s,s:s}", "tick", (json_int_t)dig_tick,
                                          "component", mc_stage_name(dig_stage), "a", hex_a, "b",
                                          hex_b));
        }
        json_t *dsum = json_object();
        json_object_set_new(dsum, "actionsA", json_integer((json_int_t)A.n_acts));
        json_object_set_new(dsum, "actionsB", json_integer((json_int_t)B.n_acts));
        json_object_set_new(dsum, "added", added);
        json_object_set_new(dsum, "removed", removed);
        json_object_set_new(dsum, "changed", changed);
        added = removed = changed = NULL;
        if (first_changed) {
            json_t *fc = act_json(first_changed);
            json_object_set_new(fc, "kind", json_string(first_changed_kind));
            json_object_set_new(dsum, "firstChangedAction", fc);
        }
        json_object_set_new(o, "decisions", dsum);
        json_object_set_new(o, "reproduce", json_string(repro));
        mc_json_print_line(o);
    } else {
        printf("microcloud replay diff %s %s, build %s\n", A.path, B.path, mc_trace_build_id());
        printf("  A: scenario %s, seed %" PRIu64 ", approval %s, %" PRIu64
               " records, last tick %" PRIu64 "\n",
               nz(ha->scenario), ha->seed, nz(ha->approval_mode), A.records, A.last_tick);
        printf("  B: scenario %s, seed %" PRIu64 ", approval %s, %" PRIu64
               " records, last tick %" PRIu64 "\n",
               nz(hb->scenario), hb->seed, nz(hb->approval_mode), B.records, B.last_tick);
        size_t i;
        json_t *e;
        json_array_foreach(hdiff, i, e)
        {
            printf("  header %s differs%s", json_string_value(json_object_get(e, "field")),
                   json_is_true(json_object_get(e, "differentRun")) ? ""
                                                                    : " (not part of the run)");
            json_t *va = json_object_get(e, "a");
            if (json_is_string(va) && json_string_length(va))
                printf(": %s | %s", json_string_value(va),
                       json_string_value(json_object_get(e, "b")));
            else if (json_is_integer(va))
                printf(": %lld | %lld", (long long)json_integer_value(va),
                       (long long)json_integer_value(json_object_get(e, "b")));
            printf("\n");
        }
        if (!differ) {
            printf("identical: the same run (%" PRIu64 " records)\n", A.records);
        } else {
            if (fd.found) {
                printf("first difference at record %" PRIu64 ": tick %" PRIu64
                       ", %s, producer_seq %" PRIu64 "\n",
                       fd.index, fd.has_a ? fd.tick_a : fd.tick_b, fd.has_a ? fd.subj_a : fd.subj_b,
                       fd.has_a ? fd.seq_a : fd.seq_b);
                if (fd.has_a)
                    printf("  A: tick %" PRIu64 " %s %s producer_seq %" PRIu64 "\n", fd.tick_a,
                           mc_stage_name(fd.stage_a), fd.subj_a, fd.seq_a);
                else
                    printf("  A: (no more records)\n");
                if (fd.has_b)
                    printf("  B: tick %" PRIu64 " %s %s producer_seq %" PRIu64 "\n", fd.tick_b,
                           mc_stage_name(fd.stage_b), fd.subj_b, fd.seq_b);
                else
                    printf("  B: (no more records)\n");
                if (fields && json_array_size(fields)) {
                    printf("  field differences (A vs B):\n");
                    mc_msgdiff_print(fields, stdout, "    ", "A", "B");
                }
            }
            if (dig_found) {
                mc_digest_hex(A.cp[dig_tick][dig_stage - 1], hex_a);
                mc_digest_hex(B.cp[dig_tick][dig_stage - 1], hex_b);
                printf("first digest divergence: the %s at tick %" PRIu64 "\n    A %s\n    B %s\n",
                       mc_stage_name(dig_stage), dig_tick, hex_a, hex_b);
            } else if (cp_count_differs) {
                printf(
                    "digests agree where both have checkpoints; the runs have different ticks\n");
            }
        }
        printf("decisions: %zu actions in A, %zu in B; %zu added, %zu removed, %zu changed\n",
               A.n_acts, B.n_acts, n_added, n_removed, n_changed);
        if (first_changed)
            printf("  first changed action (%s): tick %" PRIu64 " %s %s\n", first_changed_kind,
                   first_changed->tick, mc_rulefile_action_type_name(first_changed->type),
                   first_changed->target);
        for (size_t k = 0, shown = 0; k < A.n_acts && shown < max_acts; k++) {
            bool found = false;
            for (size_t j = 0; j < B.n_acts && !found; j++)
                found = same_key(&A.acts[k], &B.acts[j]);
            if (!found) {
                act_print("-", &A.acts[k]);
                shown++;
            }
        }
        for (size_t j = 0, shown = 0; j < B.n_acts && shown < max_acts; j++) {
            bool found = false;
            for (size_t k = 0; k < A.n_acts && !found; k++)
                found = same_key(&A.acts[k], &B.acts[j]);
            if (!found) {
                act_print("+", &B.acts[j]);
                shown++;
            }
        }
        json_array_foreach(changed, i, e)
        {
            printf("  ~ tick %lld %s %s:\n",
                   (long long)json_integer_value(
                       json_object_get(json_object_get(e, "a"), "proposedAtTick")),
                   json_string_value(json_object_get(json_object_get(e, "a"), "type")),
                   json_string_value(json_object_get(json_object_get(e, "a"), "target")));
            for (int side = 0; side < 2; side++) {
                json_t *x = json_object_get(e, side ? "b" : "a");
                json_t *res = json_object_get(x, "result");
                printf("      %s: %s%s%s; reason: %s\n", side ? "B" : "A",
                       json_string_value(json_object_get(x, "outcome")), res ? ", " : "",
                       res ? json_string_value(res) : "",
                       json_string_value(json_object_get(x, "reason")));
            }
        }
        printf("reproduce: %s\n", repro);
    }
    json_decref(hdiff);
    json_decref(added);
    json_decref(removed);
    json_decref(changed);
    json_decref(fields);
    free(fd.pa);
    free(fd.pb);
    run_free(&A);
    run_free(&B);
    return differ ? MC_EXIT_DIVERGED : MC_EXIT_OK;
}
