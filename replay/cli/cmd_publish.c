/* microcloud replay publish: a recorded run back onto JetStream, for the
 * dashboard. Every message is re-stamped replayed = true, which changes its
 * bytes: a published replay is for viewing, never for verification (verify
 * the trace file). */
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "bus/bus.h"
#include "cli.h"
#include "config/config.h"
#include "core/ids.h"
#include "harness/subjects.h"
#include "trace/reader.h"
#include "trace/writer.h"

static void publish_usage(FILE *f)
{
    fprintf(
        f, "usage: microcloud replay publish TRACE [options]\n"
           "\n"
           "Re-publishes the trace's messages into JetStream (NATS_URL, NATS_USER, NATS_PASSWORD,\n"
           "NATS_TOKEN, NATS_NKEY_SEED_FILE) tick by tick, each re-stamped with replayed = true,\n"
           "so the dashboard shows the past run. Re-stamping changes the bytes: what is published\n"
           "is for viewing, not for verification; verify the trace file instead.\n"
           "\n"
           "  --speed N            ticks per second (default 1; 0 = as fast as possible)\n"
           "  --ticks A:B          only ticks A..B\n"
           "  --subject-prefix P   publish on P<subject> (streams capturing P sim.> and P ops.>)\n"
           "  --stream-prefix P    stream names P SIM and P OPS\n"
           "  --json               one JSON object at the end instead of text\n");
}

typedef struct pub_env {
    mc_nats_config nats;
} pub_env;

static const mc_config_var pub_vars[] = {MC_CONFIG_VARS_NATS(pub_env, nats)};

static uint64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void sleep_until(uint64_t t_ms)
{
    uint64_t n = now_ms();
    if (t_ms <= n)
        return;
    uint64_t d = t_ms - n;
    struct timespec ts = {(time_t)(d / 1000), (long)(d % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int mc_cmd_publish(int argc, char **argv)
{
    enum { O_SPEED = 1000, O_TICKS, O_SPFX, O_STPFX, O_JSON, O_HELP };
    static const struct option opts[] = {{"speed", required_argument, 0, O_SPEED},
                                         {"ticks", required_argument, 0, O_TICKS},
                                         {"subject-prefix", required_argument, 0, O_SPFX},
                                         {"stream-prefix", required_argument, 0, O_STPFX},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    double speed = 1.0;
    uint64_t lo = 0, hi = UINT64_MAX;
    const char *subject_prefix = "", *stream_prefix = NULL;
    bool json = false;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_SPEED: {
            char *end;
            speed = strtod(optarg, &end);
            if (*end || !(speed >= 0) || speed > 1e6) {
                fprintf(stderr, "microcloud replay publish: --speed: expected 0..1000000\n");
                return MC_EXIT_USAGE;
            }
            break;
        }
        case O_TICKS: {
            char *end;
            const char *colon = strchr(optarg, ':');
            if (!colon) {
                lo = hi = strtoull(optarg, &end, 10);
            } else {
                if (colon != optarg)
                    lo = strtoull(optarg, NULL, 10);
                if (colon[1])
                    hi = strtoull(colon + 1, NULL, 10);
            }
            break;
        }
        case O_SPFX: subject_prefix = optarg; break;
        case O_STPFX: stream_prefix = optarg; break;
        case O_JSON: json = true; break;
        case O_HELP:
        case 'h': publish_usage(stdout); return MC_EXIT_OK;
        default: publish_usage(stderr); return MC_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "microcloud replay publish: expected one TRACE (try --help)\n");
        return MC_EXIT_USAGE;
    }
    const char *path = argv[optind];
    mc_error err = {0};
    pub_env env;
    memset(&env, 0, sizeof env);
    if (mc_config_load(pub_vars, sizeof pub_vars / sizeof pub_vars[0], &env, NULL, NULL, &err) !=
        MC_OK) {
        fprintf(stderr, "microcloud replay publish: %s\n", err.msg);
        return MC_EXIT_USAGE;
    }
    mc_trace_reader *r = NULL;
    if (mc_trace_reader_open(path, NULL, &r, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay publish: %s\n", err.msg);
        return MC_EXIT_DAMAGED;
    }
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(r);
    mc_bus_options bo;
    memset(&bo, 0, sizeof bo);
    bo.name = "microcloud-replay-publish";
    bo.subject_prefix = subject_prefix[0] ? subject_prefix : NULL;
    bo.stream_prefix = stream_prefix;
    mc_bus *bus = NULL;
    if (mc_bus_open(NULL, &env.nats, &bo, &bus, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay publish: %s\n", err.msg);
        mc_trace_reader_free(r);
        return MC_EXIT_DAMAGED;
    }
    /* Message ids of a replay must not collide with the live run's (which
     * JetStream would drop as duplicates) nor with an earlier replay's. */
    char id_run[96];
    uint64_t started = now_ms();
    snprintf(id_run, sizeof id_run, "replay@%" PRIu64 ":%s", started, h->run_id ? h->run_id : "");
    if (!json)
        printf("microcloud replay publish %s: scenario %s, seed %" PRIu64
               ", run %s, build %s, speed %g "
               "ticks/s\nreproduce: %s replay publish %s --speed %g\n",
               path, h->scenario, h->seed, h->run_id, mc_trace_build_id(), speed, mc_prog, path,
               speed);
    uint64_t published = 0, ticks = 0, cur_tick = UINT64_MAX, first_tick_ms = started;
    int rc = MC_EXIT_OK;
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (;;) {
        mc_trace_record rec;
        if (mc_trace_reader_next(r, &rec, &err) != MC_OK) {
            fprintf(stderr, "microcloud replay publish: damaged: %s\n", err.msg);
            rc = MC_EXIT_DAMAGED;
            break;
        }
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        if (rec.kind != MC_TRACE_KIND_RECORD || rec.tick < lo || rec.tick > hi)
            continue;
        if (rec.tick != cur_tick) {
            if (cur_tick == UINT64_MAX)
                first_tick_ms = now_ms();
            else if (speed > 0)
                sleep_until(first_tick_ms + (uint64_t)((double)ticks * 1000.0 / speed));
            cur_tick = rec.tick;
            ticks++;
        }
        ProtobufCMessage *m = mc_subject_unpack(rec.subject, rec.payload, rec.payload_len);
        Common__V1__Stamp *stamp = mc_message_stamp(m);
        if (!m || !stamp) {
            fprintf(stderr,
                    "microcloud replay publish: record %" PRIu64 " (%s) does not decode; skipped\n",
                    rec.sequence, rec.subject);
            if (m)
                protobuf_c_message_free_unpacked(m, NULL);
            continue;
        }
        stamp->replayed = true;
        size_t len = protobuf_c_message_get_packed_size(m);
        if (len > cap) {
            uint8_t *nb = realloc(buf, len);
            if (!nb) {
                protobuf_c_message_free_unpacked(m, NULL);
                fprintf(stderr, "microcloud replay publish: out of memory\n");
                rc = MC_EXIT_DAMAGED;
                break;
            }
            buf = nb;
            cap = len;
        }
        protobuf_c_message_pack(m, buf);
        protobuf_c_message_free_unpacked(m, NULL);
        char subject[MC_TRACE_NAME_MAX + 128];
        snprintf(subject, sizeof subject, "%s%s", subject_prefix, rec.subject);
        char msg_id[256];
        mc_id_msg(msg_id, sizeof msg_id, id_run, rec.subject, rec.tick, rec.producer_seq);
        if (mc_bus_publish_async(bus, subject, buf, len, msg_id, &err) != MC_OK) {
            fprintf(stderr, "microcloud replay publish: %s: %s\n", subject, err.msg);
            rc = MC_EXIT_DAMAGED;
            break;
        }
        published++;
    }
    if (mc_bus_flush(bus, 30000, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay publish: flush: %s\n", err.msg);
        rc = MC_EXIT_DAMAGED;
    }
    uint64_t acked = mc_bus_published(bus), dups = mc_bus_publish_duplicates(bus),
             failures = mc_bus_publish_failures(bus);
    if (json) {
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:b}", "command", "replay publish",
                      "trace", path, "scenario", h->scenario ? h->scenario : "", "seed",
                      (json_int_t)h->seed, "build", mc_trace_build_id(), "ticks", (json_int_t)ticks,
                      "published", (json_int_t)published, "acked", (json_int_t)acked, "duplicates",
                      (json_int_t)dups, "failures", (json_int_t)failures, "ok", rc == MC_EXIT_OK);
        mc_json_print_line(o);
    } else {
        printf("published %" PRIu64 " messages of %" PRIu64 " ticks (acked %" PRIu64
               ", duplicates %" PRIu64 ", failed %" PRIu64 ")\n",
               published, ticks, acked, dups, failures);
    }
    free(buf);
    mc_bus_free(bus);
    mc_trace_reader_free(r);
    return rc;
}
