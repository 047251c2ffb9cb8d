/* mbedTLS glue shared by the ports (not part of the portable core). */
#ifndef OTTER_MBEDTLS_H
#define OTTER_MBEDTLS_H

#include <stddef.h>
#include <stdint.h>

#include "mbedtls/sha256.h"

typedef struct {
    mbedtls_sha256_context ctx;
    int live;            /* begun, not yet ended: holds the hardware SHA engine on some chips */
    unsigned begun_live; /* begins that found it live (a hash dropped without its end): tests expect 0 */
} otter_mbedtls_sha256_t;

/* begin on a live context frees it first (the classic ESP32 keeps its SHA engine locked until a
 * context is freed, so a leaked one would pin it); end frees it and does nothing on a context
 * that is not live. */
void otter_mbedtls_sha256_begin(otter_mbedtls_sha256_t *s);
void otter_mbedtls_sha256_update(otter_mbedtls_sha256_t *s, const uint8_t *data, size_t len);
void otter_mbedtls_sha256_end(otter_mbedtls_sha256_t *s, uint8_t out[32]);
int otter_mbedtls_ecdsa_p256_verify(const uint8_t pubkey[65], const uint8_t *msg, size_t msg_len,
                                    const uint8_t sig[64]);

#endif
