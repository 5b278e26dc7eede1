#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "harness/setup.h"
#include "trace/v1/trace.pb-c.h"

const char *mc_prog = "microcloud";

void mc_progress_start(mc_progress *p, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->on = total > 0 && isatty(STDERR_FILENO);
    p->total = total;
    p->label = label;
    p->last_permille = -1;
}

void mc_progress_update(mc_progress *p, uint64_t done)
{
    if (!p->on)
        return;
    if (done > p->total)
        done = p->total;
    int pm = (int)(done * 1000 / p->total);
    if (pm == p->last_permille)
        return;
    p->last_permille = pm;
    char bar[41];
    int fill = pm * 40 / 1000;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\r%s [%s] %3d.%d%% %llu/%llu", p->label, bar, pm / 10, pm % 10,
            (unsigned long long)done, (unsigned long long)p->total);
    fflush(stderr);
}

void mc_progress_end(mc_progress *p)
{
    if (p->on)
        fprintf(stderr, "\r\033[K");
    p->on = false;
}

void mc_shell_append(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);
    if (n + 1 >= cap)
        return;
    if (n)
        buf[n++] = ' ';
    bool plain = *s != '\0';
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%", *p))
            plain = false;
    if (plain) {
        snprintf(buf + n, cap - n, "%s", s);
        return;
    }
    if (n < cap - 1)
        buf[n++] = '\'';
    for (const char *p = s; *p && n < cap - 5; p++) {
        if (*p == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            buf[n++] = *p;
        }
    }
    if (n < cap - 1)
        buf[n++] = '\'';
    buf[n < cap ? n : cap - 1] = '\0';
}

void mc_json_print_line(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    json_decref(j);
}

const char *mc_default_scenario_dir(void)
{
    const char *e = getenv("MC_SCENARIO_DIR");
    return e && *e ? e : MC_DEFAULT_SCENARIO_DIR;
}

void mc_sim_command(const Trace__V1__TraceHeader *h, uint64_t ticks, char *buf, size_t cap)
{
    char name[MC_SCENARIO_ID_MAX] = "?", num[32];
    uint32_t nodes = 0, services = 0;
    mc_error err = {0};
    buf[0] = '\0';
    if (mc_setup_spec_parse(h->scenario ? h->scenario : "", name, &nodes, &services, &err) != MC_OK)
        snprintf(name, sizeof name, "?");
    mc_shell_append(buf, cap, mc_prog);
    mc_shell_append(buf, cap, "sim");
    mc_shell_append(buf, cap, "--scenario");
    mc_shell_append(buf, cap, name);
    snprintf(num, sizeof num, "%llu", (unsigned long long)h->seed);
    mc_shell_append(buf, cap, "--seed");
    mc_shell_append(buf, cap, num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)ticks);
    mc_shell_append(buf, cap, "--ticks");
    mc_shell_append(buf, cap, num);
    mc_shell_append(buf, cap, "--approval");
    mc_shell_append(buf, cap, h->approval_mode && h->approval_mode[0] ? h->approval_mode : "auto");
    if (nodes) {
        snprintf(num, sizeof num, "%u", nodes);
        mc_shell_append(buf, cap, "--nodes");
        mc_shell_append(buf, cap, num);
    }
    if (services) {
        snprintf(num, sizeof num, "%u", services);
        mc_shell_append(buf, cap, "--services");
        mc_shell_append(buf, cap, num);
    }
    for (size_t i = 0; i < h->n_settings; i++) {
        mc_shell_append(buf, cap, "--setting");
        mc_shell_append(buf, cap, h->settings[i] ? h->settings[i] : "");
    }
    snprintf(num, sizeof num, "%lld", (long long)h->start_time_unix_ms);
    mc_shell_append(buf, cap, "--start-time");
    mc_shell_append(buf, cap, num);
    mc_shell_append(buf, cap, "--trace");
    mc_shell_append(buf, cap, "run.mctrace");
}
