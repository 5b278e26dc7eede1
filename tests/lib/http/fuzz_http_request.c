/* Fuzz target for the HTTP request path: raw bytes go into a connection
 * driven from memory (no socket), through llhttp parsing, limits, CORS,
 * routing, Connect decoding (JSON and binary) and auth, static-file path
 * resolution, SSE and /metrics. Any crash, leak or sanitizer report is a
 * bug; the output itself is not checked beyond being produced.
 *
 * The first byte picks how the input is split into feeds (the parser must
 * give the same result for every split). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "http/connect.h"
#include "http/cors.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http/sse.h"
#include "http/static_files.h"
#include "log/log.h"
#include "ops/v1/action_service.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t g_loop;
static mc_http_server *g_srv;
static mc_http_sse_hub *g_hub;

static void on_list(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__ListPendingActionsRequest *req = (const void *)m;
    Ops__V1__ListPendingActionsResponse resp = OPS__V1__LIST_PENDING_ACTIONS_RESPONSE__INIT;
    resp.next_page_token = req->page_token;
    if (req->page_size == 7) {
        mc_http_connect_fail(call, MC_CONNECT_NOT_FOUND, "no page %s", req->page_token);
        return;
    }
    mc_http_connect_respond(call, &resp.base);
}

static void on_approve(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__ApproveActionRequest *req = (const void *)m;
    Ops__V1__ApproveActionResponse resp = OPS__V1__APPROVE_ACTION_RESPONSE__INIT;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    a.id = req->action_id;
    a.decided_by = req->actor;
    resp.action = &a;
    mc_http_connect_respond(call, &resp.base);
}

static const mc_http_connect_method methods[] = {
    {"ListPendingActions", &ops__v1__list_pending_actions_request__descriptor,
     &ops__v1__list_pending_actions_response__descriptor, on_list, false},
    {"ApproveAction", &ops__v1__approve_action_request__descriptor,
     &ops__v1__approve_action_response__descriptor, on_approve, true},
};
static const mc_http_connect_service service = {"ops.v1.ActionService", methods, 2};

static void put_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void init_once(void)
{
    if (g_srv != NULL)
        return;
    mc_log_init("fuzz", MC_LOG_ERROR, MC_LOG_FORMAT_TEXT, NULL);
    uv_loop_init(&g_loop);
    mc_http_server_config cfg = {.max_body_bytes = 16384, .max_header_bytes = 4096,
                                 .max_header_count = 32};
    mc_error err;
    if (mc_http_server_new_unbound(&g_loop, &cfg, &g_srv, &err) != MC_OK)
        abort();
    static char dir[] = "/tmp/mc-fuzz-http-XXXXXX";
    if (mkdtemp(dir) == NULL)
        abort();
    put_file(dir, "index.html", "<h1>i</h1>");
    put_file(dir, "about.html", "<h1>a</h1>");
    put_file(dir, "app.js", "x");
    mc_http_static *st;
    mc_http_cors *cors;
    mc_http_metrics *reg;
    mc_http_sse_hub_options ho = {.ring_events = 8};
    if (mc_http_static_new(dir, NULL, &st, &err) != MC_OK ||
        mc_http_cors_new("http://localhost:3000", &cors, &err) != MC_OK ||
        mc_http_metrics_new(&reg, &err) != MC_OK ||
        mc_http_sse_hub_new(&ho, &g_hub, &err) != MC_OK ||
        mc_http_server_register_metrics(g_srv, reg, &err) != MC_OK ||
        mc_http_server_set_bearer_token(g_srv, "fuzz-token", &err) != MC_OK ||
        mc_http_connect_register(g_srv, &service, NULL, &err) != MC_OK ||
        mc_http_server_add_health(g_srv, NULL, NULL, &err) != MC_OK ||
        mc_http_server_route(g_srv, MC_HTTP_GET, "/metrics", mc_http_metrics_handler, reg,
                             &err) != MC_OK ||
        mc_http_server_route(g_srv, MC_HTTP_GET, "/events", mc_http_sse_hub_handler, g_hub,
                             &err) != MC_OK ||
        mc_http_server_route_prefix(g_srv, MC_HTTP_GET | MC_HTTP_HEAD, "/",
                                    mc_http_static_handler, st, &err) != MC_OK)
        abort();
    mc_http_server_set_cors(g_srv, cors);
    mc_http_sse_hub_publish(g_hub, "tick", "one", 3, NULL);
    mc_http_sse_hub_publish(g_hub, "tick", "two\nlines", 9, NULL);
    /* The server, the registry, the hub and the directory live for the
     * whole process. */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    mc_http_conn *conn;
    if (mc_http_conn_mem_new(g_srv, &conn, NULL) != MC_OK)
        return 0;
    size_t step = size > 0 ? (size_t)(data[0] % 17) + 1 : 1;
    if (size > 0 && data[0] >= 0xf0)
        step = size; /* one feed */
    for (size_t off = size > 0 ? 1 : 0; off < size;) {
        size_t n = size - off < step ? size - off : step;
        mc_http_conn_mem_feed(conn, data + off, n);
        off += n;
        if (mc_http_conn_mem_closed(conn))
            break;
    }
    /* An event while an SSE stream may be open on the connection. */
    mc_http_sse_hub_publish(g_hub, "tick", "x", 1, NULL);
    size_t out_len;
    const uint8_t *out = mc_http_conn_mem_output(conn, &out_len);
    /* FUZZ_HTTP_PRINT=1 shows what the server answered (corpus debugging). */
    static int print = -1;
    if (print < 0)
        print = getenv("FUZZ_HTTP_PRINT") != NULL;
    if (print && out_len > 0)
        fwrite(out, 1, out_len, stdout);
    mc_http_conn_mem_free(conn);
    /* Let libuv finish closing timers of Connect deadlines. */
    uv_run(&g_loop, UV_RUN_NOWAIT);
    return 0;
}
