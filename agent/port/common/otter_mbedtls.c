/* SHA-256 and ECDSA P-256 verification with mbedTLS, for ports. Only calls that exist in both
 * mbedTLS 2.28 (Debian) and 3.x (ESP-IDF v5) are used; the SHA-256 names differ and are
 * chosen by version. */
#include <string.h>

#include "mbedtls/ecdsa.h"
#include "mbedtls/sha256.h"
#include "mbedtls/version.h"
#include "otter_mbedtls.h"

#if MBEDTLS_VERSION_MAJOR < 3
#define SHA256_STARTS mbedtls_sha256_starts_ret
#define SHA256_UPDATE mbedtls_sha256_update_ret
#define SHA256_FINISH mbedtls_sha256_finish_ret
#else
#define SHA256_STARTS mbedtls_sha256_starts
#define SHA256_UPDATE mbedtls_sha256_update
#define SHA256_FINISH mbedtls_sha256_finish
#endif

void otter_mbedtls_sha256_begin(otter_mbedtls_sha256_t *s)
{
    if (s->live) {
        s->begun_live++;
        mbedtls_sha256_free(&s->ctx);
    }
    s->live = 1;
    mbedtls_sha256_init(&s->ctx);
    (void)SHA256_STARTS(&s->ctx, 0);
}

void otter_mbedtls_sha256_update(otter_mbedtls_sha256_t *s, const uint8_t *data, size_t len)
{
    if (s->live) (void)SHA256_UPDATE(&s->ctx, data, len);
}

void otter_mbedtls_sha256_end(otter_mbedtls_sha256_t *s, uint8_t out[32])
{
    if (!s->live) return;
    (void)SHA256_FINISH(&s->ctx, out);
    mbedtls_sha256_free(&s->ctx);
    s->live = 0;
}

int otter_mbedtls_ecdsa_p256_verify(const uint8_t pubkey[65], const uint8_t *msg, size_t msg_len,
                                    const uint8_t sig[64])
{
    uint8_t hash[32];
    mbedtls_sha256_context h;
    mbedtls_sha256_init(&h);
    (void)SHA256_STARTS(&h, 0);
    (void)SHA256_UPDATE(&h, msg, msg_len);
    (void)SHA256_FINISH(&h, hash);
    mbedtls_sha256_free(&h);

    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_mpi r, s;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int rc = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1);
    if (rc == 0) rc = mbedtls_ecp_point_read_binary(&grp, &q, pubkey, 65);
    if (rc == 0) rc = mbedtls_ecp_check_pubkey(&grp, &q);
    if (rc == 0) rc = mbedtls_mpi_read_binary(&r, sig, 32);
    if (rc == 0) rc = mbedtls_mpi_read_binary(&s, sig + 32, 32);
    if (rc == 0) rc = mbedtls_ecdsa_verify(&grp, hash, sizeof hash, &q, &r, &s);
    mbedtls_mpi_free(&s);
    mbedtls_mpi_free(&r);
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return rc == 0 ? 0 : -1;
}
