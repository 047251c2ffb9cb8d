/* The JSON scanner and the small codecs: what the server sends is hostile input. */
#include <string.h>

#include "check.h"
#include "otter_internal.h"

static int find(const char *doc, const char *outer, const char *key, oj_value_t *v)
{
    return oj_find(doc, strlen(doc), outer, key, v);
}

static void finds_top_level_and_nested_keys(void)
{
    const char *doc = "{\"a\":1,\"update\":{\"release_id\":\"rel_9\",\"n\":[1,2,{\"x\":null}]},\"s\":\"x\\\"y\"}";
    oj_value_t v;
    CHECK(find(doc, NULL, "a", &v) == 0 && v.type == OJ_NUMBER);
    uint32_t n = 0;
    CHECK(oj_u32(&v, &n) == 0 && n == 1);
    CHECK(find(doc, "update", "release_id", &v) == 0 && v.type == OJ_STRING);
    char s[16];
    CHECK(oj_string(&v, s, sizeof s) == 5 && strcmp(s, "rel_9") == 0);
    CHECK(find(doc, NULL, "s", &v) == 0 && oj_string(&v, s, sizeof s) == 3 && strcmp(s, "x\"y") == 0);
    /* A key of a nested object is not a top-level key. */
    CHECK(find(doc, NULL, "release_id", &v) == 0 && v.type == OJ_NONE);
    CHECK(find(doc, NULL, "x", &v) == 0 && v.type == OJ_NONE);
    CHECK(find(doc, "update", "missing", &v) == 0 && v.type == OJ_NONE);
}

static void null_outer_object_has_no_keys(void)
{
    oj_value_t v;
    CHECK(find("{\"update\":null,\"poll_interval_s\":600}", "update", "release_id", &v) == 0);
    CHECK(v.type == OJ_NONE);
}

static void refuses_malformed_documents(void)
{
    static const char *bad[] = {
        "", "{", "}", "[]", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}", "{\"a\":1}x",
        "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}", "{\"a\":tru}", "{\"a\":\"x}", "{\"a\":\"\\q\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"\x01\"}", "{a:1}", "{\"a\":1,\"a\":2}", /* duplicate key */
        "{\"a\":[[[[[[[[[1]]]]]]]]]}",                                        /* too deep */
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":1 \"b\":2}",
    };
    oj_value_t v;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = oj_find(bad[i], strlen(bad[i]), NULL, "a", &v);
        if (r != -1) fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(r == -1);
    }
    /* An embedded NUL is not the end of the document. */
    CHECK(oj_find("{\"a\":1}\0junk", 12, NULL, "a", &v) == -1);
}

static void accepts_what_json_allows(void)
{
    oj_value_t v;
    CHECK(find(" { \"a\" : -1.5e+3 , \"b\" : [ ] , \"c\" : { } , \"d\":true,\"e\":false,\"f\":\"\\u0041\\n\"} ",
               NULL, "f", &v) == 0);
    char s[8];
    CHECK(oj_string(&v, s, sizeof s) == 2 && strcmp(s, "A\n") == 0);
    CHECK(find("{\"a\":[1,2,3]}", NULL, "a", &v) == 0 && v.type == OJ_ARRAY);
}

static void strings_and_numbers_are_bounded(void)
{
    oj_value_t v;
    char s[4];
    CHECK(find("{\"a\":\"abcd\"}", NULL, "a", &v) == 0);
    CHECK(oj_string(&v, s, sizeof s) == -1); /* does not fit with its NUL */
    CHECK(find("{\"a\":\"\\u00e9\"}", NULL, "a", &v) == 0);
    CHECK(oj_string(&v, s, sizeof s) == -1); /* non-ASCII escape */
    uint32_t n;
    CHECK(find("{\"a\":4294967295}", NULL, "a", &v) == 0 && oj_u32(&v, &n) == 0 && n == 4294967295u);
    CHECK(find("{\"a\":4294967296}", NULL, "a", &v) == 0 && oj_u32(&v, &n) == -1);
    CHECK(find("{\"a\":-1}", NULL, "a", &v) == 0 && oj_u32(&v, &n) == -1);
    CHECK(find("{\"a\":1.5}", NULL, "a", &v) == 0 && oj_u32(&v, &n) == -1);
    CHECK(find("{\"a\":\"1\"}", NULL, "a", &v) == 0 && oj_u32(&v, &n) == -1);
}

static void base64_is_strict(void)
{
    uint8_t out[16];
    CHECK(ob64_decode("aGk=", 4, out, sizeof out, 0) == 2 && memcmp(out, "hi", 2) == 0);
    CHECK(ob64_decode("aGk", 3, out, sizeof out, 0) == -1);     /* unpadded */
    CHECK(ob64_decode("aGl=", 4, out, sizeof out, 0) == -1);    /* non-zero leftover bits */
    CHECK(ob64_decode("a=Gk", 4, out, sizeof out, 0) == -1);    /* data after padding */
    CHECK(ob64_decode("aG k=", 5, out, sizeof out, 0) == -1);   /* space outside PEM */
    CHECK(ob64_decode("aG k=", 5, out, sizeof out, 1) == 2);
    CHECK(ob64_decode("aGVsbG8gd29ybGQh", 16, out, 4, 0) == -1); /* does not fit */
}

static void text_writer_escapes_and_bounds(void)
{
    char buf[32];
    otter_text_t t;
    ot_init(&t, buf, sizeof buf);
    ot_json_string(&t, "a\"b\\c\n\x01");
    CHECK(!t.overflow && strcmp(buf, "\"a\\\"b\\\\c??\"") == 0); /* control characters never go out raw */
    ot_init(&t, buf, 8);
    ot_str(&t, "0123456789");
    CHECK(t.overflow && strlen(buf) < 8);
    ot_init(&t, buf, sizeof buf);
    ot_u32(&t, 0);
    ot_str(&t, "/");
    ot_u32(&t, 4294967295u);
    CHECK(strcmp(buf, "0/4294967295") == 0);
}

/* ot_fmt writes what the ot_* calls it replaced wrote: each text run between conversions goes in
 * whole or not at all, and nothing after an overflow. */
static void text_format_matches_the_writers(void)
{
    char buf[128];
    uint8_t h[32];
    otter_text_t t;
    for (int i = 0; i < 32; i++) h[i] = (uint8_t)(i * 9);
    ot_init(&t, buf, sizeof buf);
    ot_fmt(&t, "{\"a\":%q,\"n\":%u,%s:\"%h\"}", "x\"y", 4294967295u, "raw", h);
    CHECK(!t.overflow && strcmp(buf, "{\"a\":\"x\\\"y\",\"n\":4294967295,raw:\"0009121b242d363f48515a636c757e87"
                                     "9099a2abb4bdc6cfd8e1eaf3fc050e17\"}") == 0);
    ot_init(&t, buf, 13);
    ot_fmt(&t, "counter %u < %u", 1234u, 5u);
    CHECK(t.overflow && strcmp(buf, "counter 1234") == 0); /* " < " did not fit: nothing after it */
}

static void crc32_matches_the_standard(void)
{
    CHECK(otter_crc32((const uint8_t *)"123456789", 9) == 0xCBF43926u);
}

int main(void)
{
    RUN(finds_top_level_and_nested_keys);
    RUN(null_outer_object_has_no_keys);
    RUN(refuses_malformed_documents);
    RUN(accepts_what_json_allows);
    RUN(strings_and_numbers_are_bounded);
    RUN(base64_is_strict);
    RUN(text_writer_escapes_and_bounds);
    RUN(text_format_matches_the_writers);
    RUN(crc32_matches_the_standard);
    return check_failures != 0;
}
