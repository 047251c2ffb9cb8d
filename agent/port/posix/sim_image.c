/* The bootloader's image check, for the simulator: what esp_image_verify does for an app. */
#include <string.h>

#include "otter_mbedtls.h"
#include "sim.h"

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

long sim_check_image(const uint8_t *data, size_t cap, char *version, uint8_t sha256[32])
{
    if (cap < 24 + 8 + 256 || data[0] != 0xE9 || data[23] != 1) return -1;
    unsigned segments = data[1];
    if (segments == 0 || segments > 16) return -1;
    size_t at = 24;
    uint8_t sum = 0xEF;
    for (unsigned i = 0; i < segments; i++) {
        if (at + 8 > cap) return -1;
        uint32_t len = le32(data + at + 4);
        at += 8;
        if (len % 4 || len > cap - at) return -1;
        for (uint32_t k = 0; k < len; k++) sum ^= data[at + k];
        at += len;
    }
    size_t checksum_at = ((at + 1 + 15) & ~(size_t)15) - 1;
    if (checksum_at + 1 + 32 > cap || data[checksum_at] != sum) return -1;
    size_t image_len = checksum_at + 1 + 32;
    otter_mbedtls_sha256_t h;
    uint8_t digest[32];
    otter_mbedtls_sha256_begin(&h);
    otter_mbedtls_sha256_update(&h, data, checksum_at + 1);
    otter_mbedtls_sha256_end(&h, digest);
    if (memcmp(digest, data + checksum_at + 1, 32) != 0) return -1;
    if (le32(data + 0x20) != 0xABCD5432u) return -1;
    memcpy(version, data + 0x30, 32);
    version[32] = '\0';
    otter_mbedtls_sha256_begin(&h);
    otter_mbedtls_sha256_update(&h, data, image_len);
    otter_mbedtls_sha256_end(&h, sha256);
    return (long)image_len;
}
