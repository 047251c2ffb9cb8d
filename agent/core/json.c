/* A validating JSON scanner with bounded recursion and no heap. It reads the server's answers,
 * which the agent treats as hostile: malformed input is refused as a whole. */
#include <string.h>

#include "otter_internal.h"

typedef struct {
    const char *p;
    const char *end;
} scan_t;

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int scan_string(scan_t *s)
{
    if (s->p >= s->end || *s->p != '"') return -1;
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p++;
        if (c == '"') return 0;
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (s->p >= s->end) return -1;
            c = (unsigned char)*s->p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++) {
                    if (s->p >= s->end || hexval(*s->p) < 0) return -1;
                    s->p++;
                }
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return -1;
            }
        }
    }
    return -1;
}

static int scan_number(scan_t *s)
{
    const char *start = s->p;
    if (s->p < s->end && *s->p == '-') s->p++;
    if (s->p >= s->end) return -1;
    if (*s->p == '0') {
        s->p++;
    } else if (*s->p >= '1' && *s->p <= '9') {
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    } else {
        return -1;
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9') return -1;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9') return -1;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    }
    return s->p > start ? 0 : -1;
}

static int scan_literal(scan_t *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) return -1;
    s->p += n;
    return 0;
}

static int scan_value(scan_t *s, int depth, oj_value_t *v);

/* Scans an object; if `key` is not NULL, records the value of that member in *found. */
static int scan_object(scan_t *s, int depth, const char *key, oj_value_t *found)
{
    if (depth > OJ_MAX_DEPTH) return -1;
    s->p++; /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        const char *kstart = s->p;
        if (scan_string(s) != 0) return -1;
        size_t klen = (size_t)(s->p - kstart) - 2;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':') return -1;
        s->p++;
        skip_ws(s);
        oj_value_t v;
        if (scan_value(s, depth, &v) != 0) return -1;
        /* Keys we look for never contain escapes, so raw comparison is exact. */
        if (key && strlen(key) == klen && memcmp(kstart + 1, key, klen) == 0) {
            if (found->type != OJ_NONE) return -1; /* a duplicate key is ambiguous: refuse */
            *found = v;
        }
        skip_ws(s);
        if (s->p >= s->end) return -1;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

static int scan_array(scan_t *s, int depth)
{
    if (depth > OJ_MAX_DEPTH) return -1;
    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        oj_value_t v;
        if (scan_value(s, depth, &v) != 0) return -1;
        skip_ws(s);
        if (s->p >= s->end) return -1;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

static int scan_value(scan_t *s, int depth, oj_value_t *v)
{
    int rc;
    v->start = s->p;
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"': v->type = OJ_STRING; rc = scan_string(s); break;
    case '{': {
        oj_value_t ignored = {OJ_NONE, NULL, 0};
        v->type = OJ_OBJECT;
        rc = scan_object(s, depth + 1, NULL, &ignored);
        break;
    }
    case '[': v->type = OJ_ARRAY; rc = scan_array(s, depth + 1); break;
    case 't': v->type = OJ_TRUE; rc = scan_literal(s, "true"); break;
    case 'f': v->type = OJ_FALSE; rc = scan_literal(s, "false"); break;
    case 'n': v->type = OJ_NULL; rc = scan_literal(s, "null"); break;
    default: v->type = OJ_NUMBER; rc = scan_number(s); break;
    }
    v->len = (size_t)(s->p - v->start);
    return rc;
}

int oj_find(const char *json, size_t len, const char *outer, const char *key, oj_value_t *out)
{
    scan_t s = {json, json + len};
    oj_value_t first = {OJ_NONE, NULL, 0};
    out->type = OJ_NONE;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') return -1;
    if (scan_object(&s, 1, outer ? outer : key, &first) != 0) return -1;
    skip_ws(&s);
    if (s.p != s.end) return -1; /* trailing bytes */
    if (!outer) {
        *out = first;
        return 0;
    }
    if (first.type != OJ_OBJECT) return 0; /* absent, or null */
    scan_t inner = {first.start, first.start + first.len};
    return scan_object(&inner, 2, key, out);
}

int oj_string(const oj_value_t *v, char *out, size_t cap)
{
    if (v->type != OJ_STRING || cap == 0) return -1;
    const char *p = v->start + 1;
    const char *end = v->start + v->len - 1;
    size_t n = 0;
    while (p < end) {
        char c = *p++;
        if (c == '\\') {
            c = *p++;
            /* The scanner let only valid escapes through; '"', '\\', '/' stand for themselves. */
            const char *e = strchr("b\bf\fn\nr\rt\t", c);
            if (e && c) c = e[1];
            if (c == 'u') {
                int code = (hexval(p[0]) << 12) | (hexval(p[1]) << 8) | (hexval(p[2]) << 4) | hexval(p[3]);
                p += 4;
                if (code <= 0 || code >= 0x80) return -1; /* only ASCII is expected here */
                c = (char)code;
            }
        }
        if (n + 1 >= cap) return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

int oj_u32(const oj_value_t *v, uint32_t *out)
{
    if (v->type != OJ_NUMBER || v->len == 0 || v->len > 10) return -1;
    uint32_t acc = 0;
    for (size_t i = 0; i < v->len; i++) {
        uint32_t d = (uint32_t)(unsigned char)v->start[i] - '0';
        if (d > 9 || acc > (0xFFFFFFFFu - d) / 10u) return -1;
        acc = acc * 10u + d;
    }
    *out = acc;
    return 0;
}
