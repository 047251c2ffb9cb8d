/* Base64, PEM public keys, CRC-32 and a bounded text writer. */
#include <stdarg.h>
#include <string.h>

#include "otter_internal.h"

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int ob64_decode(const char *in, size_t len, uint8_t *out, size_t cap, int skip_space)
{
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t n = 0;
    size_t symbols = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (skip_space && (c == '\n' || c == '\r' || c == ' ' || c == '\t')) continue;
        symbols++;
        if (c == '=') {
            pad++;
            if (pad > 2) return -1;
            continue;
        }
        int v = b64val(c);
        if (v < 0 || pad) return -1; /* no data after padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap) return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (symbols % 4 != 0) return -1;
    /* Leftover bits must be zero and match the padding (canonical encoding only). */
    if ((acc & ((1u << bits) - 1u)) != 0) return -1;
    if ((pad == 1 && bits != 2) || (pad == 2 && bits != 4) || (pad == 0 && bits != 0)) return -1;
    return (int)n;
}

/* DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point (id-ecPublicKey,
 * prime256v1); the 65-byte point follows. */
static const uint8_t SPKI_P256_PREFIX[26] = {
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
};

int otter_pubkey_from_pem(const char *pem, size_t len, otter_pubkey_t *out)
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----";
    static const char end[] = "-----END PUBLIC KEY-----";
    const char *b = NULL;
    for (size_t i = 0; i + sizeof begin - 1 <= len; i++) {
        if (memcmp(pem + i, begin, sizeof begin - 1) == 0) {
            b = pem + i + sizeof begin - 1;
            break;
        }
    }
    if (!b) return -1;
    const char *e = NULL;
    for (const char *p = b; p + sizeof end - 1 <= pem + len; p++) {
        if (memcmp(p, end, sizeof end - 1) == 0) {
            e = p;
            break;
        }
    }
    if (!e) return -1;
    uint8_t der[96];
    int n = ob64_decode(b, (size_t)(e - b), der, sizeof der, 1);
    if (n != (int)(sizeof SPKI_P256_PREFIX + 65)) return -1;
    if (memcmp(der, SPKI_P256_PREFIX, sizeof SPKI_P256_PREFIX) != 0) return -1;
    if (der[sizeof SPKI_P256_PREFIX] != 0x04) return -1;
    memcpy(out->sec1, der + sizeof SPKI_P256_PREFIX, 65);
    return 0;
}

uint32_t otter_crc32(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

void ot_init(otter_text_t *t, char *buf, size_t cap)
{
    t->buf = buf;
    t->cap = cap;
    t->len = 0;
    t->overflow = 0;
    if (cap) buf[0] = '\0';
}

void ot_mem(otter_text_t *t, const char *s, size_t n)
{
    if (t->overflow || t->len + n + 1 > t->cap) {
        t->overflow = 1;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void ot_str(otter_text_t *t, const char *s)
{
    ot_mem(t, s, strlen(s));
}

void ot_u32(otter_text_t *t, uint32_t v)
{
    char tmp[11];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ot_mem(t, tmp + i, sizeof tmp - i);
}

void ot_hex(otter_text_t *t, const uint8_t *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char pair[2] = {digits[data[i] >> 4], digits[data[i] & 15]};
        ot_mem(t, pair, 2);
    }
}

void ot_json_string(otter_text_t *t, const char *s)
{
    ot_mem(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            ot_mem(t, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            ot_mem(t, "?", 1); /* reasons are ASCII; anything else is replaced, never sent raw */
        } else {
            ot_mem(t, (const char *)&c, 1);
        }
    }
    ot_mem(t, "\"", 1);
}

void ot_fmt(otter_text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (;;) {
        const char *e = fmt;
        while (*e && *e != '%') e++;
        ot_mem(t, fmt, (size_t)(e - fmt)); /* the text up to a conversion, whole or not at all */
        if (!*e) break;
        switch (e[1]) {
        case 's': ot_str(t, va_arg(ap, const char *)); break;
        case 'q': ot_json_string(t, va_arg(ap, const char *)); break;
        case 'u': ot_u32(t, va_arg(ap, uint32_t)); break;
        case 'h': ot_hex(t, va_arg(ap, const uint8_t *), 32); break;
        }
        fmt = e + 2;
    }
    va_end(ap);
}
