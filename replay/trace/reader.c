#include "trace/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trace/keys.h"

/* Read-ahead of the file reader; a frame bigger than this grows the buffer
 * to the frame's size, but only once the file is known to hold it. */
#define READ_AHEAD (1024u * 1024u)

struct mc_trace_reader {
    char *name;   /* the path, or "<memory>" */
    int fd;       /* -1 when reading from memory */
    uint8_t *buf; /* file mode: the window's storage */
    size_t cap;
    const uint8_t *win; /* the window: buf, or the caller's bytes */
    size_t win_len;
    uint64_t win_base; /* file offset of win[0] */
    size_t pos;        /* window index of the next frame */

    uint32_t version;
    uint8_t chain[MC_TRACE_HASH_BYTES];
    uint64_t frame; /* index of the next frame */
    uint64_t records;
    uint64_t checkpoints;
    bool have_record;
    mc_trace_key last_key;
    bool have_checkpoint;
    uint64_t last_checkpoint_tick;
    uint64_t last_tick;
    bool footer_seen;
    bool sig_seen;
    uint8_t footer_chain[MC_TRACE_HASH_BYTES];

    mc_trace_state state;
    mc_trace_problem problem;
    mc_status damage_status;
    char damage_msg[512];
    mc_trace_sig_state sig;
    bool has_pk;
    uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES];

    Trace__V1__TraceHeader *header;
    uint8_t *header_bytes;
    size_t header_len;
    /* Unpacked bodies handed out with the current record. */
    Trace__V1__Checkpoint *checkpoint;
    Trace__V1__TraceFooter *footer;
    char subject[MC_TRACE_NAME_MAX + 1];
    char producer[MC_TRACE_NAME_MAX + 1];
};

const char *mc_trace_state_name(mc_trace_state s)
{
    switch (s) {
    case MC_TRACE_READING: return "reading";
    case MC_TRACE_CLEAN: return "clean";
    case MC_TRACE_TORN: return "torn";
    case MC_TRACE_DAMAGED: return "damaged";
    }
    return "unknown";
}

const char *mc_trace_sig_state_name(mc_trace_sig_state s)
{
    switch (s) {
    case MC_TRACE_SIG_NONE: return "unsigned";
    case MC_TRACE_SIG_VERIFIED: return "verified";
    case MC_TRACE_SIG_UNCHECKED: return "signed, key not checked";
    case MC_TRACE_SIG_MISSING: return "missing";
    case MC_TRACE_SIG_WRONG_KEY: return "wrong key";
    case MC_TRACE_SIG_BAD: return "bad";
    }
    return "unknown";
}

static void release_bodies(mc_trace_reader *r)
{
    trace__v1__checkpoint__free_unpacked(r->checkpoint, NULL);
    r->checkpoint = NULL;
    trace__v1__trace_footer__free_unpacked(r->footer, NULL);
    r->footer = NULL;
}

void mc_trace_reader_free(mc_trace_reader *r)
{
    if (r == NULL)
        return;
    release_bodies(r);
    trace__v1__trace_header__free_unpacked(r->header, NULL);
    free(r->header_bytes);
    if (r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r->name);
    free(r);
}

static uint64_t cur_offset(const mc_trace_reader *r)
{
    return r->win_base + r->pos;
}

/* Records damage at the current frame: the reader stops for good and every
 * later call returns the same error. */
static mc_status damage(mc_trace_reader *r, uint64_t sequence, mc_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mc_status damage(mc_trace_reader *r, uint64_t sequence, mc_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem.what, sizeof r->problem.what, fmt, ap);
    va_end(ap);
    r->problem.frame = r->frame;
    r->problem.sequence = sequence;
    r->problem.offset = cur_offset(r);
    r->state = MC_TRACE_DAMAGED;
    r->damage_status = MC_ERR_CORRUPT;
    char rec[48] = "";
    if (sequence > 0)
        snprintf(rec, sizeof rec, " (record %llu)", (unsigned long long)sequence);
    snprintf(r->damage_msg, sizeof r->damage_msg,
             "trace %s: damaged: frame %llu%s at byte offset %llu: %s", r->name,
             (unsigned long long)r->frame, rec, (unsigned long long)r->problem.offset,
             r->problem.what);
    return mc_error_set(err, MC_ERR_CORRUPT, "%s", r->damage_msg);
}

static void torn(mc_trace_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void torn(mc_trace_reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem.what, sizeof r->problem.what, fmt, ap);
    va_end(ap);
    r->problem.frame = r->frame;
    r->problem.sequence = 0;
    r->problem.offset = cur_offset(r);
    r->state = MC_TRACE_TORN;
}

/* Makes need bytes available at win[pos]; false when the data ends first
 * (the trace is torn there, or still being written). */
static mc_status avail(mc_trace_reader *r, size_t need, bool *ok, mc_error *err)
{
    *ok = r->win_len - r->pos >= need;
    if (*ok || r->fd < 0)
        return MC_OK;
    /* Slide the unread bytes to the front, then read more. */
    size_t keep = r->win_len - r->pos;
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, keep);
        r->win_base += r->pos;
        r->pos = 0;
        r->win_len = keep;
    }
    if (need > r->cap) {
        /* Grow only for bytes the file holds: a damaged or hostile length
         * within the limit must not make us allocate for nothing. */
        struct stat sb;
        if (fstat(r->fd, &sb) != 0)
            return mc_error_set(err, MC_ERR_IO, "trace %s: fstat: %s", r->name, strerror(errno));
        if ((uint64_t)sb.st_size < r->win_base + need)
            return MC_OK;
        uint8_t *nb = realloc(r->buf, need);
        if (nb == NULL)
            return mc_error_set(err, MC_ERR_NOMEM, "trace %s: out of memory for a %zu-byte frame",
                                r->name, need);
        r->buf = nb;
        r->cap = need;
    }
    r->win = r->buf;
    while (r->win_len < need) {
        ssize_t n = read(r->fd, r->buf + r->win_len, r->cap - r->win_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return mc_error_set(err, MC_ERR_IO, "trace %s: read: %s", r->name, strerror(errno));
        }
        if (n == 0)
            break;
        r->win_len += (size_t)n;
    }
    *ok = r->win_len - r->pos >= need;
    return MC_OK;
}

/* Whether every byte from the current position to the end of the data is
 * zero. Reads the rest of a file in bounded chunks without keeping it. */
static mc_status rest_is_zero(mc_trace_reader *r, bool *zeros, mc_error *err)
{
    *zeros = false;
    for (size_t i = r->pos; i < r->win_len; i++)
        if (r->win[i] != 0)
            return MC_OK;
    if (r->fd >= 0) {
        uint8_t chunk[65536];
        uint64_t off = r->win_base + r->win_len;
        /* Bounded by the file's size: every pass moves off forward. */
        for (;;) {
            ssize_t n = pread(r->fd, chunk, sizeof chunk, (off_t)off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return mc_error_set(err, MC_ERR_IO, "trace %s: read: %s", r->name, strerror(errno));
            }
            if (n == 0)
                break;
            for (ssize_t i = 0; i < n; i++)
                if (chunk[i] != 0)
                    return MC_OK;
            off += (uint64_t)n;
        }
    }
    *zeros = true;
    return MC_OK;
}

static bool names_copy(char *dst, const uint8_t *src, size_t len)
{
    if (!mc_trace_name_valid((const char *)src, len))
        return false;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

static mc_status check_record(mc_trace_reader *r, const uint8_t *body, uint32_t len,
                              mc_trace_record *rec, mc_error *err)
{
    if (len < MC_TRACE_RECORD_FIXED + 2)
        return damage(r, 0, err, "record body of %u bytes is shorter than its fixed fields", len);
    uint32_t stage = body[1];
    size_t slen = body[2], plen = body[3];
    uint64_t seq = mc_trace_get_u64(body + 4);
    uint64_t tick = mc_trace_get_u64(body + 12);
    uint64_t pseq = mc_trace_get_u64(body + 20);
    if (seq != r->records + 1)
        return damage(r, r->records + 1, err,
                      "record sequence %llu where %llu was expected (a record is missing, "
                      "repeated or moved)",
                      (unsigned long long)seq, (unsigned long long)(r->records + 1));
    if (stage == 0)
        return damage(r, seq, err, "stage 0 (unspecified)");
    if (MC_TRACE_RECORD_FIXED + slen + plen > len)
        return damage(r, seq, err, "subject and producer lengths (%zu, %zu) overrun the body of %u",
                      slen, plen, len);
    if (!names_copy(r->subject, body + MC_TRACE_RECORD_FIXED, slen))
        return damage(r, seq, err, "subject is not 1..255 printable ASCII characters");
    if (!names_copy(r->producer, body + MC_TRACE_RECORD_FIXED + slen, plen))
        return damage(r, seq, err, "producer is not 1..255 printable ASCII characters");
    mc_trace_key key = {.tick = tick, .stage = stage, .producer_seq = pseq};
    if (r->have_record && mc_trace_key_cmp(&key, &r->last_key) <= 0)
        return damage(r, seq, err,
                      "record (tick %llu, stage %u, producer_seq %llu) is out of canonical order "
                      "after (tick %llu, stage %u, producer_seq %llu)",
                      (unsigned long long)tick, stage, (unsigned long long)pseq,
                      (unsigned long long)r->last_key.tick, r->last_key.stage,
                      (unsigned long long)r->last_key.producer_seq);
    if (r->have_checkpoint && tick <= r->last_checkpoint_tick)
        return damage(r, seq, err, "record of tick %llu after the checkpoint of tick %llu",
                      (unsigned long long)tick, (unsigned long long)r->last_checkpoint_tick);
    r->records++;
    r->have_record = true;
    r->last_key = key;
    if (tick > r->last_tick)
        r->last_tick = tick;
    rec->sequence = seq;
    rec->tick = tick;
    rec->stage = stage;
    rec->producer_seq = pseq;
    rec->subject = r->subject;
    rec->producer = r->producer;
    rec->payload = body + MC_TRACE_RECORD_FIXED + slen + plen;
    rec->payload_len = len - MC_TRACE_RECORD_FIXED - slen - plen;
    return MC_OK;
}

static mc_status check_checkpoint(mc_trace_reader *r, const uint8_t *body, uint32_t len,
                                  mc_trace_record *rec, mc_error *err)
{
    Trace__V1__Checkpoint *cp = trace__v1__checkpoint__unpack(NULL, len - 1, body + 1);
    if (cp == NULL)
        return damage(r, 0, err, "checkpoint body is not a trace.v1.Checkpoint");
    r->checkpoint = cp;
    if (cp->n_digests > 255)
        return damage(r, 0, err, "checkpoint of tick %llu has %zu digests",
                      (unsigned long long)cp->tick, cp->n_digests);
    for (size_t i = 0; i < cp->n_digests; i++) {
        const Trace__V1__ComponentDigest *d = cp->digests[i];
        uint32_t stage = (uint32_t)d->stage;
        if (stage == 0 || stage > 255 || (i > 0 && stage <= (uint32_t)cp->digests[i - 1]->stage))
            return damage(r, 0, err,
                          "checkpoint of tick %llu: digest %zu has stage %u (stages must be "
                          "1..255, strictly increasing)",
                          (unsigned long long)cp->tick, i, stage);
        if (d->digest.len != MC_TRACE_HASH_BYTES)
            return damage(r, 0, err, "checkpoint of tick %llu: digest %zu is %zu bytes, not 32",
                          (unsigned long long)cp->tick, i, d->digest.len);
    }
    if (r->have_checkpoint && cp->tick <= r->last_checkpoint_tick)
        return damage(r, 0, err, "checkpoint of tick %llu after the checkpoint of tick %llu",
                      (unsigned long long)cp->tick, (unsigned long long)r->last_checkpoint_tick);
    if (r->have_record && cp->tick < r->last_key.tick)
        return damage(r, 0, err, "checkpoint of tick %llu after a record of tick %llu",
                      (unsigned long long)cp->tick, (unsigned long long)r->last_key.tick);
    r->checkpoints++;
    r->have_checkpoint = true;
    r->last_checkpoint_tick = cp->tick;
    if (cp->tick > r->last_tick)
        r->last_tick = cp->tick;
    rec->tick = cp->tick;
    rec->checkpoint = cp;
    return MC_OK;
}

static mc_status check_footer(mc_trace_reader *r, const uint8_t *body, uint32_t len,
                              const uint8_t prev_chain[MC_TRACE_HASH_BYTES], mc_trace_record *rec,
                              mc_error *err)
{
    Trace__V1__TraceFooter *f = trace__v1__trace_footer__unpack(NULL, len - 1, body + 1);
    if (f == NULL)
        return damage(r, 0, err, "footer body is not a trace.v1.TraceFooter");
    r->footer = f;
    if (f->record_count != r->records)
        return damage(r, 0, err, "footer counts %llu records, the file holds %llu",
                      (unsigned long long)f->record_count, (unsigned long long)r->records);
    if (f->checkpoint_count != r->checkpoints)
        return damage(r, 0, err, "footer counts %llu checkpoints, the file holds %llu",
                      (unsigned long long)f->checkpoint_count, (unsigned long long)r->checkpoints);
    if (f->last_tick != r->last_tick)
        return damage(r, 0, err, "footer says the last tick is %llu, the file's is %llu",
                      (unsigned long long)f->last_tick, (unsigned long long)r->last_tick);
    if (f->final_hash.len != MC_TRACE_HASH_BYTES ||
        memcmp(f->final_hash.data, prev_chain, MC_TRACE_HASH_BYTES) != 0)
        return damage(r, 0, err, "footer's final hash differs from the hash chain");
    r->footer_seen = true;
    rec->tick = f->last_tick;
    rec->footer = f;
    return MC_OK;
}

static mc_status check_signature(mc_trace_reader *r, const uint8_t *body, uint32_t len,
                                 mc_trace_record *rec, mc_error *err)
{
    if (len != MC_TRACE_SIG_BODY_LEN || body[1] != MC_TRACE_SIG_ALG_ED25519)
        return damage(r, 0, err, "signature frame of %u bytes, algorithm %u (expected %u, %u)", len,
                      body[1], MC_TRACE_SIG_BODY_LEN, MC_TRACE_SIG_ALG_ED25519);
    const uint8_t *signer = body + 2;
    const uint8_t *sig = body + 2 + MC_TRACE_PUBLIC_KEY_BYTES;
    if (r->has_pk && sodium_memcmp(signer, r->pk, MC_TRACE_PUBLIC_KEY_BYTES) != 0) {
        r->sig = MC_TRACE_SIG_WRONG_KEY;
        char hex[2 * MC_TRACE_PUBLIC_KEY_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, signer, MC_TRACE_PUBLIC_KEY_BYTES);
        return damage(r, 0, err, "signed by key %.16s..., not by the public key given", hex);
    }
    const uint8_t *key = r->has_pk ? r->pk : signer;
    if (mc_trace_sig_verify(key, r->footer_chain, sig) != MC_OK) {
        r->sig = MC_TRACE_SIG_BAD;
        return damage(r, 0, err, "the Ed25519 signature does not verify");
    }
    r->sig = r->has_pk ? MC_TRACE_SIG_VERIFIED : MC_TRACE_SIG_UNCHECKED;
    r->sig_seen = true;
    rec->signer_key = signer;
    return MC_OK;
}

/* The end of the data at a frame boundary. */
static mc_status at_end(mc_trace_reader *r, mc_error *err)
{
    if (!r->footer_seen) {
        torn(r,
             "the trace ends after %llu records without a footer (the run did not end "
             "cleanly, or is still being written)",
             (unsigned long long)r->records);
        return MC_OK;
    }
    if (r->has_pk && !r->sig_seen) {
        r->sig = MC_TRACE_SIG_MISSING;
        return damage(r, 0, err, "the trace is not signed, but a public key was given");
    }
    r->state = MC_TRACE_CLEAN;
    return MC_OK;
}

/* Reads and verifies one frame at the current position. expect_header is
 * true for frame 0 only. */
static mc_status read_frame(mc_trace_reader *r, bool expect_header, mc_trace_record *rec,
                            mc_error *err)
{
    memset(rec, 0, sizeof *rec);
    release_bodies(r);
    bool ok = false;
    mc_status st = avail(r, 1, &ok, err);
    if (st != MC_OK)
        return st;
    if (!ok) {
        if (expect_header) {
            torn(r, "the trace ends before its header frame");
            return MC_OK;
        }
        return at_end(r, err);
    }
    if (r->sig_seen)
        return damage(r, 0, err, "data after the signature");
    if ((st = avail(r, MC_TRACE_FRAME_PREFIX_LEN, &ok, err)) != MC_OK)
        return st;
    if (!ok) {
        torn(r, "the trace ends inside a frame's length (%zu of %u bytes)", r->win_len - r->pos,
             MC_TRACE_FRAME_PREFIX_LEN);
        return MC_OK;
    }
    const uint8_t *f = r->win + r->pos;
    uint32_t len = mc_trace_get_u32(f);
    bool len_ok = mc_trace_crc32c(0, f, 4) == mc_trace_get_u32(f + 4);
    if (!len_ok || len == 0) {
        /* A crash can leave the end of a file zero-filled (blocks allocated,
         * data never written): a tail of zeros is torn, not damaged. */
        bool zeros = false;
        if ((st = rest_is_zero(r, &zeros, err)) != MC_OK)
            return st;
        if (zeros) {
            torn(r, "the trace ends with zero bytes where a frame should be (as a crash can "
                    "leave)");
            return MC_OK;
        }
        f = r->win + r->pos;
    }
    if (!len_ok)
        return damage(r, 0, err, "the frame length field is damaged (its check does not match)");
    if (len == 0 || len > MC_TRACE_MAX_BODY)
        return damage(r, 0, err, "frame length %u is outside 1..%u", len, MC_TRACE_MAX_BODY);
    if (r->footer_seen && len != MC_TRACE_SIG_BODY_LEN)
        return damage(r, 0, err,
                      "a frame of %u bytes after the footer (only a signature may follow it)", len);
    size_t total = (size_t)len + MC_TRACE_FRAME_OVERHEAD;
    if ((st = avail(r, total, &ok, err)) != MC_OK)
        return st;
    if (!ok) {
        torn(r, "the trace ends inside a frame of %zu bytes (%zu present)", total,
             r->win_len - r->pos);
        return MC_OK;
    }
    f = r->win + r->pos;
    const uint8_t *body = f + MC_TRACE_FRAME_PREFIX_LEN;
    size_t covered = MC_TRACE_FRAME_PREFIX_LEN + len;
    if (mc_trace_crc32c(0, f, covered) != mc_trace_get_u32(f + covered))
        return damage(r, body[0] == MC_TRACE_KIND_RECORD ? r->records + 1 : 0, err,
                      "checksum mismatch: the frame's bytes were changed");
    uint8_t prev[MC_TRACE_HASH_BYTES], chain[MC_TRACE_HASH_BYTES];
    memcpy(prev, r->chain, sizeof prev);
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, MC_TRACE_HASH_BYTES);
    crypto_generichash_update(&hs, prev, sizeof prev);
    crypto_generichash_update(&hs, f, covered + 4);
    crypto_generichash_final(&hs, chain, sizeof chain);
    const uint8_t *stored = f + covered + 4;
    if (memcmp(chain, stored, sizeof chain) != 0)
        return damage(r, body[0] == MC_TRACE_KIND_RECORD ? r->records + 1 : 0, err,
                      "hash chain mismatch: the stored hash was changed, or a frame before it "
                      "was changed, removed, inserted or moved");

    mc_trace_kind kind = (mc_trace_kind)body[0];
    rec->kind = kind;
    rec->frame = r->frame;
    rec->offset = cur_offset(r);
    rec->frame_len = (uint32_t)total;
    rec->body = body;
    rec->body_len = len;
    rec->chain = stored;
    if (expect_header != (kind == MC_TRACE_KIND_HEADER))
        return damage(r, 0, err,
                      expect_header ? "the first frame is a %s, not the header"
                                    : "a second %s frame",
                      mc_trace_kind_name(kind));
    if (r->footer_seen && kind != MC_TRACE_KIND_SIGNATURE)
        return damage(r, 0, err, "a %s frame after the footer", mc_trace_kind_name(kind));
    switch (kind) {
    case MC_TRACE_KIND_HEADER: {
        Trace__V1__TraceHeader *h = trace__v1__trace_header__unpack(NULL, len - 1, body + 1);
        if (h == NULL)
            return damage(r, 0, err, "header body is not a trace.v1.TraceHeader");
        r->header = h;
        if (h->format_version != r->version)
            return damage(r, 0, err, "header says format version %u, the preamble %u",
                          h->format_version, r->version);
        r->header_bytes = malloc(len - 1 > 0 ? len - 1 : 1);
        if (r->header_bytes == NULL)
            return mc_error_set(err, MC_ERR_NOMEM, "trace %s: out of memory", r->name);
        memcpy(r->header_bytes, body + 1, len - 1);
        r->header_len = len - 1;
        break;
    }
    case MC_TRACE_KIND_RECORD: st = check_record(r, body, len, rec, err); break;
    case MC_TRACE_KIND_CHECKPOINT: st = check_checkpoint(r, body, len, rec, err); break;
    case MC_TRACE_KIND_FOOTER: st = check_footer(r, body, len, prev, rec, err); break;
    case MC_TRACE_KIND_SIGNATURE:
        if (!r->footer_seen)
            return damage(r, 0, err, "a signature frame before the footer");
        st = check_signature(r, body, len, rec, err);
        break;
    default: return damage(r, 0, err, "unknown frame kind %u", body[0]);
    }
    if (st != MC_OK)
        return st;
    memcpy(r->chain, chain, sizeof chain);
    if (kind == MC_TRACE_KIND_FOOTER)
        memcpy(r->footer_chain, chain, sizeof chain);
    r->frame++;
    r->pos += total;
    r->state = MC_TRACE_READING;
    return MC_OK;
}

static mc_status reader_start(mc_trace_reader *r, const mc_trace_reader_opts *opts,
                              mc_trace_reader **out, mc_error *err)
{
    if (opts != NULL && opts->public_key != NULL) {
        r->has_pk = true;
        memcpy(r->pk, opts->public_key, MC_TRACE_PUBLIC_KEY_BYTES);
    }
    bool ok = false;
    mc_status st = avail(r, MC_TRACE_PREAMBLE_LEN, &ok, err);
    if (st != MC_OK)
        goto fail;
    if (!ok || memcmp(r->win, MC_TRACE_MAGIC, MC_TRACE_MAGIC_LEN) != 0) {
        size_t have = r->win_len < MC_TRACE_MAGIC_LEN ? r->win_len : MC_TRACE_MAGIC_LEN;
        if (ok || memcmp(r->win, MC_TRACE_MAGIC, have) != 0) {
            st = mc_error_set(err, MC_ERR_PARSE,
                              "trace %s: not a Microcloud trace (no MCTRACE magic)", r->name);
            goto fail;
        }
        st = mc_error_set(err, MC_ERR_CORRUPT,
                          "trace %s: torn: the file ends inside its 12-byte preamble (%zu bytes)",
                          r->name, r->win_len);
        goto fail;
    }
    r->version = mc_trace_get_u32(r->win + MC_TRACE_MAGIC_LEN);
    if (!mc_trace_version_readable(r->version)) {
        st = mc_error_set(err, MC_ERR_UNSUPPORTED,
                          "trace %s: format version %u is not supported; this build reads "
                          "version(s) %s",
                          r->name, r->version, mc_trace_readable_versions());
        goto fail;
    }
    mc_trace_chain_start(r->version, r->chain);
    r->pos = MC_TRACE_PREAMBLE_LEN;
    mc_trace_record rec;
    st = read_frame(r, true, &rec, err);
    if (st != MC_OK)
        goto fail;
    if (r->state == MC_TRACE_TORN) {
        st = mc_error_set(err, MC_ERR_CORRUPT, "trace %s: torn: %s", r->name, r->problem.what);
        goto fail;
    }
    *out = r;
    return MC_OK;
fail:
    mc_trace_reader_free(r);
    return st;
}

static mc_trace_reader *reader_alloc(const char *name)
{
    if (sodium_init() < 0)
        return NULL;
    mc_trace_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->fd = -1;
    r->name = strdup(name);
    if (r->name == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

mc_status mc_trace_reader_open(const char *path, const mc_trace_reader_opts *opts,
                               mc_trace_reader **out, mc_error *err)
{
    if (path == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace reader: path and out are required");
    *out = NULL;
    mc_trace_reader *r = reader_alloc(path);
    if (r == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "trace reader: out of memory");
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        mc_trace_reader_free(r);
        return mc_error_set(err, e == ENOENT ? MC_ERR_NOT_FOUND : MC_ERR_IO, "trace %s: %s", path,
                            strerror(e));
    }
    r->cap = READ_AHEAD;
    r->buf = malloc(r->cap);
    if (r->buf == NULL) {
        mc_trace_reader_free(r);
        return mc_error_set(err, MC_ERR_NOMEM, "trace reader: out of memory");
    }
    r->win = r->buf;
    return reader_start(r, opts, out, err);
}

mc_status mc_trace_reader_open_buffer(const uint8_t *data, size_t len,
                                      const mc_trace_reader_opts *opts, mc_trace_reader **out,
                                      mc_error *err)
{
    if ((data == NULL && len > 0) || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace reader: data and out are required");
    *out = NULL;
    mc_trace_reader *r = reader_alloc("<memory>");
    if (r == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "trace reader: out of memory");
    static const uint8_t empty[1];
    r->win = data != NULL ? data : empty;
    r->win_len = len;
    return reader_start(r, opts, out, err);
}

const Trace__V1__TraceHeader *mc_trace_reader_header(const mc_trace_reader *r)
{
    return r->header;
}

const uint8_t *mc_trace_reader_header_bytes(const mc_trace_reader *r, size_t *len)
{
    *len = r->header_len;
    return r->header_bytes;
}

mc_status mc_trace_reader_next(mc_trace_reader *r, mc_trace_record *rec, mc_error *err)
{
    if (r == NULL || rec == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace reader: reader and record are required");
    if (r->state == MC_TRACE_DAMAGED) {
        memset(rec, 0, sizeof *rec);
        return mc_error_set(err, r->damage_status, "%s", r->damage_msg);
    }
    if (r->state == MC_TRACE_CLEAN) {
        memset(rec, 0, sizeof *rec);
        release_bodies(r);
        return MC_OK;
    }
    /* READING, or TORN: try again, the file may have grown since. */
    return read_frame(r, false, rec, err);
}

mc_trace_state mc_trace_reader_state(const mc_trace_reader *r)
{
    return r->state;
}

const mc_trace_problem *mc_trace_reader_problem(const mc_trace_reader *r)
{
    return r->state == MC_TRACE_TORN || r->state == MC_TRACE_DAMAGED ? &r->problem : NULL;
}

mc_trace_sig_state mc_trace_reader_signature(const mc_trace_reader *r)
{
    return r->sig;
}

void mc_trace_reader_chain(const mc_trace_reader *r, uint8_t out[MC_TRACE_HASH_BYTES])
{
    memcpy(out, r->chain, MC_TRACE_HASH_BYTES);
}

/* ---- verify ---- */

static void count_subject(mc_trace_summary *s, const char *subject, size_t bytes)
{
    size_t lo = 0, hi = s->subject_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->subjects[mid].subject, subject);
        if (c == 0) {
            s->subjects[mid].records++;
            s->subjects[mid].payload_bytes += bytes;
            return;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (s->subject_count == MC_TRACE_SUMMARY_SUBJECTS) {
        s->other_records++;
        return;
    }
    memmove(&s->subjects[lo + 1], &s->subjects[lo],
            (s->subject_count - lo) * sizeof s->subjects[0]);
    memset(&s->subjects[lo], 0, sizeof s->subjects[0]);
    snprintf(s->subjects[lo].subject, sizeof s->subjects[lo].subject, "%s", subject);
    s->subjects[lo].records = 1;
    s->subjects[lo].payload_bytes = bytes;
    s->subject_count++;
}

static mc_status verify_reader(mc_trace_reader *r, mc_trace_summary *s, mc_error *err)
{
    s->format_version = r->version;
    s->frames = 1;
    bool have_tick = false;
    uint64_t prev_tick = 0;
    mc_trace_record rec;
    mc_status st;
    /* Bounded by the file: each step consumes a frame or ends. */
    while ((st = mc_trace_reader_next(r, &rec, err)) == MC_OK && rec.kind != MC_TRACE_KIND_NONE) {
        s->frames++;
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            s->records++;
            count_subject(s, rec.subject, rec.payload_len);
        } else if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            s->checkpoints++;
        } else if (rec.kind == MC_TRACE_KIND_FOOTER) {
            s->has_footer = true;
        }
        if (rec.kind == MC_TRACE_KIND_RECORD || rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            if (!have_tick) {
                s->first_tick = rec.tick;
                s->ticks = 1;
            } else if (rec.tick != prev_tick) {
                s->ticks++;
            }
            have_tick = true;
            prev_tick = rec.tick;
            s->last_tick = rec.tick;
        }
    }
    s->state = r->state;
    s->signature = r->sig;
    s->valid_bytes = cur_offset(r);
    mc_trace_reader_chain(r, s->final_hash);
    if (r->state == MC_TRACE_TORN || r->state == MC_TRACE_DAMAGED)
        s->problem = r->problem;
    if (st != MC_OK)
        return st;
    if (r->state == MC_TRACE_TORN)
        return mc_error_set(err, MC_ERR_CORRUPT,
                            "trace %s: torn: frame %llu at byte offset %llu: %s (the %llu records "
                            "before it are intact)",
                            r->name, (unsigned long long)r->problem.frame,
                            (unsigned long long)r->problem.offset, r->problem.what,
                            (unsigned long long)s->records);
    return MC_OK;
}

mc_status mc_trace_verify(const char *path, const uint8_t *public_key, mc_trace_summary *summary,
                          mc_error *err)
{
    memset(summary, 0, sizeof *summary);
    mc_trace_reader_opts o = {.public_key = public_key};
    mc_trace_reader *r = NULL;
    mc_status st = mc_trace_reader_open(path, &o, &r, err);
    if (st != MC_OK) {
        summary->state = MC_TRACE_DAMAGED;
        return st;
    }
    st = verify_reader(r, summary, err);
    mc_trace_reader_free(r);
    return st;
}

mc_status mc_trace_verify_buffer(const uint8_t *data, size_t len, const uint8_t *public_key,
                                 mc_trace_summary *summary, mc_error *err)
{
    memset(summary, 0, sizeof *summary);
    mc_trace_reader_opts o = {.public_key = public_key};
    mc_trace_reader *r = NULL;
    mc_status st = mc_trace_reader_open_buffer(data, len, &o, &r, err);
    if (st != MC_OK) {
        summary->state = MC_TRACE_DAMAGED;
        return st;
    }
    st = verify_reader(r, summary, err);
    mc_trace_reader_free(r);
    return st;
}

/* ---- compare ---- */

static mc_status pack_header_without_time(const Trace__V1__TraceHeader *h, uint8_t **out,
                                          size_t *len)
{
    Trace__V1__TraceHeader c = *h;
    c.start_time_unix_ms = 0;
    *len = trace__v1__trace_header__get_packed_size(&c);
    *out = malloc(*len + 1);
    if (*out == NULL)
        return MC_ERR_NOMEM;
    trace__v1__trace_header__pack(&c, *out);
    return MC_OK;
}

static void diff_set(mc_trace_diff *d, const mc_trace_record *a, const mc_trace_record *b,
                     const char *what)
{
    d->equal = false;
    d->frame = a->frame != 0 ? a->frame : b->frame;
    d->offset_a = a->offset;
    d->offset_b = b->offset;
    snprintf(d->what, sizeof d->what, "%s", what);
}

/* Next frame that is not a signature (signatures differ with the chain). */
static mc_status next_unsigned(mc_trace_reader *r, mc_trace_record *rec, mc_error *err)
{
    mc_status st;
    do
        st = mc_trace_reader_next(r, rec, err);
    while (st == MC_OK && rec->kind == MC_TRACE_KIND_SIGNATURE);
    return st;
}

static mc_status compare_readers(mc_trace_reader *a, mc_trace_reader *b, mc_trace_diff *d,
                                 mc_error *err)
{
    uint8_t *ha = NULL, *hb = NULL;
    size_t la = 0, lb = 0;
    if (pack_header_without_time(a->header, &ha, &la) != MC_OK ||
        pack_header_without_time(b->header, &hb, &lb) != MC_OK) {
        free(ha);
        free(hb);
        return mc_error_set(err, MC_ERR_NOMEM, "trace compare: out of memory");
    }
    bool same = la == lb && memcmp(ha, hb, la) == 0;
    free(ha);
    free(hb);
    if (!same) {
        d->equal = false;
        d->frame = 0;
        d->offset_a = d->offset_b = MC_TRACE_PREAMBLE_LEN;
        snprintf(d->what, sizeof d->what, "headers differ (start time aside)");
        return MC_OK;
    }
    for (;;) {
        mc_trace_record ra, rb;
        mc_status st = next_unsigned(a, &ra, err);
        if (st == MC_OK)
            st = next_unsigned(b, &rb, err);
        if (st != MC_OK)
            return st;
        if (ra.kind != rb.kind) {
            diff_set(d, &ra, &rb, "frames of different kinds (or one trace is longer)");
            return MC_OK;
        }
        if (ra.kind == MC_TRACE_KIND_NONE)
            break;
        if (ra.kind == MC_TRACE_KIND_FOOTER) {
            if (ra.footer->record_count != rb.footer->record_count ||
                ra.footer->checkpoint_count != rb.footer->checkpoint_count ||
                ra.footer->last_tick != rb.footer->last_tick) {
                diff_set(d, &ra, &rb, "footers differ");
                return MC_OK;
            }
            continue;
        }
        if (ra.body_len != rb.body_len || memcmp(ra.body, rb.body, ra.body_len) != 0) {
            char what[128];
            if (ra.kind == MC_TRACE_KIND_RECORD)
                snprintf(what, sizeof what, "record %llu differs (tick %llu, %s)",
                         (unsigned long long)ra.sequence, (unsigned long long)ra.tick, ra.subject);
            else
                snprintf(what, sizeof what, "%s of tick %llu differs", mc_trace_kind_name(ra.kind),
                         (unsigned long long)ra.tick);
            diff_set(d, &ra, &rb, what);
            return MC_OK;
        }
    }
    if (a->state != MC_TRACE_CLEAN || b->state != MC_TRACE_CLEAN)
        return mc_error_set(err, MC_ERR_CORRUPT, "trace compare: %s is torn: %s",
                            a->state != MC_TRACE_CLEAN ? a->name : b->name,
                            a->state != MC_TRACE_CLEAN ? a->problem.what : b->problem.what);
    d->equal = true;
    return MC_OK;
}

mc_status mc_trace_compare(const char *path_a, const char *path_b, mc_trace_diff *diff,
                           mc_error *err)
{
    memset(diff, 0, sizeof *diff);
    mc_trace_reader *a = NULL, *b = NULL;
    mc_status st = mc_trace_reader_open(path_a, NULL, &a, err);
    if (st == MC_OK)
        st = mc_trace_reader_open(path_b, NULL, &b, err);
    if (st == MC_OK)
        st = compare_readers(a, b, diff, err);
    mc_trace_reader_free(a);
    mc_trace_reader_free(b);
    return st;
}
