/* The Connect protocol, unary RPCs (https://connectrpc.com/docs/protocol).
 *
 * A service is a table of methods registered on a server:
 *
 *     static const mc_http_connect_method methods[] = {
 *         {"ApproveAction", &ops__v1__approve_action_request__descriptor,
 *          &ops__v1__approve_action_response__descriptor, on_approve, true},
 *     };
 *     static const mc_http_connect_service svc = {"ops.v1.ActionService", methods, 1};
 *     mc_http_connect_register(srv, &svc, ctx, err);
 *
 * Each method answers `POST /<package>.<Service>/<Method>` with a body in
 * `application/json` (proto3 JSON, lib/json) or `application/proto`
 * (binary protobuf); the response uses the request's codec. Errors are
 * always `application/json` bodies {"code": "...", "message": "..."} with
 * the protocol's HTTP status for the code:
 *   - an unknown method of a registered service: 501 unimplemented
 *     (a path outside every service is the router's plain 404, which
 *     Connect clients read as unimplemented too);
 *   - a content type other than the two codecs: 415;
 *   - a Content-Encoding other than identity: 501 unimplemented;
 *   - a body that does not decode: 400 invalid_argument naming the field
 *     (the JSON path from lib/json);
 *   - Connect-Protocol-Version other than "1", or a malformed
 *     Connect-Timeout-Ms: 400 invalid_argument (the version header is
 *     accepted, never required);
 *   - requires_auth without a valid bearer token: 401 unauthenticated;
 *   - Connect-Timeout-Ms passing before the handler answers: 504
 *     deadline_exceeded (the handler's later answer is dropped).
 *
 * Handlers run on the loop thread and may answer later (after NATS or
 * database work): the call and its request message stay valid until
 * mc_http_connect_respond or mc_http_connect_fail is called, exactly once. */
#ifndef MC_HTTP_CONNECT_H
#define MC_HTTP_CONNECT_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/server.h"
#include "status/status.h"

/* The Connect error codes (same numbers as gRPC). */
typedef enum mc_http_connect_code {
    MC_CONNECT_CANCELED = 1,
    MC_CONNECT_UNKNOWN = 2,
    MC_CONNECT_INVALID_ARGUMENT = 3,
    MC_CONNECT_DEADLINE_EXCEEDED = 4,
    MC_CONNECT_NOT_FOUND = 5,
    MC_CONNECT_ALREADY_EXISTS = 6,
    MC_CONNECT_PERMISSION_DENIED = 7,
    MC_CONNECT_RESOURCE_EXHAUSTED = 8,
    MC_CONNECT_FAILED_PRECONDITION = 9,
    MC_CONNECT_ABORTED = 10,
    MC_CONNECT_OUT_OF_RANGE = 11,
    MC_CONNECT_UNIMPLEMENTED = 12,
    MC_CONNECT_INTERNAL = 13,
    MC_CONNECT_UNAVAILABLE = 14,
    MC_CONNECT_DATA_LOSS = 15,
    MC_CONNECT_UNAUTHENTICATED = 16
} mc_http_connect_code;

/* "invalid_argument", ...; "unknown" for a value out of range. */
const char *mc_http_connect_code_name(mc_http_connect_code code);
/* The HTTP status of a code, from the protocol's table (e.g. 400 for
 * invalid_argument, failed_precondition and out_of_range, 501 for
 * unimplemented, 504 for deadline_exceeded, 499 for canceled). */
int mc_http_connect_code_http_status(mc_http_connect_code code);
/* A reasonable code for an mc_status, for handlers passing errors on. */
mc_http_connect_code mc_http_connect_code_from_status(mc_status st);

typedef struct mc_http_connect_call mc_http_connect_call;

/* request is owned by the call (valid until the call is answered). */
typedef void (*mc_http_connect_handler_fn)(mc_http_connect_call *call,
                                           const ProtobufCMessage *request, void *ctx);

typedef struct mc_http_connect_method {
    const char *name; /* "ApproveAction" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    mc_http_connect_handler_fn handler;
    bool requires_auth; /* bearer token of mc_http_server_set_bearer_token */
} mc_http_connect_method;

typedef struct mc_http_connect_service {
    const char *name; /* fully qualified: "ops.v1.ActionService" */
    const mc_http_connect_method *methods;
    size_t n_methods;
} mc_http_connect_service;

/* Routes every method of svc on srv; ctx is passed to the handlers. The
 * table is copied. MC_ERR_INVALID for a bad table, MC_ERR_EXISTS when a
 * path is routed already. */
mc_status mc_http_connect_register(mc_http_server *srv, const mc_http_connect_service *svc,
                                   void *ctx, mc_error *err);

/* Answers with a message of the method's output type (not taken: the
 * caller still owns response). Releases the call. */
void mc_http_connect_respond(mc_http_connect_call *call, const ProtobufCMessage *response);
/* Answers with a Connect error; the message is printf-formatted. Releases
 * the call. */
void mc_http_connect_fail(mc_http_connect_call *call, mc_http_connect_code code, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

/* The HTTP request (headers, e.g. for the actor); NULL once the deadline
 * answered the client. */
mc_http_request *mc_http_connect_call_request(const mc_http_connect_call *call);
/* True when nobody waits for the answer any more (deadline passed or the
 * client left): a handler may skip its work and just release the call. */
bool mc_http_connect_call_cancelled(const mc_http_connect_call *call);
/* "/ops.v1.ActionService/ApproveAction". */
const char *mc_http_connect_call_procedure(const mc_http_connect_call *call);

#endif
