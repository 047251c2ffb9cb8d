/* libFuzzer: the JSON scanner and value readers on arbitrary bytes. */
#include <stdint.h>
#include <string.h>

#include "otter_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *keys[][2] = {{NULL, "update"}, {"update", "release_id"}, {"update", "envelope"},
                                    {NULL, "poll_interval_s"}, {NULL, "device_token"}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        oj_value_t v;
        if (oj_find((const char *)data, size, keys[i][0], keys[i][1], &v) != 0) return 0;
        if (v.type == OJ_NONE) continue;
        /* The value lies inside the input. */
        if (v.start < (const char *)data || v.start + v.len > (const char *)data + size) __builtin_trap();
        char s[64];
        uint32_t n;
        (void)oj_string(&v, s, sizeof s);
        (void)oj_u32(&v, &n);
    }
    uint8_t out[600];
    (void)ob64_decode((const char *)data, size, out, sizeof out, (int)(size & 1));
    return 0;
}
