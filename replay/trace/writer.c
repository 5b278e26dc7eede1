#include "trace/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/keys.h"

#define DEFAULT_BUFFER (1024u * 1024u)
#define MIN_BUFFER     (4u * 1024u)

struct mc_trace_writer {
    int fd;
    char *path;
    uint8_t *buf;
    size_t cap, len;
    uint64_t offset; /* bytes emitted so far (written + buffered) */
    bool failed;     /* an I/O error happened: refuse everything after */

    uint8_t chain[MC_TRACE_HASH_BYTES];
    uint64_t frames;
    uint64_t records;
    uint64_t checkpoints;

    /* The frame being emitted. */
    uint32_t frame_crc;
    crypto_generichash_state frame_hash;

    /* Canonical order state. */
    bool have_record;
    mc_trace_key last_key;
    uint64_t last_record_offset;
    bool have_checkpoint;
    uint64_t last_checkpoint_tick;
    uint64_t last_checkpoint_offset;
    uint64_t last_tick;

    uint32_t fsync_every;
    uint32_t since_fsync;

    bool has_key;
    uint8_t sk[MC_TRACE_SECRET_KEY_BYTES];
};

static mc_status write_all(mc_trace_writer *w, const uint8_t *p, size_t n, mc_error *err)
{
    while (n > 0) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            w->failed = true;
            return mc_error_set(err, MC_ERR_IO, "trace %s: write: %s", w->path, strerror(errno));
        }
        p += r;
        n -= (size_t)r;
    }
    return MC_OK;
}

static mc_status buffer_flush(mc_trace_writer *w, mc_error *err)
{
    if (w->len == 0)
        return MC_OK;
    mc_status st = write_all(w, w->buf, w->len, err);
    w->len = 0;
    return st;
}

/* Copies bytes into the buffer, writing it out whenever it fills, so a
 * frame never needs to fit in the buffer. */
static mc_status emit_raw(mc_trace_writer *w, const uint8_t *p, size_t n, mc_error *err)
{
    while (n > 0) {
        if (w->len == w->cap) {
            mc_status st = buffer_flush(w, err);
            if (st != MC_OK)
                return st;
        }
        size_t take = w->cap - w->len < n ? w->cap - w->len : n;
        memcpy(w->buf + w->len, p, take);
        w->len += take;
        w->offset += take;
        p += take;
        n -= take;
    }
    return MC_OK;
}

/* Frame bytes that the crc and the chain cover. */
static mc_status emit_covered(mc_trace_writer *w, const uint8_t *p, size_t n, mc_error *err)
{
    w->frame_crc = mc_trace_crc32c(w->frame_crc, p, n);
    crypto_generichash_update(&w->frame_hash, p, n);
    return emit_raw(w, p, n, err);
}

static mc_status frame_begin(mc_trace_writer *w, uint32_t body_len, mc_error *err)
{
    uint8_t prefix[MC_TRACE_FRAME_PREFIX_LEN];
    mc_trace_put_u32(prefix, body_len);
    mc_trace_put_u32(prefix + 4, mc_trace_crc32c(0, prefix, 4));
    w->frame_crc = 0;
    crypto_generichash_init(&w->frame_hash, NULL, 0, MC_TRACE_HASH_BYTES);
    crypto_generichash_update(&w->frame_hash, w->chain, MC_TRACE_HASH_BYTES);
    return emit_covered(w, prefix, sizeof prefix, err);
}

static mc_status frame_end(mc_trace_writer *w, mc_error *err)
{
    uint8_t crc[4];
    mc_trace_put_u32(crc, w->frame_crc);
    crypto_generichash_update(&w->frame_hash, crc, sizeof crc);
    mc_status st = emit_raw(w, crc, sizeof crc, err);
    if (st != MC_OK)
        return st;
    crypto_generichash_final(&w->frame_hash, w->chain, MC_TRACE_HASH_BYTES);
    w->frames++;
    return emit_raw(w, w->chain, MC_TRACE_HASH_BYTES, err);
}

/* A frame whose body is the kind byte and one contiguous block. */
static mc_status frame_simple(mc_trace_writer *w, mc_trace_kind kind, const uint8_t *body,
                              size_t len, mc_error *err)
{
    if (len + 1 > MC_TRACE_MAX_BODY)
        return mc_error_set(err, MC_ERR_LIMIT, "trace %s: %s frame of %zu bytes is over the limit",
                            w->path, mc_trace_kind_name(kind), len);
    uint8_t k = (uint8_t)kind;
    mc_status st = frame_begin(w, (uint32_t)(len + 1), err);
    if (st == MC_OK)
        st = emit_covered(w, &k, 1, err);
    if (st == MC_OK && len > 0)
        st = emit_covered(w, body, len, err);
    if (st == MC_OK)
        st = frame_end(w, err);
    return st;
}

static mc_status check_usable(const mc_trace_writer *w, mc_error *err)
{
    if (w == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace writer is NULL");
    if (w->failed)
        return mc_error_set(err, MC_ERR_STATE,
                            "trace %s: an earlier write failed; the writer refuses more", w->path);
    return MC_OK;
}

void mc_trace_writer_free(mc_trace_writer *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0) {
        if (!w->failed)
            (void)buffer_flush(w, NULL);
        close(w->fd);
    }
    sodium_memzero(w->sk, sizeof w->sk);
    free(w->buf);
    free(w->path);
    free(w);
}

mc_status mc_trace_writer_open(const char *path, const Trace__V1__TraceHeader *header,
                               const mc_trace_writer_opts *opts, mc_trace_writer **out,
                               mc_error *err)
{
    if (out == NULL || path == NULL || header == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace writer: path, header and out are required");
    *out = NULL;
    if (sodium_init() < 0)
        return mc_error_set(err, MC_ERR_INTERNAL, "libsodium failed to initialize");
    mc_trace_writer_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (header->format_version != 0 && header->format_version != MC_TRACE_FORMAT_VERSION)
        return mc_error_set(err, MC_ERR_UNSUPPORTED,
                            "trace %s: this build writes format version %u, not %u", path,
                            MC_TRACE_FORMAT_VERSION, header->format_version);

    mc_trace_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "trace writer: out of memory");
    w->fd = -1;
    w->path = strdup(path);
    w->cap = o.buffer_bytes == 0 ? DEFAULT_BUFFER : o.buffer_bytes;
    if (w->cap < MIN_BUFFER)
        w->cap = MIN_BUFFER;
    w->buf = malloc(w->cap);
    w->fsync_every = o.fsync_every_ticks;
    if (w->path == NULL || w->buf == NULL) {
        mc_trace_writer_free(w);
        return mc_error_set(err, MC_ERR_NOMEM, "trace writer: out of memory");
    }
    if (o.signing_key_path != NULL) {
        mc_status st = mc_trace_key_load_secret(o.signing_key_path, w->sk, err);
        if (st != MC_OK) {
            mc_trace_writer_free(w);
            return mc_error_wrap(err, "trace %s: signing key", path);
        }
        w->has_key = true;
    }

    /* Pack the header with the version and build filled in. The copy is
     * shallow: only scalar and string pointers change. */
    Trace__V1__TraceHeader h = *header;
    h.format_version = MC_TRACE_FORMAT_VERSION;
    if (h.build_id == NULL || h.build_id[0] == '\0')
        h.build_id = (char *)mc_trace_build_id();
    if (h.compiler == NULL || h.compiler[0] == '\0')
        h.compiler = (char *)mc_trace_compiler();
    size_t hlen = trace__v1__trace_header__get_packed_size(&h);
    uint8_t *hbuf = malloc(hlen + 1);
    if (hbuf == NULL) {
        mc_trace_writer_free(w);
        return mc_error_set(err, MC_ERR_NOMEM, "trace writer: out of memory");
    }
    trace__v1__trace_header__pack(&h, hbuf);

    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (o.overwrite ? O_TRUNC : O_EXCL);
    w->fd = open(path, flags, 0644);
    if (w->fd < 0) {
        int e = errno;
        free(hbuf);
        mc_trace_writer_free(w);
        return mc_error_set(err, e == EEXIST ? MC_ERR_EXISTS : MC_ERR_IO, "trace %s: %s%s", path,
                            strerror(e), e == EEXIST ? " (refusing to overwrite a trace)" : "");
    }

    uint8_t pre[MC_TRACE_PREAMBLE_LEN];
    memcpy(pre, MC_TRACE_MAGIC, MC_TRACE_MAGIC_LEN);
    mc_trace_put_u32(pre + MC_TRACE_MAGIC_LEN, MC_TRACE_FORMAT_VERSION);
    mc_trace_chain_start(MC_TRACE_FORMAT_VERSION, w->chain);
    mc_status st = emit_raw(w, pre, sizeof pre, err);
    if (st == MC_OK)
        st = frame_simple(w, MC_TRACE_KIND_HEADER, hbuf, hlen, err);
    free(hbuf);
    if (st == MC_OK)
        st = buffer_flush(w, err);
    if (st != MC_OK) {
        mc_trace_writer_free(w);
        return st;
    }
    *out = w;
    return MC_OK;
}

mc_status mc_trace_writer_append(mc_trace_writer *w, uint64_t tick, uint32_t stage,
                                 const char *subject, const char *producer, uint64_t producer_seq,
                                 const uint8_t *payload, size_t len, mc_error *err)
{
    mc_status st = check_usable(w, err);
    if (st != MC_OK)
        return st;
    size_t slen = subject != NULL ? strlen(subject) : 0;
    size_t plen = producer != NULL ? strlen(producer) : 0;
    if (!mc_trace_name_valid(subject, slen))
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace %s: subject must be 1..255 printable ASCII characters without "
                            "spaces",
                            w->path);
    if (!mc_trace_name_valid(producer, plen))
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace %s: producer must be 1..255 printable ASCII characters without "
                            "spaces",
                            w->path);
    if (stage == 0 || stage > 255)
        return mc_error_set(err, MC_ERR_INVALID, "trace %s: %s: stage %u is not 1..255", w->path,
                            subject, stage);
    if (payload == NULL && len > 0)
        return mc_error_set(err, MC_ERR_INVALID, "trace %s: %s: NULL payload of %zu bytes", w->path,
                            subject, len);
    size_t body = MC_TRACE_RECORD_FIXED + slen + plen;
    if (len > MC_TRACE_MAX_BODY - body)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "trace %s: %s: payload of %zu bytes is over the frame limit of %u",
                            w->path, subject, len, MC_TRACE_MAX_BODY);
    body += len;

    mc_trace_key key = {.tick = tick, .stage = stage, .producer_seq = producer_seq};
    if (w->have_record && mc_trace_key_cmp(&key, &w->last_key) <= 0)
        return mc_error_set(
            err, MC_ERR_INVALID,
            "trace %s: record (tick %llu, stage %u, producer_seq %llu) on %s is out of canonical "
            "order: it would be record %llu at byte offset %llu, after record %llu (tick %llu, "
            "stage %u, producer_seq %llu) at byte offset %llu",
            w->path, (unsigned long long)tick, stage, (unsigned long long)producer_seq, subject,
            (unsigned long long)(w->records + 1), (unsigned long long)w->offset,
            (unsigned long long)w->records, (unsigned long long)w->last_key.tick, w->last_key.stage,
            (unsigned long long)w->last_key.producer_seq,
            (unsigned long long)w->last_record_offset);
    if (w->have_checkpoint && tick <= w->last_checkpoint_tick)
        return mc_error_set(
            err, MC_ERR_INVALID,
            "trace %s: record (tick %llu, stage %u, producer_seq %llu) on %s is out of canonical "
            "order: it would be record %llu at byte offset %llu, after the checkpoint of tick "
            "%llu at byte offset %llu, which closed that tick",
            w->path, (unsigned long long)tick, stage, (unsigned long long)producer_seq, subject,
            (unsigned long long)(w->records + 1), (unsigned long long)w->offset,
            (unsigned long long)w->last_checkpoint_tick,
            (unsigned long long)w->last_checkpoint_offset);

    uint8_t fixed[MC_TRACE_RECORD_FIXED];
    fixed[0] = MC_TRACE_KIND_RECORD;
    fixed[1] = (uint8_t)stage;
    fixed[2] = (uint8_t)slen;
    fixed[3] = (uint8_t)plen;
    mc_trace_put_u64(fixed + 4, w->records + 1);
    mc_trace_put_u64(fixed + 12, tick);
    mc_trace_put_u64(fixed + 20, producer_seq);

    uint64_t frame_offset = w->offset;
    st = frame_begin(w, (uint32_t)body, err);
    if (st == MC_OK)
        st = emit_covered(w, fixed, sizeof fixed, err);
    if (st == MC_OK)
        st = emit_covered(w, (const uint8_t *)subject, slen, err);
    if (st == MC_OK)
        st = emit_covered(w, (const uint8_t *)producer, plen, err);
    if (st == MC_OK && len > 0)
        st = emit_covered(w, payload, len, err);
    if (st == MC_OK)
        st = frame_end(w, err);
    if (st != MC_OK) {
        w->failed = true;
        return st;
    }
    w->records++;
    w->have_record = true;
    w->last_key = key;
    w->last_record_offset = frame_offset;
    if (tick > w->last_tick)
        w->last_tick = tick;
    return MC_OK;
}

mc_status mc_trace_writer_checkpoint(mc_trace_writer *w, uint64_t tick,
                                     const mc_trace_digest *digests, size_t n, mc_error *err)
{
    mc_status st = check_usable(w, err);
    if (st != MC_OK)
        return st;
    if (n > 255 || (n > 0 && digests == NULL))
        return mc_error_set(err, MC_ERR_INVALID, "trace %s: checkpoint of tick %llu: %zu digests",
                            w->path, (unsigned long long)tick, n);
    for (size_t i = 0; i < n; i++) {
        if (digests[i].stage == 0 || digests[i].stage > 255 ||
            (i > 0 && digests[i].stage <= digests[i - 1].stage))
            return mc_error_set(err, MC_ERR_INVALID,
                                "trace %s: checkpoint of tick %llu: digest stages must be 1..255 "
                                "and strictly increasing (digest %zu has stage %u)",
                                w->path, (unsigned long long)tick, i, digests[i].stage);
    }
    if (w->have_checkpoint && tick <= w->last_checkpoint_tick)
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace %s: checkpoint of tick %llu at byte offset %llu is out of "
                            "order: the checkpoint of tick %llu is at byte offset %llu",
                            w->path, (unsigned long long)tick, (unsigned long long)w->offset,
                            (unsigned long long)w->last_checkpoint_tick,
                            (unsigned long long)w->last_checkpoint_offset);
    if (w->have_record && tick < w->last_key.tick)
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace %s: checkpoint of tick %llu at byte offset %llu is out of "
                            "order: record %llu at byte offset %llu is of the later tick %llu",
                            w->path, (unsigned long long)tick, (unsigned long long)w->offset,
                            (unsigned long long)w->records,
                            (unsigned long long)w->last_record_offset,
                            (unsigned long long)w->last_key.tick);

    Trace__V1__ComponentDigest items[255];
    Trace__V1__ComponentDigest *ptrs[255];
    for (size_t i = 0; i < n; i++) {
        trace__v1__component_digest__init(&items[i]);
        items[i].stage = (Common__V1__Stage)digests[i].stage;
        items[i].digest.data = (uint8_t *)digests[i].digest;
        items[i].digest.len = MC_TRACE_HASH_BYTES;
        ptrs[i] = &items[i];
    }
    Trace__V1__Checkpoint cp = TRACE__V1__CHECKPOINT__INIT;
    cp.tick = tick;
    cp.n_digests = n;
    cp.digests = n > 0 ? ptrs : NULL;
    /* At most 255 * (1 + 2 + 3 + 32) + 11 bytes: fits on the stack. */
    uint8_t packed[255 * 40 + 16];
    size_t plen = trace__v1__checkpoint__get_packed_size(&cp);
    if (plen > sizeof packed)
        return mc_error_set(err, MC_ERR_INTERNAL, "trace checkpoint packs to %zu bytes", plen);
    trace__v1__checkpoint__pack(&cp, packed);

    uint64_t frame_offset = w->offset;
    st = frame_simple(w, MC_TRACE_KIND_CHECKPOINT, packed, plen, err);
    if (st == MC_OK)
        st = buffer_flush(w, err);
    if (st != MC_OK) {
        w->failed = true;
        return st;
    }
    w->checkpoints++;
    w->have_checkpoint = true;
    w->last_checkpoint_tick = tick;
    w->last_checkpoint_offset = frame_offset;
    if (tick > w->last_tick)
        w->last_tick = tick;
    if (w->fsync_every > 0 && ++w->since_fsync >= w->fsync_every) {
        w->since_fsync = 0;
        if (fdatasync(w->fd) != 0) {
            w->failed = true;
            return mc_error_set(err, MC_ERR_IO, "trace %s: fdatasync: %s", w->path,
                                strerror(errno));
        }
    }
    return MC_OK;
}

mc_status mc_trace_writer_flush(mc_trace_writer *w, mc_error *err)
{
    mc_status st = check_usable(w, err);
    if (st != MC_OK)
        return st;
    return buffer_flush(w, err);
}

mc_status mc_trace_writer_close(mc_trace_writer **wp, mc_trace_footer_info *info, mc_error *err)
{
    if (wp == NULL || *wp == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace writer is NULL");
    mc_trace_writer *w = *wp;
    *wp = NULL;
    mc_status st = check_usable(w, err);
    if (st != MC_OK) {
        mc_trace_writer_free(w);
        return st;
    }
    mc_trace_footer_info fi = {0};
    fi.record_count = w->records;
    fi.checkpoint_count = w->checkpoints;
    fi.last_tick = w->last_tick;
    memcpy(fi.final_hash, w->chain, MC_TRACE_HASH_BYTES);

    Trace__V1__TraceFooter f = TRACE__V1__TRACE_FOOTER__INIT;
    f.record_count = w->records;
    f.checkpoint_count = w->checkpoints;
    f.last_tick = w->last_tick;
    f.final_hash.data = fi.final_hash;
    f.final_hash.len = MC_TRACE_HASH_BYTES;
    uint8_t packed[128];
    size_t plen = trace__v1__trace_footer__get_packed_size(&f);
    if (plen > sizeof packed) {
        mc_trace_writer_free(w);
        return mc_error_set(err, MC_ERR_INTERNAL, "trace footer packs to %zu bytes", plen);
    }
    trace__v1__trace_footer__pack(&f, packed);
    st = frame_simple(w, MC_TRACE_KIND_FOOTER, packed, plen, err);
    if (st == MC_OK)
        memcpy(fi.footer_hash, w->chain, MC_TRACE_HASH_BYTES);

    if (st == MC_OK && w->has_key) {
        uint8_t sig[MC_TRACE_SIG_BODY_LEN - 1];
        sig[0] = MC_TRACE_SIG_ALG_ED25519;
        mc_trace_key_public(w->sk, sig + 1);
        mc_trace_sign(w->sk, fi.footer_hash, sig + 1 + MC_TRACE_PUBLIC_KEY_BYTES);
        st = frame_simple(w, MC_TRACE_KIND_SIGNATURE, sig, sizeof sig, err);
        fi.is_signed = st == MC_OK;
        memcpy(fi.public_key, sig + 1, MC_TRACE_PUBLIC_KEY_BYTES);
    }
    if (st == MC_OK)
        st = buffer_flush(w, err);
    if (st == MC_OK && fsync(w->fd) != 0)
        st = mc_error_set(err, MC_ERR_IO, "trace %s: fsync: %s", w->path, strerror(errno));
    fi.bytes = w->offset;
    if (close(w->fd) != 0 && st == MC_OK)
        st = mc_error_set(err, MC_ERR_IO, "trace %s: close: %s", w->path, strerror(errno));
    w->fd = -1;
    mc_trace_writer_free(w);
    if (st == MC_OK && info != NULL)
        *info = fi;
    return st;
}

uint64_t mc_trace_writer_records(const mc_trace_writer *w)
{
    return w != NULL ? w->records : 0;
}

void mc_trace_writer_chain(const mc_trace_writer *w, uint8_t out[MC_TRACE_HASH_BYTES])
{
    memcpy(out, w->chain, MC_TRACE_HASH_BYTES);
}
