/* Internal interfaces of the portable core. Nothing here is part of the public API. */
#ifndef OTTER_INTERNAL_H
#define OTTER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "otter_agent.h"

/* ---- JSON: a validating scanner for the server's answers (hostile input). ---- */
typedef enum { OJ_NONE = 0, OJ_STRING, OJ_NUMBER, OJ_OBJECT, OJ_ARRAY, OJ_TRUE, OJ_FALSE, OJ_NULL } oj_type_t;

typedef struct {
    oj_type_t type;
    const char *start; /* the raw value, quotes included for strings */
    size_t len;
} oj_value_t;

#define OJ_MAX_DEPTH 8

/* Validates the whole document (one object) and finds `key` at the top level, or `key` inside
 * the object at top-level `outer` when `outer` is not NULL. Returns 0 when the document is
 * valid (out->type is OJ_NONE when the key is absent), -1 when it is malformed. */
int oj_find(const char *json, size_t len, const char *outer, const char *key, oj_value_t *out);
/* Copies a string value, unescaped, NUL-terminated. Returns its length or -1 (not a string,
 * too long, a control character or a non-ASCII escape). */
int oj_string(const oj_value_t *v, char *out, size_t cap);
/* Reads a non-negative integer that fits in 32 bits. Returns 0 or -1. */
int oj_u32(const oj_value_t *v, uint32_t *out);

/* ---- Base64 (RFC 4648, padded). ---- */
/* Decodes `in`; with `skip_space`, line breaks and spaces are ignored (PEM). Returns the decoded
 * length or -1. */
int ob64_decode(const char *in, size_t len, uint8_t *out, size_t cap, int skip_space);

/* ---- Signed envelope and manifest (docs/manifest.md). ---- */
#define OTTER_MAX_ENVELOPE 816 /* 8 + 226 + 8 * 72, rounded up */
#define OTTER_MANIFEST_MIN 98
#define OTTER_MANIFEST_MAX 226
#define OTTER_SIG_LEN 72

typedef struct {
    const uint8_t *manifest;
    uint16_t manifest_len;
    uint8_t flags;
    uint16_t chip;
    uint32_t security_counter;
    uint32_t image_size;
    uint64_t created_at;
    uint64_t expires_at;
    const uint8_t *image_sha256;
    const char *product;
    uint8_t product_len;
    const char *version;
    uint8_t version_len;
    uint8_t sig_count;
    const uint8_t *sigs; /* sig_count entries of key_id (8) || r (32) || s (32) */
} otter_envelope_t;

#define OTTER_MF_EXPIRES 0x01u
#define OTTER_MF_DELTA 0x02u

/* Parses an envelope and its manifest, refusing anything the format does not allow. */
int otter_envelope_parse(const uint8_t *buf, size_t len, otter_envelope_t *out);

typedef enum {
    OTTER_VERIFY_OK = 0,
    OTTER_VERIFY_NO_TRUSTED_KEY = -1, /* nobody we trust signed */
    OTTER_VERIFY_BAD_SIGNATURE = -2,  /* a trusted key's signature does not verify */
} otter_verify_t;

/* Verifies: at least one signature by a trusted key, and none by a trusted key that fails. */
otter_verify_t otter_envelope_verify(const otter_envelope_t *env, const otter_port_t *port,
                                     const uint8_t (*key_ids)[8], const otter_pubkey_t *keys,
                                     size_t key_count);

/* The key id: the first 8 bytes of SHA-256 over the SEC1 point. */
void otter_key_id(const otter_port_t *port, const otter_pubkey_t *key, uint8_t id[8]);

/* ---- Small helpers. ---- */
uint32_t otter_crc32(const uint8_t *data, size_t len);

/* A bounded text writer: appends until full, then remembers it overflowed. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    int overflow;
} otter_text_t;

void ot_init(otter_text_t *t, char *buf, size_t cap);
void ot_str(otter_text_t *t, const char *s);
void ot_mem(otter_text_t *t, const char *s, size_t n);
void ot_u32(otter_text_t *t, uint32_t v);
void ot_hex(otter_text_t *t, const uint8_t *data, size_t n);
void ot_json_string(otter_text_t *t, const char *s); /* quoted and escaped */
/* Appends `fmt` with its conversions: %s a string, %q a string quoted and escaped (as
 * ot_json_string), %u a uint32_t, %h 32 bytes in hex. Every other character is copied. */
void ot_fmt(otter_text_t *t, const char *fmt, ...);

#endif /* OTTER_INTERNAL_H */
