/* bench_http_server: the HTTP stack under load, for tests/bench/http/run.sh.
 * One Connect unary method (ops.v1.ActionService/ListPendingActions,
 * answering page_size actions, JSON or binary) and static files from a
 * directory, on one server. Prints "port N" on stdout once listening and
 * runs until SIGINT/SIGTERM (graceful shutdown).
 *
 * Usage: bench_http_server STATIC_DIR [PORT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http/connect.h"
#include "http/server.h"
#include "http/static_files.h"
#include "log/log.h"
#include "ops/v1/action_service.pb-c.h"

static void on_list(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__ListPendingActionsRequest *req = (const void *)m;
    Ops__V1__ListPendingActionsResponse resp = OPS__V1__LIST_PENDING_ACTIONS_RESPONSE__INIT;
    Ops__V1__Action actions[8];
    Ops__V1__Action *ptrs[8];
    char ids[8][40];
    size_t n = req->page_size > 8 ? 8 : req->page_size;
    for (size_t i = 0; i < n; i++) {
        ops__v1__action__init(&actions[i]);
        snprintf(ids[i], sizeof ids[i], "00000000-0000-4000-8000-%012zu", i);
        actions[i].id = ids[i];
        actions[i].target_id = "checkout";
        actions[i].reason = "p99 latency above 800 ms for 3 ticks";
        actions[i].status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
        actions[i].proposed_at_tick = 1000 + i;
        ptrs[i] = &actions[i];
    }
    resp.n_actions = n;
    resp.actions = ptrs;
    resp.next_page_token = req->page_token;
    mc_http_connect_respond(call, &resp.base);
}

static const mc_http_connect_method methods[] = {
    {"ListPendingActions", &ops__v1__list_pending_actions_request__descriptor,
     &ops__v1__list_pending_actions_response__descriptor, on_list, false},
};
static const mc_http_connect_service service = {"ops.v1.ActionService", methods, 1};

static void on_done(mc_http_server *srv, bool forced, void *ctx)
{
    fprintf(stderr, "bench_http_server: stopped%s\n", forced ? " (forced)" : "");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s STATIC_DIR [PORT]\n", argv[0]);
        return 2;
    }
    mc_log_init("bench_http_server", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    uv_loop_t *loop = uv_default_loop();
    mc_http_server_config cfg = {.port = argc > 2 ? (uint16_t)atoi(argv[2]) : 0,
                                 .max_connections = 4096, .shutdown_timeout_ms = 2000};
    mc_http_server *srv;
    mc_http_static *st;
    mc_error err = {0};
    if (mc_http_server_new(loop, &cfg, &srv, &err) != MC_OK ||
        mc_http_static_new(argv[1], NULL, &st, &err) != MC_OK ||
        mc_http_connect_register(srv, &service, NULL, &err) != MC_OK ||
        mc_http_server_route_prefix(srv, MC_HTTP_GET | MC_HTTP_HEAD, "/", mc_http_static_handler,
                                    st, &err) != MC_OK ||
        mc_http_server_handle_signals(srv, on_done, NULL, &err) != MC_OK) {
        fprintf(stderr, "bench_http_server: %s\n", err.msg);
        return 1;
    }
    printf("port %u\n", mc_http_server_port(srv));
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    mc_http_server_free(srv);
    uv_run(loop, UV_RUN_DEFAULT);
    mc_http_static_free(st);
    uv_loop_close(loop);
    return 0;
}
