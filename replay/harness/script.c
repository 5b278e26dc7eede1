#include "harness/script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detector/rulefile.h"

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static size_t token(const char *p, const char *end)
{
    size_t n = 0;
    while (p + n < end && p[n] != ' ' && p[n] != '\t')
        n++;
    return n;
}

static mc_status parse_match(mc_script_decision *d, const char *tok, const char *file,
                             uint32_t line, mc_error *err)
{
    const char *colon = strchr(tok, ':');
    char type[64] = "";
    const char *target = "";
    if (colon) {
        size_t n = (size_t)(colon - tok);
        if (n >= sizeof type)
            return mc_error_set(err, MC_ERR_PARSE, "%s:%u: action type too long", file, line);
        memcpy(type, tok, n);
        type[n] = '\0';
        target = colon + 1;
    } else if (mc_rulefile_parse_action_type(tok, &d->action_type) == MC_OK ||
               strcmp(tok, "*") == 0) {
        snprintf(type, sizeof type, "%s", tok);
    } else {
        target = tok; /* a bare target */
    }
    d->action_type = 0;
    if (type[0] && strcmp(type, "*") != 0 &&
        mc_rulefile_parse_action_type(type, &d->action_type) != MC_OK)
        return mc_error_set(err, MC_ERR_PARSE,
                            "%s:%u: \"%s\" is not an action type (RESTART_SERVICE, SCALE_UP, "
                            "SCALE_DOWN, DRAIN_NODE, REBALANCE_TRAFFIC or *)",
                            file, line, type);
    if (strcmp(target, "*") == 0)
        target = "";
    if (strlen(target) >= sizeof d->target)
        return mc_error_set(err, MC_ERR_PARSE, "%s:%u: target too long", file, line);
    snprintf(d->target, sizeof d->target, "%s", target);
    return MC_OK;
}

mc_status mc_script_parse(const char *buf, size_t len, const char *file_name, mc_script *out,
                          mc_error *err)
{
    const char *file = file_name ? file_name : "<decisions>";
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    const char *p = buf, *end = buf + len;
    uint32_t line = 0;
    mc_status st = MC_OK;
    while (p < end && st == MC_OK) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *lend = eol ? eol : end;
        line++;
        if (lend > p && lend[-1] == '\r')
            lend--;
        const char *q = skip_ws(p, lend);
        p = eol ? eol + 1 : end;
        if (q == lend || *q == '#')
            continue;
        if (memchr(q, '\0', (size_t)(lend - q))) {
            st = mc_error_set(err, MC_ERR_PARSE, "%s:%u: NUL byte", file, line);
            break;
        }
        if (out->count >= MC_SCRIPT_MAX_LINES) {
            st = mc_error_set(err, MC_ERR_LIMIT, "%s:%u: more than %d decisions", file, line,
                              MC_SCRIPT_MAX_LINES);
            break;
        }
        mc_script_decision d;
        memset(&d, 0, sizeof d);
        d.line = line;
        char tok[3][MC_SCRIPT_TARGET_MAX + 64];
        for (int i = 0; i < 3; i++) {
            size_t n = token(q, lend);
            if (n == 0 || n >= sizeof tok[i]) {
                st = mc_error_set(err, MC_ERR_PARSE,
                                  "%s:%u: expected \"<tick> <action-match> approve|reject "
                                  "[reason]\"",
                                  file, line);
                break;
            }
            memcpy(tok[i], q, n);
            tok[i][n] = '\0';
            q = skip_ws(q + n, lend);
        }
        if (st != MC_OK)
            break;
        uint32_t tick = 0;
        if (mc_rulefile_parse_u32(tok[0], UINT32_MAX, &tick) != MC_OK || tick == 0) {
            st = mc_error_set(err, MC_ERR_PARSE, "%s:%u: tick \"%s\" is not a positive number",
                              file, line, tok[0]);
            break;
        }
        d.tick = tick;
        if ((st = parse_match(&d, tok[1], file, line, err)) != MC_OK)
            break;
        if (strcmp(tok[2], "approve") == 0) {
            d.approve = true;
        } else if (strcmp(tok[2], "reject") == 0) {
            d.approve = false;
        } else {
            st = mc_error_set(err, MC_ERR_PARSE, "%s:%u: verdict \"%s\" must be approve or reject",
                              file, line, tok[2]);
            break;
        }
        size_t rlen = (size_t)(lend - q);
        while (rlen > 0 && (q[rlen - 1] == ' ' || q[rlen - 1] == '\t'))
            rlen--;
        if (rlen >= sizeof d.reason)
            rlen = sizeof d.reason - 1;
        memcpy(d.reason, q, rlen);
        d.reason[rlen] = '\0';
        if (!d.approve && !d.reason[0])
            snprintf(d.reason, sizeof d.reason, "rejected by the decisions script (line %u)", line);
        if (out->count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            mc_script_decision *ni = realloc(out->items, ncap * sizeof *ni);
            if (!ni) {
                st = mc_error_set(err, MC_ERR_NOMEM, "%s: out of memory", file);
                break;
            }
            out->items = ni;
            cap = ncap;
        }
        out->items[out->count++] = d;
    }
    if (st != MC_OK) {
        mc_script_free(out);
        return st;
    }
    /* Stable insertion sort by tick: file order is kept within a tick. */
    for (size_t i = 1; i < out->count; i++) {
        mc_script_decision t = out->items[i];
        size_t j = i;
        while (j > 0 && out->items[j - 1].tick > t.tick) {
            out->items[j] = out->items[j - 1];
            j--;
        }
        out->items[j] = t;
    }
    return MC_OK;
}

void mc_script_free(mc_script *s)
{
    if (!s)
        return;
    free(s->items);
    s->items = NULL;
    s->count = 0;
}

bool mc_script_matches(const mc_script_decision *d, int action_type, const char *target)
{
    if (d->action_type && d->action_type != action_type)
        return false;
    if (d->target[0] && strcmp(d->target, target ? target : "") != 0)
        return false;
    return true;
}
