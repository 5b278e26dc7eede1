#include "trace/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

/* Key files are tiny; anything bigger is not a key file. */
#define KEY_FILE_MAX 1024

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Trims whitespace and decodes exactly want bytes, or fails. */
static bool parse_hex(const char *text, size_t len, uint8_t *out, size_t want, size_t *got)
{
    while (len > 0 && is_space(text[0])) {
        text++;
        len--;
    }
    while (len > 0 && is_space(text[len - 1]))
        len--;
    *got = len;
    if (len != 2 * want)
        return false;
    for (size_t i = 0; i < want; i++) {
        int hi = hex_val(text[2 * i]), lo = hex_val(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

mc_status mc_trace_key_parse_secret(const char *text, size_t len,
                                    uint8_t sk[MC_TRACE_SECRET_KEY_BYTES], mc_error *err)
{
    if (sodium_init() < 0)
        return mc_error_set(err, MC_ERR_INTERNAL, "libsodium failed to initialize");
    uint8_t buf[MC_TRACE_SECRET_KEY_BYTES];
    uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES];
    size_t got = 0;
    if (parse_hex(text, len, buf, MC_TRACE_SECRET_KEY_BYTES, &got)) {
        /* Rebuild the key from its seed: a file whose public half does not
         * belong to the seed is damaged, and would sign with a key that
         * verifiers cannot match. */
        crypto_sign_seed_keypair(pk, sk, buf);
        bool ok = sodium_memcmp(sk, buf, MC_TRACE_SECRET_KEY_BYTES) == 0;
        sodium_memzero(buf, sizeof buf);
        if (!ok) {
            sodium_memzero(sk, MC_TRACE_SECRET_KEY_BYTES);
            return mc_error_set(err, MC_ERR_INVALID,
                                "signing key: the public half of the 64-byte secret key does not "
                                "match its seed");
        }
        return MC_OK;
    }
    if (parse_hex(text, len, buf, 32, &got)) {
        crypto_sign_seed_keypair(pk, sk, buf);
        sodium_memzero(buf, sizeof buf);
        return MC_OK;
    }
    sodium_memzero(buf, sizeof buf);
    return mc_error_set(err, MC_ERR_INVALID,
                        "signing key: expected 128 hex digits (64-byte Ed25519 secret key) or 64 "
                        "(32-byte seed), found %zu characters that are not that",
                        got);
}

mc_status mc_trace_key_parse_public(const char *text, size_t len,
                                    uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES], mc_error *err)
{
    size_t got = 0;
    if (!parse_hex(text, len, pk, MC_TRACE_PUBLIC_KEY_BYTES, &got))
        return mc_error_set(err, MC_ERR_INVALID,
                            "public key: expected 64 hex digits (32-byte Ed25519 public key), "
                            "found %zu characters that are not that",
                            got);
    return MC_OK;
}

static mc_status read_small_file(const char *path, char *buf, size_t cap, size_t *len,
                                 mc_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mc_error_set(err, errno == ENOENT ? MC_ERR_NOT_FOUND : MC_ERR_IO, "%s: %s", path,
                            strerror(errno));
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            return mc_error_set(err, MC_ERR_IO, "%s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            close(fd);
            return mc_error_set(err, MC_ERR_INVALID, "%s: too big for a key file", path);
        }
    }
    close(fd);
    *len = n;
    return MC_OK;
}

mc_status mc_trace_key_load_secret(const char *path, uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                                   mc_error *err)
{
    char buf[KEY_FILE_MAX];
    size_t len = 0;
    mc_status st = read_small_file(path, buf, sizeof buf, &len, err);
    if (st == MC_OK) {
        st = mc_trace_key_parse_secret(buf, len, sk, err);
        if (st != MC_OK)
            mc_error_wrap(err, "%s", path);
    }
    sodium_memzero(buf, sizeof buf);
    return st;
}

mc_status mc_trace_key_load_public(const char *path, uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES],
                                   mc_error *err)
{
    char buf[KEY_FILE_MAX];
    size_t len = 0;
    mc_status st = read_small_file(path, buf, sizeof buf, &len, err);
    if (st == MC_OK) {
        st = mc_trace_key_parse_public(buf, len, pk, err);
        if (st != MC_OK)
            mc_error_wrap(err, "%s", path);
    }
    return st;
}

void mc_trace_key_public(const uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                         uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES])
{
    crypto_sign_ed25519_sk_to_pk(pk, sk);
}

static void sig_message(const uint8_t footer_hash[MC_TRACE_HASH_BYTES],
                        uint8_t msg[MC_TRACE_SIG_DOMAIN_LEN + MC_TRACE_HASH_BYTES])
{
    memcpy(msg, MC_TRACE_SIG_DOMAIN, MC_TRACE_SIG_DOMAIN_LEN);
    memcpy(msg + MC_TRACE_SIG_DOMAIN_LEN, footer_hash, MC_TRACE_HASH_BYTES);
}

void mc_trace_sign(const uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                   const uint8_t footer_hash[MC_TRACE_HASH_BYTES],
                   uint8_t sig[MC_TRACE_SIGNATURE_BYTES])
{
    uint8_t msg[MC_TRACE_SIG_DOMAIN_LEN + MC_TRACE_HASH_BYTES];
    sig_message(footer_hash, msg);
    crypto_sign_detached(sig, NULL, msg, sizeof msg, sk);
}

mc_status mc_trace_sig_verify(const uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES],
                              const uint8_t footer_hash[MC_TRACE_HASH_BYTES],
                              const uint8_t sig[MC_TRACE_SIGNATURE_BYTES])
{
    uint8_t msg[MC_TRACE_SIG_DOMAIN_LEN + MC_TRACE_HASH_BYTES];
    sig_message(footer_hash, msg);
    return crypto_sign_verify_detached(sig, msg, sizeof msg, pk) == 0 ? MC_OK : MC_ERR_CORRUPT;
}
