/* lib/http static files: content types, caching headers and 304, index and
 * .html fallbacks, and every path-traversal form we know of. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/server.h"
#include "http/static_files.h"
#include "http_test_util.h"

static char tmp[256];
static char root[300];

static void put(const char *rel, const char *content)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    assert_int_equal(system(cmd), 0);
    *slash = '/';
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup_tree(void **state)
{
    snprintf(tmp, sizeof tmp, "/tmp/mc-http-static-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    snprintf(root, sizeof root, "%s/root", tmp);
    assert_int_equal(mkdir(root, 0755), 0);
    put("index.html", "<h1>home</h1>");
    put("about.html", "<h1>about</h1>");
    put("docs/index.html", "<h1>docs</h1>");
    put("404.html", "<h1>missing</h1>");
    put("app.js", "console.log(1)");
    put("app.js.map", "{}");
    put("style.css", "body{}");
    put("data.json", "{\"a\":1}");
    put("icon.svg", "<svg/>");
    put("img.png", "PNG");
    put("favicon.ico", "ICO");
    put("font.woff2", "WOFF2");
    put("robots.txt", "User-agent: *");
    put("_next/static/chunks/main-abc123.js", "hashed");
    put(".env", "SECRET=1");
    char p[700], t[700];
    snprintf(p, sizeof p, "%s/secret.txt", tmp);
    FILE *f = fopen(p, "w");
    fputs("top secret", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/escape.txt", root);
    snprintf(t, sizeof t, "%s/secret.txt", tmp);
    assert_int_equal(symlink(t, p), 0);
    snprintf(p, sizeof p, "%s/escape-dir", root);
    assert_int_equal(symlink(tmp, p), 0);
    snprintf(p, sizeof p, "%s/inside.js", root);
    assert_int_equal(symlink("app.js", p), 0);
    return 0;
}

static int teardown_tree(void **state)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd);
}

static mc_http_static *g_static;

static void setup_routes(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_static_new(root, NULL, &g_static, &err), MC_OK);
    assert_int_equal(mc_http_server_route_prefix(ts->srv, MC_HTTP_GET | MC_HTTP_HEAD, "/",
                                                 mc_http_static_handler, g_static, &err),
                     MC_OK);
}

static void stop(test_server *ts)
{
    ts_stop(ts);
    mc_http_static_free(g_static);
    g_static = NULL;
}

static void expect(uint16_t port, const char *path, int status, const char *ctype,
                   const char *body)
{
    response r;
    assert_true(http_get(port, path, NULL, &r));
    if (r.status != status)
        fail_msg("%s: status %d, want %d", path, r.status, status);
    char v[256];
    if (ctype != NULL) {
        assert_true(resp_header(&r, "Content-Type", v, sizeof v));
        if (strcmp(v, ctype) != 0)
            fail_msg("%s: type %s, want %s", path, v, ctype);
    }
    if (body != NULL && strcmp(r.body, body) != 0)
        fail_msg("%s: body \"%s\", want \"%s\"", path, r.body, body);
    resp_free(&r);
}

static void test_types_and_fallbacks(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_routes, NULL);
    expect(ts.port, "/", 200, "text/html; charset=utf-8", "<h1>home</h1>");
    expect(ts.port, "/index.html", 200, "text/html; charset=utf-8", "<h1>home</h1>");
    expect(ts.port, "/about", 200, "text/html; charset=utf-8", "<h1>about</h1>");
    expect(ts.port, "/docs", 200, "text/html; charset=utf-8", "<h1>docs</h1>");
    expect(ts.port, "/docs/", 200, "text/html; charset=utf-8", "<h1>docs</h1>");
    expect(ts.port, "/app.js", 200, "text/javascript; charset=utf-8", "console.log(1)");
    expect(ts.port, "/app.js.map", 200, "application/json", "{}");
    expect(ts.port, "/style.css", 200, "text/css; charset=utf-8", NULL);
    expect(ts.port, "/data.json", 200, "application/json", NULL);
    expect(ts.port, "/icon.svg", 200, "image/svg+xml", NULL);
    expect(ts.port, "/img.png", 200, "image/png", NULL);
    expect(ts.port, "/favicon.ico", 200, "image/x-icon", NULL);
    expect(ts.port, "/font.woff2", 200, "font/woff2", NULL);
    expect(ts.port, "/robots.txt", 200, "text/plain; charset=utf-8", NULL);
    expect(ts.port, "/inside.js", 200, NULL, "console.log(1)"); /* symlink within the root */
    expect(ts.port, "/app%2ejs", 200, NULL, "console.log(1)");  /* harmless encoding */
    expect(ts.port, "/nope", 404, "text/html; charset=utf-8", "<h1>missing</h1>");
    stop(&ts);
}

static void test_caching_headers_and_304(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_routes, NULL);
    response r;
    char v[256], etag[128], lm[128];
    assert_true(http_get(ts.port, "/_next/static/chunks/main-abc123.js", NULL, &r));
    assert_int_equal(r.status, 200);
    assert_true(resp_header(&r, "Cache-Control", v, sizeof v));
    assert_string_equal(v, "public, max-age=31536000, immutable");
    resp_free(&r);
    assert_true(http_get(ts.port, "/about", NULL, &r));
    assert_true(resp_header(&r, "Cache-Control", v, sizeof v));
    assert_string_equal(v, "no-cache");
    assert_true(resp_header(&r, "ETag", etag, sizeof etag));
    assert_true(resp_header(&r, "Last-Modified", lm, sizeof lm));
    resp_free(&r);
    char hdr[400];
    snprintf(hdr, sizeof hdr, "If-None-Match: \"zzz\", %s\r\n", etag);
    assert_true(http_get(ts.port, "/about", hdr, &r));
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    assert_true(resp_header(&r, "ETag", v, sizeof v));
    assert_string_equal(v, etag);
    resp_free(&r);
    assert_true(http_get(ts.port, "/about", "If-None-Match: \"other\"\r\n", &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n", lm);
    assert_true(http_get(ts.port, "/about", hdr, &r));
    assert_int_equal(r.status, 304);
    resp_free(&r);
    assert_true(http_get(ts.port, "/about", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n",
                         &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* HEAD: headers with the length, no body. */
    client c;
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "HEAD /about HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(cl_wait_closed(&c, 3000));
    assert_non_null(strstr(c.buf, "Content-Length: 14\r\n"));
    assert_null(strstr(c.buf, "about</h1>"));
    cl_close(&c);
    stop(&ts);
}

static void test_traversal_refused(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_routes, NULL);
    const char *bad[] = {
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/.env",
        "/%2eenv",
        "/app.js%00.html",
        "/index.html%00",
        "/%",
        "/%zz",
        "//etc/passwd",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        response r;
        client c;
        cl_connect(&c, ts.port, 0);
        char req[512];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nConnection: close\r\n\r\n", bad[i]);
        cl_send_str(&c, req);
        bool ok = cl_read_response(&c, &r);
        cl_close(&c);
        if (!ok)
            fail_msg("%s: no response", bad[i]);
        /* The parser may refuse some forms outright (400); never 200. */
        if (r.status != 404 && r.status != 400)
            fail_msg("%s: status %d", bad[i], r.status);
        if (strstr(r.body, "secret") || strstr(r.body, "root:"))
            fail_msg("%s: leaked", bad[i]);
        resp_free(&r);
    }
    /* Direct resolution says the same. */
    char out[4096];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mc_http_static_resolve(g_static, bad[i], out, sizeof out),
                         MC_ERR_NOT_FOUND);
    assert_int_equal(mc_http_static_resolve(g_static, "/about", out, sizeof out), MC_OK);
    assert_non_null(strstr(out, "/root/about.html"));
    stop(&ts);
}

static void test_bad_root(void **state)
{
    mc_http_static *st;
    mc_error err;
    assert_int_equal(mc_http_static_new("/nonexistent/dir", NULL, &st, &err), MC_ERR_NOT_FOUND);
    char p[400];
    snprintf(p, sizeof p, "%s/index.html", root);
    assert_int_equal(mc_http_static_new(p, NULL, &st, &err), MC_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_fallbacks),
        cmocka_unit_test(test_caching_headers_and_304),
        cmocka_unit_test(test_traversal_refused),
        cmocka_unit_test(test_bad_root),
    };
    return cmocka_run_group_tests_name("http_static", tests, setup_tree, teardown_tree);
}
