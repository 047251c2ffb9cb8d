/* The envelope parser and signature check, against envelopes made by the Rust CLI (vectors.h). */
#include <string.h>

#include "check.h"
#include "fake_port.h"
#include "otter_internal.h"
#include "vectors.h"

static fake_t fake;
static otter_port_t port;
static otter_pubkey_t key_a, key_b;
static uint8_t id_a[1][8], id_b[1][8], id_ab[2][8];
static otter_pubkey_t keys_ab[2];

static void setup(void)
{
    fake_init(&fake, &port);
    CHECK(otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM), &key_a) == 0);
    CHECK(otter_pubkey_from_pem(VEC_KEY_B_PEM, strlen(VEC_KEY_B_PEM), &key_b) == 0);
    otter_key_id(&port, &key_a, id_a[0]);
    otter_key_id(&port, &key_b, id_b[0]);
    memcpy(id_ab[0], id_a[0], 8);
    memcpy(id_ab[1], id_b[0], 8);
    keys_ab[0] = key_a;
    keys_ab[1] = key_b;
}

static otter_verify_t verify_with(const uint8_t *buf, size_t len, const uint8_t (*ids)[8],
                                  const otter_pubkey_t *keys, size_t n)
{
    otter_envelope_t env;
    if (otter_envelope_parse(buf, len, &env) != 0) return (otter_verify_t)-100;
    return otter_envelope_verify(&env, &port, ids, keys, n);
}

static void parses_the_cli_envelope(void)
{
    otter_envelope_t env;
    CHECK(otter_envelope_parse(VEC_ENV_OK, sizeof VEC_ENV_OK, &env) == 0);
    CHECK(env.chip == 5);
    CHECK(env.security_counter == 3);
    CHECK(env.image_size == sizeof VEC_IMAGE);
    CHECK(env.product_len == 6 && memcmp(env.product, "thermo", 6) == 0);
    CHECK(env.version_len == 5 && memcmp(env.version, "2.0.0", 5) == 0);
    CHECK(env.sig_count == 1);
    CHECK(env.flags == 0 && env.expires_at == 0);
    /* The manifest's hash is the image's. */
    uint8_t digest[32];
    port.sha256_begin(port.ctx);
    port.sha256_update(port.ctx, VEC_IMAGE, sizeof VEC_IMAGE);
    port.sha256_end(port.ctx, digest);
    CHECK(memcmp(digest, env.image_sha256, 32) == 0);

    CHECK(otter_envelope_parse(VEC_ENV_EXPIRED, sizeof VEC_ENV_EXPIRED, &env) == 0);
    CHECK((env.flags & OTTER_MF_EXPIRES) && env.expires_at > env.created_at);
    CHECK(otter_envelope_parse(VEC_ENV_BOTH, sizeof VEC_ENV_BOTH, &env) == 0 && env.sig_count == 2);
}

static void verifies_only_trusted_signatures(void)
{
    CHECK(verify_with(VEC_ENV_OK, sizeof VEC_ENV_OK, (const uint8_t(*)[8])id_a, &key_a, 1) == OTTER_VERIFY_OK);
    CHECK(verify_with(VEC_ENV_OK, sizeof VEC_ENV_OK, (const uint8_t(*)[8])id_b, &key_b, 1) == OTTER_VERIFY_NO_TRUSTED_KEY);
    CHECK(verify_with(VEC_ENV_UNTRUSTED, sizeof VEC_ENV_UNTRUSTED, (const uint8_t(*)[8])id_a, &key_a, 1) ==
          OTTER_VERIFY_NO_TRUSTED_KEY);
    CHECK(verify_with(VEC_ENV_BOTH, sizeof VEC_ENV_BOTH, (const uint8_t(*)[8])id_a, &key_a, 1) == OTTER_VERIFY_OK);
    CHECK(verify_with(VEC_ENV_BOTH, sizeof VEC_ENV_BOTH, (const uint8_t(*)[8])id_ab, keys_ab, 2) == OTTER_VERIFY_OK);
}

static void a_lying_key_id_does_not_pass(void)
{
    /* Key B's signature relabelled with key A's id: a trusted id whose signature fails. */
    uint8_t buf[sizeof VEC_ENV_UNTRUSTED];
    memcpy(buf, VEC_ENV_UNTRUSTED, sizeof buf);
    size_t sig_at = sizeof buf - OTTER_SIG_LEN;
    memcpy(buf + sig_at, id_a[0], 8);
    CHECK(verify_with(buf, sizeof buf, (const uint8_t(*)[8])id_a, &key_a, 1) == OTTER_VERIFY_BAD_SIGNATURE);
}

/* Every single-bit flip anywhere in the envelope is refused by the parser or the signature. */
static void every_bit_flip_is_caught(void)
{
    uint8_t buf[sizeof VEC_ENV_OK];
    int accepted = 0;
    for (size_t i = 0; i < sizeof buf; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(buf, VEC_ENV_OK, sizeof buf);
            buf[i] ^= (uint8_t)(1u << bit);
            if (verify_with(buf, sizeof buf, (const uint8_t(*)[8])id_a, &key_a, 1) == OTTER_VERIFY_OK) {
                fprintf(stderr, "  flip of byte %zu bit %d accepted\n", i, bit);
                accepted++;
            }
        }
    }
    CHECK(accepted == 0);
}

static void every_truncation_and_extension_is_refused(void)
{
    otter_envelope_t env;
    for (size_t n = 0; n < sizeof VEC_ENV_OK; n++) CHECK(otter_envelope_parse(VEC_ENV_OK, n, &env) != 0);
    uint8_t longer[sizeof VEC_ENV_OK + 1];
    memcpy(longer, VEC_ENV_OK, sizeof VEC_ENV_OK);
    longer[sizeof VEC_ENV_OK] = 0;
    CHECK(otter_envelope_parse(longer, sizeof longer, &env) != 0);
}

static void pem_keys_are_checked(void)
{
    otter_pubkey_t k;
    CHECK(otter_pubkey_from_pem("", 0, &k) != 0);
    CHECK(otter_pubkey_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 56, &k) != 0);
    /* An RSA or P-384 key has another prefix and length: refused. A private key is not a public key. */
    static const char p384[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEpmY7EabP1avKMbQVv1K8myO2wxfJe59y\n"
                               "c1pWqLrONDK/O5+oU3mkYs8oUSpLUPXULYfHBmMseJIvN6s5Ic+9b1W2KBGwVdWR\n"
                               "2nsPj+DE+22loymwZzUwf67F4jedJk8/\n-----END PUBLIC KEY-----\n";
    CHECK(otter_pubkey_from_pem(p384, strlen(p384), &k) != 0);
    static const char priv[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    CHECK(otter_pubkey_from_pem(priv, strlen(priv), &k) != 0);
    /* A missing END line. */
    CHECK(otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM) - 26, &k) != 0);
    CHECK(otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM), &k) == 0 && k.sec1[0] == 0x04);
}

int main(void)
{
    setup();
    RUN(parses_the_cli_envelope);
    RUN(verifies_only_trusted_signatures);
    RUN(a_lying_key_id_does_not_pass);
    RUN(every_bit_flip_is_caught);
    RUN(every_truncation_and_extension_is_refused);
    RUN(pem_keys_are_checked);
    return check_failures != 0;
}
