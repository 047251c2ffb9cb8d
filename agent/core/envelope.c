/* The signed envelope and manifest (docs/manifest.md): a strict parser and the signature check.
 * Every rule of the format is enforced, so that exactly one byte string means one release. */
#include <string.h>

#include "otter_internal.h"

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

static int known_chip(uint16_t id)
{
    static const uint16_t ids[] = {0, 2, 5, 9, 12, 13, 16, 18, 20, 23, 25, 28, 31, 32, 0x8266};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        if (ids[i] == id) return 1;
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) return 0;
    }
    return 1;
}

static int parse_manifest(const uint8_t *m, size_t len, otter_envelope_t *out)
{
    if (len < OTTER_MANIFEST_MIN || len > OTTER_MANIFEST_MAX) return -1;
    if (memcmp(m, "OTMF", 4) != 0 || m[4] != 1) return -1;
    out->flags = m[5];
    if (out->flags & ~(OTTER_MF_EXPIRES | OTTER_MF_DELTA)) return -1;
    out->chip = le16(m + 6);
    if (!known_chip(out->chip)) return -1;
    out->security_counter = le32(m + 8);
    out->image_size = le32(m + 12);
    if (out->image_size == 0 || out->image_size > 64u * 1024 * 1024) return -1;
    out->created_at = le64(m + 16);
    out->expires_at = le64(m + 24);
    if (out->flags & OTTER_MF_EXPIRES) {
        if (out->expires_at <= out->created_at) return -1;
    } else if (out->expires_at != 0) {
        return -1;
    }
    out->image_sha256 = m + 32;
    if (!(out->flags & OTTER_MF_DELTA) && !all_zero(m + 64, 32)) return -1;

    size_t n = m[96];
    if (n < 1 || n > 64 || 97 + n + 1 > len) return -1;
    const uint8_t *p = m + 97;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok) return -1;
    }
    out->product = (const char *)p;
    out->product_len = (uint8_t)n;

    size_t v = m[97 + n];
    if (v < 1 || v > 64 || 98 + n + v != len) return -1; /* nothing may follow */
    const uint8_t *q = m + 98 + n;
    for (size_t i = 0; i < v; i++) {
        if (q[i] < 0x21 || q[i] > 0x7e) return -1;
    }
    out->version = (const char *)q;
    out->version_len = (uint8_t)v;
    return 0;
}

int otter_envelope_parse(const uint8_t *buf, size_t len, otter_envelope_t *out)
{
    memset(out, 0, sizeof *out);
    if (len < 8 || len > OTTER_MAX_ENVELOPE) return -1;
    if (memcmp(buf, "OTSE", 4) != 0 || buf[4] != 1) return -1;
    uint8_t count = buf[5];
    if (count < 1 || count > 8) return -1;
    uint16_t mlen = le16(buf + 6);
    if ((size_t)8 + mlen + (size_t)count * OTTER_SIG_LEN != len) return -1;
    if (parse_manifest(buf + 8, mlen, out) != 0) return -1;
    out->manifest = buf + 8;
    out->manifest_len = mlen;
    out->sig_count = count;
    out->sigs = buf + 8 + mlen;
    /* Key ids distinct and sorted ascending. */
    for (uint8_t i = 1; i < count; i++) {
        if (memcmp(out->sigs + (i - 1) * OTTER_SIG_LEN, out->sigs + i * OTTER_SIG_LEN, 8) >= 0) return -1;
    }
    return 0;
}

void otter_key_id(const otter_port_t *port, const otter_pubkey_t *key, uint8_t id[8])
{
    uint8_t digest[32];
    port->sha256_begin(port->ctx);
    port->sha256_update(port->ctx, key->sec1, sizeof key->sec1);
    port->sha256_end(port->ctx, digest);
    memcpy(id, digest, 8);
}

otter_verify_t otter_envelope_verify(const otter_envelope_t *env, const otter_port_t *port,
                                     const uint8_t (*key_ids)[8], const otter_pubkey_t *keys,
                                     size_t key_count)
{
    int valid = 0;
    for (uint8_t i = 0; i < env->sig_count; i++) {
        const uint8_t *sig = env->sigs + (size_t)i * OTTER_SIG_LEN;
        for (size_t k = 0; k < key_count; k++) {
            if (memcmp(sig, key_ids[k], 8) != 0) continue;
            if (port->ecdsa_p256_verify(port->ctx, keys[k].sec1, env->manifest, env->manifest_len,
                                        sig + 8) != 0) {
                return OTTER_VERIFY_BAD_SIGNATURE;
            }
            valid++;
        }
    }
    return valid > 0 ? OTTER_VERIFY_OK : OTTER_VERIFY_NO_TRUSTED_KEY;
}
