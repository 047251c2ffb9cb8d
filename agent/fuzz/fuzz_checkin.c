/* libFuzzer: a whole update cycle where the server's check-in answer is arbitrary bytes. Nothing
 * may be activated unless the answer carried a validly signed envelope (it cannot here). */
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
    static char answer[4096];
    if (size >= sizeof answer) return 0;
    memcpy(answer, data, size);
    answer[size] = '\0';

    fake_init(&fake, &port);
    fake_put_image(&fake, 0, VEC_BASE_IMAGE, sizeof VEC_BASE_IMAGE);
    fake.image = VEC_IMAGE;
    fake.image_len = sizeof VEC_IMAGE;
    fake.checkin_override = answer;
    otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM), &key);
    otter_config_t cfg = {
        .server_url = "http://otter.test", .product = "thermo", .enrollment_secret = "s",
        .hardware_id = "h", .chip = "esp32c3", .chip_id = 5, .trusted_keys = &key,
        .trusted_key_count = 1,
    };
    if (otter_agent_init(&cfg, &port) != 0) __builtin_trap();
    uint32_t wait;
    otter_poll_result_t r = otter_agent_poll(&wait);
    /* The fuzzer can produce VEC_ENV_OK in base64 only by luck; anything else must not activate. */
    if (fake.activated && r != OTTER_POLL_REBOOT) __builtin_trap();
    if (wait == 0 && r != OTTER_POLL_REBOOT) __builtin_trap();
    return 0;
}
