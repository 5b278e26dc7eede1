/* Ed25519 keys for signing traces (FORMAT.md "Keys" and "SIGNATURE"). Key
 * files hold hexadecimal text: a secret key file 128 hex digits (libsodium's
 * 64-byte secret key, seed ‖ public key) or 64 (the 32-byte seed); a public
 * key file 64 hex digits. Whitespace around the digits is ignored. */
#ifndef MC_TRACE_KEYS_H
#define MC_TRACE_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "status/status.h"
#include "trace/format.h"

#define MC_TRACE_PUBLIC_KEY_BYTES 32
#define MC_TRACE_SECRET_KEY_BYTES 64
#define MC_TRACE_SIGNATURE_BYTES  64

/* Parses a secret key from hex text (len bytes at text) into sk. A 128-digit
 * key whose public half does not match its seed is refused. */
mc_status mc_trace_key_parse_secret(const char *text, size_t len,
                                    uint8_t sk[MC_TRACE_SECRET_KEY_BYTES], mc_error *err);
/* Reads and parses a secret key file. */
mc_status mc_trace_key_load_secret(const char *path, uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                                   mc_error *err);
mc_status mc_trace_key_parse_public(const char *text, size_t len,
                                    uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES], mc_error *err);
mc_status mc_trace_key_load_public(const char *path, uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES],
                                   mc_error *err);

/* The public half of a secret key. */
void mc_trace_key_public(const uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                         uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES]);

/* Signs / verifies the footer's chain value (the signed message is
 * MC_TRACE_SIG_DOMAIN ‖ footer_hash). verify returns MC_OK or
 * MC_ERR_CORRUPT. */
void mc_trace_sign(const uint8_t sk[MC_TRACE_SECRET_KEY_BYTES],
                   const uint8_t footer_hash[MC_TRACE_HASH_BYTES],
                   uint8_t sig[MC_TRACE_SIGNATURE_BYTES]);
mc_status mc_trace_sig_verify(const uint8_t pk[MC_TRACE_PUBLIC_KEY_BYTES],
                              const uint8_t footer_hash[MC_TRACE_HASH_BYTES],
                              const uint8_t sig[MC_TRACE_SIGNATURE_BYTES]);

#endif
