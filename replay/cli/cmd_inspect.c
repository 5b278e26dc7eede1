/* microcloud replay inspect: a trace's records as JSON lines, or a summary. */
#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/digest.h"
#include "harness/msgdiff.h"
#include "harness/subjects.h"
#include "json/json.h"
#include "trace/reader.h"
#include "trace/writer.h"

static void inspect_usage(FILE *f)
{
    fprintf(
        f,
        "usage: microcloud replay inspect TRACE [options]\n"
        "\n"
        "Prints the records as JSON lines: {\"seq\",\"tick\",\"stage\",\"subject\",\"producer\",\n"
        "\"producerSeq\",\"bytes\",\"payload\"} with the payload as proto3 JSON of the subject's\n"
        "message type (sim.metrics: sim.v1.MetricSnapshot, ops.actions: ops.v1.Action, ...).\n"
        "\n"
        "  --ticks A:B        only ticks A..B (either side may be left out: 100:, :200, 150)\n"
        "  --subject GLOB     only subjects matching GLOB (e.g. 'ops.*'; repeatable)\n"
        "  --checkpoints      also print checkpoints {\"checkpoint\":tick,\"digests\":{...}}\n"
        "  --header           print the header first {\"header\":{...}}\n"
        "  --summary          counts per subject and per tick range instead of records\n"
        "  --bucket N         tick range size of the summary (default 100)\n"
        "  --json             the summary as JSON\n"
        "Exit: 0, or 2 when the trace is damaged or torn (records before the damage are "
        "printed).\n");
}

static int parse_ticks(const char *s, uint64_t *lo, uint64_t *hi)
{
    char *end;
    const char *colon = strchr(s, ':');
    *lo = 0;
    *hi = UINT64_MAX;
    if (!colon) {
        *lo = *hi = strtoull(s, &end, 10);
        return *s && !*end ? 0 : -1;
    }
    if (colon != s) {
        *lo = strtoull(s, &end, 10);
        if (end != colon)
            return -1;
    }
    if (colon[1]) {
        *hi = strtoull(colon + 1, &end, 10);
        if (*end)
            return -1;
    }
    return *lo <= *hi ? 0 : -1;
}

typedef struct bucket {
    uint64_t first;
    uint64_t records, bytes;
    uint64_t by_subject[16];
} bucket;

int mc_cmd_inspect(int argc, char **argv)
{
    enum { O_TICKS = 1000, O_SUBJ, O_CP, O_HDR, O_SUM, O_BUCKET, O_JSON, O_HELP };
    static const struct option opts[] = {{"ticks", required_argument, 0, O_TICKS},
                                         {"subject", required_argument, 0, O_SUBJ},
                                         {"checkpoints", no_argument, 0, O_CP},
                                         {"header", no_argument, 0, O_HDR},
                                         {"summary", no_argument, 0, O_SUM},
                                         {"bucket", required_argument, 0, O_BUCKET},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    uint64_t lo = 0, hi = UINT64_MAX, bsize = 100;
    const char *globs[32];
    size_t n_globs = 0;
    bool cps = false, hdr = false, summary = false, json = false;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_TICKS:
            if (parse_ticks(optarg, &lo, &hi)) {
                fprintf(stderr, "microcloud replay inspect: --ticks: expected A:B, got \"%s\"\n",
                        optarg);
                return MC_EXIT_USAGE;
            }
            break;
        case O_SUBJ:
            if (n_globs == 32) {
                fprintf(stderr, "microcloud replay inspect: at most 32 --subject flags\n");
                return MC_EXIT_USAGE;
            }
            globs[n_globs++] = optarg;
            break;
        case O_CP: cps = true; break;
        case O_HDR: hdr = true; break;
        case O_SUM: summary = true; break;
        case O_BUCKET:
            bsize = strtoull(optarg, NULL, 10);
            if (bsize == 0) {
                fprintf(stderr, "microcloud replay inspect: --bucket must be positive\n");
                return MC_EXIT_USAGE;
            }
            break;
        case O_JSON: json = true; break;
        case O_HELP:
        case 'h': inspect_usage(stdout); return MC_EXIT_OK;
        default: inspect_usage(stderr); return MC_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "microcloud replay inspect: expected one TRACE (try --help)\n");
        return MC_EXIT_USAGE;
    }
    const char *path = argv[optind];
    mc_error err = {0};
    mc_trace_reader *r = NULL;
    if (mc_trace_reader_open(path, NULL, &r, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay inspect: %s\n", err.msg);
        return MC_EXIT_DAMAGED;
    }
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(r);
    if (!summary)
        fprintf(stderr,
                "microcloud replay inspect %s: scenario %s, seed %" PRIu64 ", run %s, build %s\n",
                path, h->scenario, h->seed, h->run_id, mc_trace_build_id());
    if (hdr && !summary) {
        json_t *hj = NULL;
        if (mc_json_from_message(&h->base, &hj, &err) == MC_OK) {
            json_t *line = json_object();
            json_object_set_new(line, "header", hj);
            mc_json_print_line(line);
        }
    }
    /* Summary state: subjects known to the harness by index, others
     * counted together. */
    static const char *const subj_names[] = {"sim.metrics",
                                             "sim.events",
                                             "sim.watermark",
                                             "ops.incidents",
                                             "ops.watermark.detector",
                                             "ops.actions",
                                             "ops.watermark.agent",
                                             "ops.decisions",
                                             "ops.commands",
                                             "ops.watermark.orchestrator"};
    enum { NSUBJ = 10 };
    uint64_t tot_rec[NSUBJ + 1] = {0}, tot_bytes[NSUBJ + 1] = {0};
    bucket *buckets = NULL;
    size_t nb = 0, capb = 0;
    uint64_t records = 0, shown = 0, checkpoints = 0, first_tick = UINT64_MAX, last_tick = 0,
             run_last = 0;
    int rc = MC_EXIT_OK;
    for (;;) {
        mc_trace_record rec;
        if (mc_trace_reader_next(r, &rec, &err) != MC_OK) {
            fprintf(stderr, "microcloud replay inspect: damaged: %s\n", err.msg);
            rc = MC_EXIT_DAMAGED;
            break;
        }
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            checkpoints++;
            uint64_t t = rec.checkpoint->tick;
            if (!cps || summary || t < lo || t > hi)
                continue;
            json_t *line = json_object();
            json_object_set_new(line, "checkpoint", json_integer((json_int_t)t));
            json_t *d = json_object();
            for (size_t i = 0; i < rec.checkpoint->n_digests; i++) {
                const Trace__V1__ComponentDigest *cd = rec.checkpoint->digests[i];
                char hex[65] = "";
                if (cd->digest.len == 32)
                    mc_digest_hex(cd->digest.data, hex);
                json_object_set_new(d, mc_stage_name(cd->stage), json_string(hex));
            }
            json_object_set_new(line, "digests", d);
            mc_json_print_line(line);
            continue;
        }
        if (rec.kind != MC_TRACE_KIND_RECORD)
            continue;
        records++;
        if (rec.tick > run_last)
            run_last = rec.tick;
        if (rec.tick < lo || rec.tick > hi)
            continue;
        if (n_globs) {
            bool ok = false;
            for (size_t i = 0; i < n_globs && !ok; i++)
                ok = fnmatch(globs[i], rec.subject, 0) == 0;
            if (!ok)
                continue;
        }
        shown++;
        if (rec.tick < first_tick)
            first_tick = rec.tick;
        if (rec.tick > last_tick)
            last_tick = rec.tick;
        if (summary) {
            size_t si = NSUBJ;
            for (size_t i = 0; i < NSUBJ; i++)
                if (strcmp(subj_names[i], rec.subject) == 0)
                    si = i;
            tot_rec[si]++;
            tot_bytes[si] += rec.payload_len;
            uint64_t first = rec.tick / bsize * bsize;
            if (nb == 0 || buckets[nb - 1].first != first) {
                if (nb == capb) {
                    capb = capb ? capb * 2 : 64;
                    bucket *nbk = realloc(buckets, capb * sizeof *nbk);
                    if (!nbk) {
                        fprintf(stderr, "microcloud replay inspect: out of memory\n");
                        rc = MC_EXIT_DAMAGED;
                        break;
                    }
                    buckets = nbk;
                }
                memset(&buckets[nb], 0, sizeof buckets[nb]);
                buckets[nb++].first = first;
            }
            bucket *b = &buckets[nb - 1];
            b->records++;
            b->bytes += rec.payload_len;
            if (si < NSUBJ)
                b->by_subject[si]++;
            continue;
        }
        json_t *line = json_object();
        json_object_set_new(line, "seq", json_integer((json_int_t)rec.sequence));
        json_object_set_new(line, "tick", json_integer((json_int_t)rec.tick));
        json_object_set_new(line, "stage", json_string(mc_stage_name(rec.stage)));
        json_object_set_new(line, "subject", json_string(rec.subject));
        json_object_set_new(line, "producer", json_string(rec.producer));
        json_object_set_new(line, "producerSeq", json_integer((json_int_t)rec.producer_seq));
        json_object_set_new(line, "bytes", json_integer((json_int_t)rec.payload_len));
        ProtobufCMessage *m = mc_subject_unpack(rec.subject, rec.payload, rec.payload_len);
        json_t *pj = NULL;
        if (m && mc_json_from_message(m, &pj, &err) == MC_OK)
            json_object_set_new(line, "payload", pj);
        else
            json_object_set_new(
                line, "payloadError",
                json_string(m ? err.msg : "the payload does not decode as the subject's type"));
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        mc_json_print_line(line);
    }
    mc_trace_state state = mc_trace_reader_state(r);
    if (rc == MC_EXIT_OK && state == MC_TRACE_TORN) {
        const mc_trace_problem *p = mc_trace_reader_problem(r);
        fprintf(stderr, "microcloud replay inspect: torn: %s\n", p ? p->what : "no footer");
        rc = MC_EXIT_DAMAGED;
    }
    char sim_cmd[1024];
    mc_sim_command(h, run_last, sim_cmd, sizeof sim_cmd);
    if (!summary)
        fprintf(stderr, "recorded by: %s\n", sim_cmd);
    if (summary) {
        if (json) {
            json_t *o = json_object();
            json_t *hj = NULL;
            if (mc_json_from_message(&h->base, &hj, &err) == MC_OK)
                json_object_set_new(o, "header", hj);
            json_object_set_new(o, "state", json_string(mc_trace_state_name(state)));
            json_object_set_new(o, "recordedBy", json_string(sim_cmd));
            json_object_set_new(o, "records", json_integer((json_int_t)records));
            json_object_set_new(o, "matched", json_integer((json_int_t)shown));
            json_object_set_new(o, "checkpoints", json_integer((json_int_t)checkpoints));
            json_t *bs = json_object();
            for (size_t i = 0; i <= NSUBJ; i++)
                if (tot_rec[i])
                    json_object_set_new(bs, i < NSUBJ ? subj_names[i] : "other",
                                        json_pack("{s:I,s:I}", "records", (json_int_t)tot_rec[i],
                                                  "bytes", (json_int_t)tot_bytes[i]));
            json_object_set_new(o, "bySubject", bs);
            json_t *ranges = json_array();
            for (size_t i = 0; i < nb; i++) {
                json_t *bj = json_pack(
                    "{s:I,s:I,s:I,s:I}", "firstTick", (json_int_t)buckets[i].first, "lastTick",
                    (json_int_t)(buckets[i].first + bsize - 1), "records",
                    (json_int_t)buckets[i].records, "bytes", (json_int_t)buckets[i].bytes);
                json_t *sj = json_object();
                for (size_t k = 0; k < NSUBJ; k++)
                    if (buckets[i].by_subject[k])
                        json_object_set_new(sj, subj_names[k],
                                            json_integer((json_int_t)buckets[i].by_subject[k]));
                json_object_set_new(bj, "bySubject", sj);
                json_array_append_new(ranges, bj);
            }
            json_object_set_new(o, "byTickRange", ranges);
            mc_json_print_line(o);
        } else {
            printf("trace %s: scenario %s, seed %" PRIu64 ", run %s, approval %s, build %s\n", path,
                   h->scenario, h->seed, h->run_id, h->approval_mode, h->build_id);
            printf("state %s: %" PRIu64 " records (%" PRIu64 " matched), %" PRIu64 " checkpoints",
                   mc_trace_state_name(state), records, shown, checkpoints);
            if (shown)
                printf(", ticks %" PRIu64 "..%" PRIu64, first_tick, last_tick);
            printf("\nrecorded by: %s\n\nper subject:\n", sim_cmd);
            for (size_t i = 0; i <= NSUBJ; i++)
                if (tot_rec[i])
                    printf("  %-28s %10" PRIu64 " records %12" PRIu64 " bytes\n",
                           i < NSUBJ ? subj_names[i] : "(other)", tot_rec[i], tot_bytes[i]);
            printf("\nper %" PRIu64 " ticks:\n", bsize);
            for (size_t i = 0; i < nb; i++) {
                printf("  %6" PRIu64 "..%-6" PRIu64 " %8" PRIu64 " records:", buckets[i].first,
                       buckets[i].first + bsize - 1, buckets[i].records);
                for (size_t k = 3; k < NSUBJ; k++)
                    if (buckets[i].by_subject[k] &&
                        strncmp(subj_names[k], "ops.watermark", 13) != 0)
                        printf(" %s=%" PRIu64, subj_names[k], buckets[i].by_subject[k]);
                printf(" sim.events=%" PRIu64 "\n", buckets[i].by_subject[1]);
            }
        }
    }
    free(buckets);
    mc_trace_reader_free(r);
    return rc;
}
