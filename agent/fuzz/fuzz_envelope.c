/* libFuzzer: the envelope and manifest parser, the signature check and the PEM key reader. */
#include <stdint.h>
#include <string.h>

#include "fake_port.h"
#include "otter_internal.h"
#include "vectors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fake_t fake;
    static otter_port_t port;
    static otter_pubkey_t key;
    static uint8_t id[1][8];
    static int ready;
    if (!ready) {
        fake_init(&fake, &port);
        otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM), &key);
        otter_key_id(&port, &key, id[0]);
        ready = 1;
    }
    otter_envelope_t env;
    if (otter_envelope_parse(data, size, &env) == 0) {
        /* Every field points inside the input. */
        const uint8_t *end = data + size;
        if (env.manifest + env.manifest_len > end || (const uint8_t *)env.product + env.product_len > end ||
            (const uint8_t *)env.version + env.version_len > end || env.sigs + env.sig_count * OTTER_SIG_LEN > end) {
            __builtin_trap();
        }
        (void)otter_envelope_verify(&env, &port, (const uint8_t(*)[8])id, &key, 1);
    }
    otter_pubkey_t k;
    (void)otter_pubkey_from_pem((const char *)data, size, &k);
    return 0;
}
