/* microcloud sim: the closed loop, recorded. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cli.h"
#include "core/digest.h"
#include "harness/loop.h"
#include "harness/scorecard.h"
#include "harness/script.h"
#include "trace/writer.h"

static void sim_usage(FILE *f)
{
    fprintf(
        f,
        "usage: microcloud sim --scenario NAME|FILE [options]\n"
        "\n"
        "Runs the engine, detector, agent and orchestrator cores in one process in lockstep\n"
        "(no NATS, no PostgreSQL), records every message in a trace and prints a scorecard.\n"
        "\n"
        "  --scenario NAME|FILE    scenario name (looked up in the scenario folder) or a file\n"
        "  --scenario-dir DIR      scenario folder (default $MC_SCENARIO_DIR or %s)\n"
        "  --seed N                seed (default 42)\n"
        "  --ticks N               ticks to run (default 600)\n"
        "  --approval MODE         auto | manual | auto-low-risk (default auto)\n"
        "  --decisions FILE        scripted human decisions (traces/README.md)\n"
        "  --trace FILE            write the trace here (refuses to overwrite without --force)\n"
        "  --force                 overwrite an existing trace file\n"
        "  --start-time MS         header start time, ms since the epoch (default: now);\n"
        "                          fix it to make two recordings byte-identical\n"
        "  --nodes N, --services N topology size knobs (generated nodes/services added)\n"
        "  --setting NAME=VALUE    a core setting as the services read it from their\n"
        "                          environment (replay/harness/setup.h), e.g.\n"
        "                          ACTION_EXPIRY_TICKS=600 (repeatable)\n"
        "  --override K=V          change a rule: detector.<rule>[.<field>]=V or\n"
        "                          decider.<rule>.<field>=V (repeatable)\n"
        "  --detector-rules FILE   detection rules file (pipeline/detector/RULES.md)\n"
        "  --decider-rules FILE    decision rules file (pipeline/decider/RULES.md)\n"
        "  --json                  print one JSON object instead of text\n"
        "  --quiet                 no scorecard in text mode\n"
        "\n"
        "TRACE_SIGNING_KEY (a key file, replay/trace/FORMAT.md) signs the trace.\n",
        MC_DEFAULT_SCENARIO_DIR);
}

typedef struct sim_sink {
    mc_trace_writer *w;
    mc_scorecard *score;
} sim_sink;

static mc_status sink_record(void *ctx, uint64_t tick, uint32_t stage, const char *subject,
                             const char *producer, uint64_t seq, const uint8_t *p, size_t len,
                             mc_error *err)
{
    sim_sink *s = ctx;
    if (s->w) {
        mc_status st =
            mc_trace_writer_append(s->w, tick, stage, subject, producer, seq, p, len, err);
        if (st != MC_OK)
            return st;
    }
    return mc_scorecard_record(s->score, tick, stage, subject, producer, seq, p, len, err);
}

static mc_status sink_checkpoint(void *ctx, uint64_t tick, const mc_trace_digest *d, size_t n,
                                 mc_error *err)
{
    sim_sink *s = ctx;
    if (s->w) {
        mc_status st = mc_trace_writer_checkpoint(s->w, tick, d, n, err);
        if (st != MC_OK)
            return st;
    }
    mc_scorecard_checkpoint(s->score, tick, d, n);
    return MC_OK;
}

static int parse_u64(const char *flag, const char *v, uint64_t *out)
{
    char *end = NULL;
    if (!v || !*v || *v == '-') {
        fprintf(stderr, "microcloud sim: %s: expected a number, got \"%s\"\n", flag, v ? v : "");
        return -1;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (*end) {
        fprintf(stderr, "microcloud sim: %s: expected a number, got \"%s\"\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

int mc_cmd_sim(int argc, char **argv)
{
    enum {
        O_SCEN = 1000,
        O_DIR,
        O_SEED,
        O_TICKS,
        O_APPR,
        O_DEC,
        O_TRACE,
        O_FORCE,
        O_START,
        O_NODES,
        O_SVCS,
        O_OVR,
        O_DRULES,
        O_ARULES,
        O_JSON,
        O_QUIET,
        O_SETTING,
        O_HELP
    };
    static const struct option opts[] = {{"scenario", required_argument, 0, O_SCEN},
                                         {"scenario-dir", required_argument, 0, O_DIR},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"ticks", required_argument, 0, O_TICKS},
                                         {"approval", required_argument, 0, O_APPR},
                                         {"decisions", required_argument, 0, O_DEC},
                                         {"trace", required_argument, 0, O_TRACE},
                                         {"force", no_argument, 0, O_FORCE},
                                         {"start-time", required_argument, 0, O_START},
                                         {"nodes", required_argument, 0, O_NODES},
                                         {"services", required_argument, 0, O_SVCS},
                                         {"override", required_argument, 0, O_OVR},
                                         {"detector-rules", required_argument, 0, O_DRULES},
                                         {"decider-rules", required_argument, 0, O_ARULES},
                                         {"json", no_argument, 0, O_JSON},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"setting", required_argument, 0, O_SETTING},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *scenario = NULL, *dir = mc_default_scenario_dir(), *approval = "auto";
    const char *decisions = NULL, *trace = NULL, *drules = NULL, *arules = NULL;
    uint64_t seed = 42, ticks = 600, start_ms = 0, nodes = 0, services = 0;
    bool force = false, json = false, quiet = false, have_start = false;
    const char *overrides[64], *settings[MC_SETTING_COUNT * 4];
    size_t n_over = 0, n_set = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_SCEN: scenario = optarg; break;
        case O_DIR: dir = optarg; break;
        case O_SEED:
            if (parse_u64("--seed", optarg, &seed))
                return MC_EXIT_USAGE;
            break;
        case O_TICKS:
            if (parse_u64("--ticks", optarg, &ticks))
                return MC_EXIT_USAGE;
            break;
        case O_APPR: approval = optarg; break;
        case O_DEC: decisions = optarg; break;
        case O_TRACE: trace = optarg; break;
        case O_FORCE: force = true; break;
        case O_START:
            if (parse_u64("--start-time", optarg, &start_ms))
                return MC_EXIT_USAGE;
            have_start = true;
            break;
        case O_NODES:
            if (parse_u64("--nodes", optarg, &nodes))
                return MC_EXIT_USAGE;
            break;
        case O_SVCS:
            if (parse_u64("--services", optarg, &services))
                return MC_EXIT_USAGE;
            break;
        case O_OVR:
            if (n_over == 64) {
                fprintf(stderr, "microcloud sim: at most 64 --override flags\n");
                return MC_EXIT_USAGE;
            }
            overrides[n_over++] = optarg;
            break;
        case O_SETTING:
            if (n_set == sizeof settings / sizeof settings[0]) {
                fprintf(stderr, "microcloud sim: too many --setting flags\n");
                return MC_EXIT_USAGE;
            }
            settings[n_set++] = optarg;
            break;
        case O_DRULES: drules = optarg; break;
        case O_ARULES: arules = optarg; break;
        case O_JSON: json = true; break;
        case O_QUIET: quiet = true; break;
        case O_HELP:
        case 'h': sim_usage(stdout); return MC_EXIT_OK;
        default: sim_usage(stderr); return MC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "microcloud sim: unexpected argument \"%s\"\n", argv[optind]);
        return MC_EXIT_USAGE;
    }
    if (!scenario) {
        fprintf(stderr, "microcloud sim: --scenario is required (try --help)\n");
        return MC_EXIT_USAGE;
    }
    if (ticks == 0 || ticks > 10000000 || nodes > UINT32_MAX || services > UINT32_MAX) {
        fprintf(stderr, "microcloud sim: --ticks must be 1..10000000\n");
        return MC_EXIT_USAGE;
    }

    mc_error err = {0};
    static mc_run_setup setup; /* large (rule tables): not on the stack */
    mc_setup_init(&setup);
    mc_script script = {0};
    mc_scorecard score;
    memset(&score, 0, sizeof score);
    static mc_loop loop;
    bool loop_ok = false;
    mc_trace_writer *w = NULL;
    int rc = MC_EXIT_DAMAGED;

    setup.seed = seed;
    setup.node_count = (uint32_t)nodes;
    setup.service_count = (uint32_t)services;
    if (mc_approval_mode_parse(approval, &setup.approval_mode, &err) != MC_OK) {
        fprintf(stderr, "microcloud sim: --approval: %s\n", err.msg);
        mc_setup_deinit(&setup);
        return MC_EXIT_USAGE;
    }
    if (mc_setup_load_scenario(&setup, dir, scenario, &err) != MC_OK ||
        mc_setup_rules_files(&setup, drules, arules, &err) != MC_OK)
        goto fail;
    for (size_t i = 0; i < n_over; i++)
        if (mc_setup_override(&setup, overrides[i], &err) != MC_OK)
            goto fail;
    for (size_t i = 0; i < n_set; i++)
        if (mc_setup_setting(&setup, settings[i], &err) != MC_OK) {
            err.status = MC_ERR_INVALID; /* a usage error */
            goto fail;
        }
    mc_setup_digests(&setup);
    char set_str[MC_SETTING_COUNT][MC_SETUP_SETTING_MAX];
    char *set_ptr[MC_SETTING_COUNT];
    size_t n_set_str = mc_setup_settings_format(&setup, set_str);
    for (size_t i = 0; i < n_set_str; i++)
        set_ptr[i] = set_str[i];
    if (decisions) {
        char *buf = NULL;
        size_t len = 0;
        if (mc_read_file(decisions, 16u << 20, &buf, &len, &err) != MC_OK)
            goto fail;
        mc_status st = mc_script_parse(buf, len, decisions, &script, &err);
        free(buf);
        if (st != MC_OK)
            goto fail;
    }
    if (mc_loop_init(&loop, &setup, &script, &err) != MC_OK)
        goto fail;
    loop_ok = true;
    if (mc_scorecard_init(&score, &setup.sc, &err) != MC_OK)
        goto fail;

    if (!have_start) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        start_ms = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
    }
    char spec[MC_SETUP_SPEC_MAX];
    mc_setup_spec_format(&setup, spec);

    /* The reproduce command: everything that determines the run. */
    char repro[2048] = "";
    char num[32];
    mc_shell_append(repro, sizeof repro, mc_prog);
    mc_shell_append(repro, sizeof repro, "sim");
    mc_shell_append(repro, sizeof repro, "--scenario");
    mc_shell_append(repro, sizeof repro, scenario);
    if (strcmp(dir, mc_default_scenario_dir()) != 0) {
        mc_shell_append(repro, sizeof repro, "--scenario-dir");
        mc_shell_append(repro, sizeof repro, dir);
    }
    snprintf(num, sizeof num, "%" PRIu64, seed);
    mc_shell_append(repro, sizeof repro, "--seed");
    mc_shell_append(repro, sizeof repro, num);
    snprintf(num, sizeof num, "%" PRIu64, ticks);
    mc_shell_append(repro, sizeof repro, "--ticks");
    mc_shell_append(repro, sizeof repro, num);
    mc_shell_append(repro, sizeof repro, "--approval");
    mc_shell_append(repro, sizeof repro, mc_approval_mode_name(setup.approval_mode));
    if (nodes) {
        snprintf(num, sizeof num, "%" PRIu64, nodes);
        mc_shell_append(repro, sizeof repro, "--nodes");
        mc_shell_append(repro, sizeof repro, num);
    }
    if (services) {
        snprintf(num, sizeof num, "%" PRIu64, services);
        mc_shell_append(repro, sizeof repro, "--services");
        mc_shell_append(repro, sizeof repro, num);
    }
    for (size_t i = 0; i < n_set_str; i++) {
        mc_shell_append(repro, sizeof repro, "--setting");
        mc_shell_append(repro, sizeof repro, set_str[i]);
    }
    if (decisions) {
        mc_shell_append(repro, sizeof repro, "--decisions");
        mc_shell_append(repro, sizeof repro, decisions);
    }
    {
        size_t n = strlen(repro);
        snprintf(repro + n, sizeof repro - n, "%s", setup.flags);
    }
    if (trace) {
        mc_shell_append(repro, sizeof repro, "--trace");
        mc_shell_append(repro, sizeof repro, trace);
        snprintf(num, sizeof num, "%" PRIu64, start_ms);
        mc_shell_append(repro, sizeof repro, "--start-time");
        mc_shell_append(repro, sizeof repro, num);
    }

    if (!json) {
        printf("microcloud sim: scenario %s, seed %" PRIu64 ", %" PRIu64
               " ticks, approval %s, build %s\n",
               spec, seed, ticks, mc_approval_mode_name(setup.approval_mode), mc_trace_build_id());
        printf("reproduce: %s\n", repro);
        fflush(stdout);
    }

    if (trace) {
        Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
        h.seed = seed;
        h.scenario = spec;
        h.topology_digest.data = setup.topology_digest;
        h.topology_digest.len = sizeof setup.topology_digest;
        h.config_digest.data = setup.config_digest;
        h.config_digest.len = sizeof setup.config_digest;
        h.start_time_unix_ms = (int64_t)start_ms;
        h.run_id = (char *)mc_engine_run_id(&loop.engine);
        h.mode = "lockstep";
        h.approval_mode = (char *)mc_approval_mode_name(setup.approval_mode);
        h.n_settings = n_set_str;
        h.settings = set_ptr;
        mc_trace_writer_opts wo = {0};
        wo.overwrite = force;
        const char *key = getenv("TRACE_SIGNING_KEY");
        wo.signing_key_path = key && *key ? key : NULL;
        if (mc_trace_writer_open(trace, &h, &wo, &w, &err) != MC_OK)
            goto fail;
    }

    sim_sink ss = {w, &score};
    mc_loop_sink sink = {sink_record, sink_checkpoint, &ss};
    mc_progress prog;
    mc_progress_start(&prog, "sim", ticks);
    for (uint64_t t = 0; t < ticks; t++) {
        if (mc_loop_step(&loop, &sink, &err) != MC_OK) {
            mc_progress_end(&prog);
            mc_error_wrap(&err, "tick %" PRIu64, t + 1);
            goto fail;
        }
        mc_progress_update(&prog, t + 1);
    }
    mc_progress_end(&prog);
    mc_trace_footer_info fi = {0};
    if (w) {
        mc_status st = mc_trace_writer_close(&w, &fi, &err);
        if (st != MC_OK)
            goto fail;
    }
    mc_scorecard_finish(&score);

    char hash[2 * MC_DIGEST_BYTES + 1];
    mc_scorecard_run_hash(&score, hash);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "command", json_string("sim"));
        json_object_set_new(o, "scenario", json_string(spec));
        json_object_set_new(o, "seed", json_integer((json_int_t)seed));
        json_object_set_new(o, "ticks", json_integer((json_int_t)ticks));
        json_object_set_new(o, "approvalMode",
                            json_string(mc_approval_mode_name(setup.approval_mode)));
        json_object_set_new(o, "build", json_string(mc_trace_build_id()));
        json_object_set_new(o, "runId", json_string(mc_engine_run_id(&loop.engine)));
        json_object_set_new(o, "reproduce", json_string(repro));
        json_object_set_new(o, "runHash", json_string(hash));
        if (trace)
            json_object_set_new(o, "trace",
                                json_pack("{s:s,s:I,s:I,s:I,s:b}", "path", trace, "records",
                                          (json_int_t)fi.record_count, "checkpoints",
                                          (json_int_t)fi.checkpoint_count, "bytes",
                                          (json_int_t)fi.bytes, "signed", fi.is_signed));
        json_object_set_new(o, "inputErrors", json_integer((json_int_t)loop.input_errors));
        json_t *dec = json_array();
        for (size_t i = 0; i < script.count; i++)
            json_array_append_new(dec, json_pack("{s:i,s:I,s:i}", "line", (int)script.items[i].line,
                                                 "tick", (json_int_t)script.items[i].tick,
                                                 "applied", (int)script.items[i].applied));
        json_object_set_new(o, "decisions", dec);
        json_object_set_new(o, "scorecard", mc_scorecard_json(&score));
        mc_json_print_line(o);
    } else {
        if (trace)
            printf("trace: %s (%" PRIu64 " records, %" PRIu64 " checkpoints, %" PRIu64
                   " bytes%s)\n",
                   trace, fi.record_count, fi.checkpoint_count, fi.bytes,
                   fi.is_signed ? ", signed" : "");
        for (size_t i = 0; i < script.count; i++)
            if (script.items[i].applied == 0)
                printf("note: decision at %s line %u (tick %" PRIu64
                       ") matched no pending action\n",
                       decisions, script.items[i].line, script.items[i].tick);
        if (loop.input_errors)
            printf("note: %" PRIu64 " inputs refused by a core; last: %s\n", loop.input_errors,
                   loop.last_input_error);
        if (!quiet)
            mc_scorecard_print(&score, stdout);
        else
            printf("run hash: %s\n", hash);
    }
    rc = MC_EXIT_OK;
    goto out;
fail:
    fprintf(stderr, "microcloud sim: %s\n", err.msg);
    rc = err.status == MC_ERR_EXISTS || err.status == MC_ERR_NOT_FOUND ||
                 err.status == MC_ERR_PARSE || err.status == MC_ERR_INVALID
             ? MC_EXIT_USAGE
             : MC_EXIT_DAMAGED;
out:
    mc_trace_writer_free(w);
    mc_scorecard_deinit(&score);
    if (loop_ok)
        mc_loop_deinit(&loop);
    mc_script_free(&script);
    mc_setup_deinit(&setup);
    return rc;
}
