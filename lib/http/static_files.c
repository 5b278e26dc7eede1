/* Static files: see static_files.h. */
#include "http/static_files.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/server.h"

struct mc_http_static {
    char root[PATH_MAX];
    size_t root_len;
    size_t max_file_bytes;
    char immutable_prefix[256];
};

mc_status mc_http_static_new(const char *root, const mc_http_static_options *opt,
                             mc_http_static **out, mc_error *err)
{
    *out = NULL;
    mc_http_static *st = calloc(1, sizeof *st);
    if (st == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "static: out of memory");
    if (root == NULL || realpath(root, st->root) == NULL) {
        int e = errno;
        free(st);
        return mc_error_set(err, MC_ERR_NOT_FOUND, "static: root %s: %s", root ? root : "(null)",
                            strerror(e));
    }
    struct stat sb;
    if (stat(st->root, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        free(st);
        return mc_error_set(err, MC_ERR_INVALID, "static: root %s is not a directory", root);
    }
    st->root_len = strlen(st->root);
    /* The filesystem root "/" would make the prefix check "//"; keep it "". */
    if (st->root_len == 1)
        st->root_len = 0;
    st->max_file_bytes = opt && opt->max_file_bytes ? opt->max_file_bytes : 32u << 20;
    snprintf(st->immutable_prefix, sizeof st->immutable_prefix, "%s",
             opt && opt->immutable_prefix ? opt->immutable_prefix : "/_next/static/");
    *out = st;
    return MC_OK;
}

void mc_http_static_free(mc_http_static *st)
{
    free(st);
}

const char *mc_http_static_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"avif", "image/avif"},
        {"ico", "image/x-icon"},
        {"woff2", "font/woff2"},
        {"woff", "font/woff"},
        {"ttf", "font/ttf"},
        {"otf", "font/otf"},
        {"txt", "text/plain; charset=utf-8"},
        {"xml", "application/xml"},
        {"webmanifest", "application/manifest+json"},
        {"wasm", "application/wasm"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash : name, '.');
    if (dot != NULL)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes p into out and checks every segment. False for anything
 * that is refused. */
static bool decode_path(const char *p, char *out, size_t cap)
{
    if (p[0] != '/')
        return false;
    size_t n = 0;
    for (size_t i = 0; p[i]; i++) {
        char ch = p[i];
        if (ch == '%') {
            int hi = hexval(p[i + 1]), lo = hi >= 0 ? hexval(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            ch = (char)(hi * 16 + lo);
            i += 2;
            /* An encoded separator is never a path separator here. */
            if (ch == '/' || ch == '\\' || ch == '\0')
                return false;
        }
        if (ch == '\\')
            return false;
        if (n + 1 >= cap)
            return false;
        out[n++] = ch;
    }
    out[n] = '\0';
    /* Segments: no ".", "..", dotfiles; empty segments are collapsed by the
     * filesystem and harmless. */
    for (const char *s = out; *s;) {
        while (*s == '/')
            s++;
        if (*s == '.')
            return false;
        while (*s && *s != '/')
            s++;
    }
    return true;
}

/* realpath + containment + regular file. */
static bool try_candidate(const mc_http_static *st, const char *cand, char *out, size_t cap)
{
    char real[PATH_MAX];
    if (realpath(cand, real) == NULL)
        return false;
    if (strncmp(real, st->root, st->root_len) != 0 || real[st->root_len] != '/')
        return false;
    struct stat sb;
    if (stat(real, &sb) != 0 || !S_ISREG(sb.st_mode))
        return false;
    if (strlen(real) + 1 > cap)
        return false;
    memcpy(out, real, strlen(real) + 1);
    return true;
}

mc_status mc_http_static_resolve(const mc_http_static *st, const char *url_path, char *out,
                                 size_t cap)
{
    char dec[PATH_MAX];
    if (!decode_path(url_path, dec, sizeof dec - 16))
        return MC_ERR_NOT_FOUND;
    size_t dl = strlen(dec);
    char base[PATH_MAX + 32];
    if (st->root_len + dl + 16 > sizeof base)
        return MC_ERR_NOT_FOUND;
    memcpy(base, st->root, st->root_len);
    memcpy(base + st->root_len, dec, dl + 1);
    size_t bl = st->root_len + dl;
    char cand[sizeof base + 16];
    bool dir_form = dec[dl - 1] == '/';
    if (dir_form) {
        snprintf(cand, sizeof cand, "%sindex.html", base);
        if (try_candidate(st, cand, out, cap))
            return MC_OK;
        /* "/foo/" → "foo.html" as well. */
        while (bl > st->root_len + 1 && base[bl - 1] == '/')
            base[--bl] = '\0';
        if (bl > st->root_len + 1) {
            snprintf(cand, sizeof cand, "%s.html", base);
            if (try_candidate(st, cand, out, cap))
                return MC_OK;
        }
        return MC_ERR_NOT_FOUND;
    }
    if (try_candidate(st, base, out, cap))
        return MC_OK;
    snprintf(cand, sizeof cand, "%s.html", base);
    if (try_candidate(st, cand, out, cap))
        return MC_OK;
    snprintf(cand, sizeof cand, "%s/index.html", base);
    if (try_candidate(st, cand, out, cap))
        return MC_OK;
    return MC_ERR_NOT_FOUND;
}

/* True when an If-None-Match list names etag (weak comparison). */
static bool etag_matches(const char *inm, const char *etag)
{
    const char *e = etag[0] == 'W' ? etag + 2 : etag;
    size_t elen = strlen(e);
    const char *s = inm;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (*s == '*')
            return true;
        if (s[0] == 'W' && s[1] == '/')
            s += 2;
        const char *end = s;
        while (*end && *end != ',')
            end++;
        size_t n = (size_t)(end - s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n == elen && memcmp(s, e, n) == 0)
            return true;
        s = end;
    }
    return false;
}

static void respond_not_found(mc_http_static *st, mc_http_request *req)
{
    char path[PATH_MAX];
    if (mc_http_static_resolve(st, "/404.html", path, sizeof path) == MC_OK) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && (size_t)sb.st_size <= st->max_file_bytes) {
            size_t len = (size_t)sb.st_size;
            char *buf = malloc(len ? len : 1);
            ssize_t r = buf ? read(fd, buf, len) : -1;
            close(fd);
            if (r == (ssize_t)len) {
                mc_http_response_header_add(req, "Cache-Control", "no-cache");
                mc_http_respond_owned(req, 404, "text/html; charset=utf-8", buf, len);
                return;
            }
            free(buf);
        } else if (fd >= 0) {
            close(fd);
        }
    }
    mc_http_respond_text(req, 404, "text/plain; charset=utf-8", "not found\n");
}

void mc_http_static_handler(struct mc_http_request *req, void *ctx)
{
    mc_http_static *st = ctx;
    const char *url = mc_http_request_path(req);
    char path[PATH_MAX];
    if (mc_http_static_resolve(st, url, path, sizeof path) != MC_OK) {
        respond_not_found(st, req);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        respond_not_found(st, req);
        return;
    }
    if ((uint64_t)sb.st_size > st->max_file_bytes) {
        close(fd);
        mc_http_respond_text(req, 500, "text/plain; charset=utf-8", "file too large\n");
        return;
    }
    char etag[80], lastmod[64];
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%lx\"", (uint64_t)sb.st_size,
             (uint64_t)sb.st_mtim.tv_sec, (unsigned long)sb.st_mtim.tv_nsec);
    struct tm tm;
    gmtime_r(&sb.st_mtim.tv_sec, &tm);
    strftime(lastmod, sizeof lastmod, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    size_t plen = strlen(st->immutable_prefix);
    bool immutable = plen > 0 && strncmp(url, st->immutable_prefix, plen) == 0;
    mc_http_response_header_add(req, "Cache-Control",
                                immutable ? "public, max-age=31536000, immutable" : "no-cache");
    mc_http_response_header_add(req, "ETag", etag);
    mc_http_response_header_add(req, "Last-Modified", lastmod);
    mc_http_response_header_add(req, "X-Content-Type-Options", "nosniff");
    const char *ctype = mc_http_static_content_type(path);
    const char *inm = mc_http_request_header(req, "If-None-Match");
    bool not_modified = false;
    if (inm != NULL) {
        not_modified = etag_matches(inm, etag);
    } else {
        const char *ims = mc_http_request_header(req, "If-Modified-Since");
        struct tm it;
        memset(&it, 0, sizeof it);
        if (ims != NULL) {
            const char *end = strptime(ims, "%a, %d %b %Y %H:%M:%S GMT", &it);
            if (end != NULL && *end == '\0' && sb.st_mtim.tv_sec <= timegm(&it))
                not_modified = true;
        }
    }
    if (not_modified) {
        close(fd);
        mc_http_respond(req, 304, NULL, NULL, 0);
        return;
    }
    size_t len = (size_t)sb.st_size;
    if (mc_http_request_method_bit(req) == MC_HTTP_HEAD) {
        /* HEAD: the length without reading the file; no body is sent. */
        close(fd);
        mc_http_respond(req, 200, ctype, NULL, len);
        return;
    }
    char *buf = malloc(len ? len : 1);
    size_t got = 0;
    while (buf != NULL && got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (buf == NULL || got != len) {
        free(buf);
        mc_http_respond_text(req, 500, "text/plain; charset=utf-8", "read error\n");
        return;
    }
    mc_http_respond_owned(req, 200, ctype, buf, len);
}
