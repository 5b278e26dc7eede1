/* microcloud replay verify: integrity, then re-drive and compare. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/digest.h"
#include "harness/msgdiff.h"
#include "harness/redrive.h"
#include "harness/scorecard.h"
#include "harness/subjects.h"
#include "trace/keys.h"
#include "trace/writer.h"

static void verify_usage(FILE *f)
{
    fprintf(
        f,
        "usage: microcloud replay verify TRACE [options]\n"
        "\n"
        "Checks the trace's integrity (checksums, hash chain, order, footer, signature), then\n"
        "re-drives the chosen cores with their recorded inputs and compares what they emit\n"
        "with the recorded messages, byte for byte, and their digests with the checkpoints.\n"
        "Exit: 0 identical, 1 diverged, 2 damaged, torn or incompatible.\n"
        "\n"
        "  --component C           engine | detector | agent | orchestrator | all (default all);\n"
        "                          none reads and decodes only\n"
        "  --pubkey FILE           the trace must be signed with this Ed25519 public key\n"
        "  --scenario NAME|FILE    scenario to re-drive the engine with (default: the header's)\n"
        "  --scenario-dir DIR      where to find it (default $MC_SCENARIO_DIR or %s)\n"
        "  --override K=V          change a rule before re-driving (as for sim; repeatable)\n"
        "  --detector-rules FILE   detection rules file\n"
        "  --decider-rules FILE    decision rules file\n"
        "  --max-diffs N           field differences shown (default 20)\n"
        "  --quiet                 no scorecard\n"
        "  --json                  one JSON object instead of text\n",
        MC_DEFAULT_SCENARIO_DIR);
}

typedef struct vprog {
    mc_progress p;
} vprog;

static void on_progress(void *ctx, uint64_t tick, uint64_t offset)
{
    (void)tick;
    mc_progress_update(&((vprog *)ctx)->p, offset);
}

static const char *verdict_name(mc_redrive_verdict v)
{
    return v == MC_REDRIVE_IDENTICAL  ? "identical"
           : v == MC_REDRIVE_DIVERGED ? "diverged"
                                      : "damaged";
}

int mc_cmd_verify(int argc, char **argv)
{
    enum {
        O_COMP = 1000,
        O_PUB,
        O_SCEN,
        O_DIR,
        O_OVR,
        O_DRULES,
        O_ARULES,
        O_MAX,
        O_QUIET,
        O_JSON,
        O_HELP
    };
    static const struct option opts[] = {{"component", required_argument, 0, O_COMP},
                                         {"pubkey", required_argument, 0, O_PUB},
                                         {"scenario", required_argument, 0, O_SCEN},
                                         {"scenario-dir", required_argument, 0, O_DIR},
                                         {"override", required_argument, 0, O_OVR},
                                         {"detector-rules", required_argument, 0, O_DRULES},
                                         {"decider-rules", required_argument, 0, O_ARULES},
                                         {"max-diffs", required_argument, 0, O_MAX},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *component = "all", *pubkey = NULL, *scenario = NULL,
               *dir = mc_default_scenario_dir();
    const char *drules = NULL, *arules = NULL;
    const char *overrides[64];
    size_t n_over = 0, max_diffs = 20;
    bool quiet = false, json = false;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_COMP: component = optarg; break;
        case O_PUB: pubkey = optarg; break;
        case O_SCEN: scenario = optarg; break;
        case O_DIR: dir = optarg; break;
        case O_OVR:
            if (n_over == 64) {
                fprintf(stderr, "microcloud replay verify: at most 64 --override flags\n");
                return MC_EXIT_USAGE;
            }
            overrides[n_over++] = optarg;
            break;
        case O_DRULES: drules = optarg; break;
        case O_ARULES: arules = optarg; break;
        case O_MAX: max_diffs = (size_t)strtoul(optarg, NULL, 10); break;
        case O_QUIET: quiet = true; break;
        case O_JSON: json = true; break;
        case O_HELP:
        case 'h': verify_usage(stdout); return MC_EXIT_OK;
        default: verify_usage(stderr); return MC_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "microcloud replay verify: expected one TRACE (try --help)\n");
        return MC_EXIT_USAGE;
    }
    const char *path = argv[optind];
    unsigned comps = strcmp(component, "none") == 0 ? 0 : mc_component_parse(component);
    if (!comps && strcmp(component, "none") != 0) {
        fprintf(stderr, "microcloud replay verify: --component must be engine, detector, agent, "
                        "orchestrator, all or none\n");
        return MC_EXIT_USAGE;
    }
    mc_error err = {0};
    uint8_t pk[32];
    if (pubkey && mc_trace_key_load_public(pubkey, pk, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay verify: --pubkey: %s\n", err.msg);
        return MC_EXIT_USAGE;
    }
    static mc_run_setup setup;
    mc_setup_init(&setup);
    if (mc_setup_rules_files(&setup, drules, arules, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay verify: %s\n", err.msg);
        mc_setup_deinit(&setup);
        return MC_EXIT_USAGE;
    }
    for (size_t i = 0; i < n_over; i++)
        if (mc_setup_override(&setup, overrides[i], &err) != MC_OK) {
            fprintf(stderr, "microcloud replay verify: %s\n", err.msg);
            mc_setup_deinit(&setup);
            return MC_EXIT_USAGE;
        }
    mc_scorecard score;
    memset(&score, 0, sizeof score);
    /* The scorecard needs the scenario's graph, which the re-drive loads;
     * it reads setup.sc through the pointer once loaded. */
    if (mc_scorecard_init(&score, &setup.sc, &err) != MC_OK) {
        fprintf(stderr, "microcloud replay verify: %s\n", err.msg);
        mc_setup_deinit(&setup);
        return MC_EXIT_DAMAGED;
    }
    vprog vp;
    struct stat sb;
    /* The bar counts bytes: the number of ticks is only known at the end. */
    mc_progress_start(&vp.p, "verify", stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0);
    mc_redrive_options o = {0};
    o.components = comps;
    o.setup = &setup;
    o.scenario_dir = dir;
    o.scenario = scenario;
    o.public_key = pubkey ? pk : NULL;
    o.score = &score;
    o.progress = on_progress;
    o.progress_ctx = &vp;
    mc_redrive_result r;
    mc_status st = mc_redrive_file(path, &o, &r, &err);
    mc_progress_end(&vp.p);
    if (st != MC_OK) {
        fprintf(stderr, "microcloud replay verify: %s\n", err.msg);
        mc_scorecard_deinit(&score);
        mc_setup_deinit(&setup);
        return MC_EXIT_DAMAGED;
    }
    mc_scorecard_finish(&score);

    /* The reproduce command: the same trace, the component that diverged. */
    char repro[2048] = "";
    mc_shell_append(repro, sizeof repro, mc_prog);
    mc_shell_append(repro, sizeof repro, "replay");
    mc_shell_append(repro, sizeof repro, "verify");
    mc_shell_append(repro, sizeof repro, path);
    mc_shell_append(repro, sizeof repro, "--component");
    mc_shell_append(repro, sizeof repro, r.diverged ? mc_stage_name(r.div.stage) : component);
    if (scenario) {
        mc_shell_append(repro, sizeof repro, "--scenario");
        mc_shell_append(repro, sizeof repro, scenario);
    }
    if (strcmp(dir, mc_default_scenario_dir()) != 0) {
        mc_shell_append(repro, sizeof repro, "--scenario-dir");
        mc_shell_append(repro, sizeof repro, dir);
    }
    if (pubkey) {
        mc_shell_append(repro, sizeof repro, "--pubkey");
        mc_shell_append(repro, sizeof repro, pubkey);
    }
    {
        size_t n = strlen(repro);
        snprintf(repro + n, sizeof repro - n, "%s", setup.flags);
    }

    const Trace__V1__TraceHeader *h = r.header;
    json_t *diffs = NULL;
    if (r.diverged && (r.div.has_expected || r.div.has_actual))
        diffs = mc_msgdiff(r.div.subject, r.div.has_expected ? r.div.expected : NULL,
                           r.div.expected_len, r.div.has_actual ? r.div.actual : NULL,
                           r.div.actual_len, max_diffs);
    char hex_e[65], hex_a[65], hash[65];
    mc_scorecard_run_hash(&score, hash);
    int rc = (int)r.verdict;
    if (json) {
        json_t *o2 = json_object();
        json_object_set_new(o2, "command", json_string("replay verify"));
        json_object_set_new(o2, "trace", json_string(path));
        json_object_set_new(o2, "verdict", json_string(verdict_name(r.verdict)));
        json_object_set_new(o2, "component", json_string(component));
        json_object_set_new(o2, "build", json_string(mc_trace_build_id()));
        if (h) {
            json_object_set_new(o2, "scenario", json_string(h->scenario ? h->scenario : ""));
            json_object_set_new(o2, "seed", json_integer((json_int_t)h->seed));
            json_object_set_new(o2, "runId", json_string(h->run_id ? h->run_id : ""));
            json_object_set_new(o2, "recordedBy", json_string(h->build_id ? h->build_id : ""));
            char sim_cmd[1024];
            mc_sim_command(h, r.last_tick, sim_cmd, sizeof sim_cmd);
            json_object_set_new(o2, "recordedBy", json_string(sim_cmd));
            json_object_set_new(o2, "approvalMode",
                                json_string(h->approval_mode ? h->approval_mode : ""));
        }
        json_object_set_new(o2, "signature", json_string(mc_trace_sig_state_name(r.signature)));
        if (r.problem[0])
            json_object_set_new(o2, "problem", json_string(r.problem));
        json_object_set_new(o2, "ticks", json_integer((json_int_t)r.ticks));
        json_object_set_new(o2, "ticksCompared", json_integer((json_int_t)r.ticks_driven));
        json_object_set_new(o2, "records", json_integer((json_int_t)r.records));
        json_object_set_new(o2, "samples", json_integer((json_int_t)r.samples));
        json_object_set_new(o2, "configDiffers", json_boolean(r.config_mismatch));
        json_object_set_new(o2, "scenarioDiffers", json_boolean(r.topology_mismatch));
        json_object_set_new(o2, "inputErrors", json_integer((json_int_t)r.input_errors));
        json_object_set_new(o2, "runHash", json_string(hash));
        if (r.diverged) {
            json_t *d = json_object();
            json_object_set_new(d, "tick", json_integer((json_int_t)r.div.tick));
            json_object_set_new(d, "component", json_string(mc_stage_name(r.div.stage)));
            json_object_set_new(d, "subject", json_string(r.div.subject));
            json_object_set_new(d, "producerSeq", json_integer((json_int_t)r.div.producer_seq));
            json_object_set_new(d, "what", json_string(r.div.what));
            json_object_set_new(d, "fields", diffs ? json_incref(diffs) : json_array());
            if (r.div.digest_checked) {
                mc_digest_hex(r.div.digest_expected, hex_e);
                mc_digest_hex(r.div.digest_actual, hex_a);
                json_object_set_new(d, "digest",
                                    json_pack("{s:b,s:s,s:s}", "differs", r.div.digest_diverged,
                                              "recorded", hex_e, "redriven", hex_a));
            }
            if (r.has_first_digest) {
                mc_digest_hex(r.first_digest.digest_expected, hex_e);
                mc_digest_hex(r.first_digest.digest_actual, hex_a);
                json_object_set_new(d, "firstDigestDivergence",
                                    json_pack("{s:I,s:s,s:s,s:s}", "tick",
                                              (json_int_t)r.first_digest.tick, "component",
                                              mc_stage_name(r.first_digest.stage), "recorded",
                                              hex_e, "redriven", hex_a));
            }
            json_object_set_new(o2, "divergence", d);
        }
        if (!quiet)
            json_object_set_new(o2, "scorecard", mc_scorecard_json(&score));
        json_object_set_new(o2, "reproduce", json_string(repro));
        mc_json_print_line(o2);
    } else {
        printf("microcloud replay verify %s (component %s), build %s\n", path, component,
               mc_trace_build_id());
        char sim_cmd[1024] = "";
        if (h)
            mc_sim_command(h, r.last_tick, sim_cmd, sizeof sim_cmd);
        if (h)
            printf("  recorded by: %s\n", sim_cmd);
        if (h)
            printf("  recorded: scenario %s, seed %" PRIu64
                   ", run %s, approval %s, mode %s, by build %s\n",
                   h->scenario, h->seed, h->run_id, h->approval_mode, h->mode, h->build_id);
        printf("  integrity: %s; signature: %s\n",
               r.verdict == MC_REDRIVE_DAMAGED ? r.problem : "clean",
               mc_trace_sig_state_name(r.signature));
        if (r.config_mismatch)
            printf("  note: the rules/approval configuration differs from the recording's (config "
                   "digest); divergence is expected\n");
        if (r.topology_mismatch && (comps & MC_COMP_ENGINE))
            printf("  note: the scenario file or size knobs differ from the recording's (topology "
                   "digest)\n");
        if (r.run_id_mismatch)
            printf("  note: the engine's run id differs from the header's\n");
        if (r.diverged) {
            printf("DIVERGED at tick %" PRIu64 ": %s, %s producer_seq %" PRIu64 "\n", r.div.tick,
                   mc_stage_name(r.div.stage), r.div.subject[0] ? r.div.subject : "(state)",
                   r.div.producer_seq);
            printf("  %s\n", r.div.what);
            if (diffs && json_array_size(diffs)) {
                printf("  field differences (recorded vs re-driven):\n");
                mc_msgdiff_print(diffs, stdout, "    ", "recorded", "re-driven");
            }
            if (r.div.digest_checked) {
                mc_digest_hex(r.div.digest_expected, hex_e);
                mc_digest_hex(r.div.digest_actual, hex_a);
                printf("  %s digest at the end of tick %" PRIu64
                       ": %s\n    recorded  %s\n    re-driven %s\n",
                       mc_stage_name(r.div.stage), r.div.tick,
                       r.div.digest_diverged ? "DIFFERS" : "same", hex_e, hex_a);
            }
            if (r.has_first_digest &&
                (r.first_digest.tick != r.div.tick || r.first_digest.stage != r.div.stage)) {
                mc_digest_hex(r.first_digest.digest_expected, hex_e);
                mc_digest_hex(r.first_digest.digest_actual, hex_a);
                printf("  the %s's state digest first differed at tick %" PRIu64
                       ":\n    recorded  %s\n    re-driven %s\n",
                       mc_stage_name(r.first_digest.stage), r.first_digest.tick, hex_e, hex_a);
            }
        } else if (r.verdict == MC_REDRIVE_IDENTICAL) {
            printf("  re-drive: identical over %" PRIu64 " ticks (%" PRIu64 " records, %" PRIu64
                   " samples)\n",
                   r.ticks_driven, r.records, r.samples);
        }
        if (r.input_errors)
            printf("  note: %" PRIu64 " recorded inputs were refused by a core (as live)\n",
                   r.input_errors);
        if (!quiet && r.verdict != MC_REDRIVE_DAMAGED)
            mc_scorecard_print(&score, stdout);
        printf("verdict: %s\n", verdict_name(r.verdict));
        printf("reproduce: %s\n", repro);
    }
    json_decref(diffs);
    mc_redrive_result_free(&r);
    mc_scorecard_deinit(&score);
    mc_setup_deinit(&setup);
    return rc;
}
