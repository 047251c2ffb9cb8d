/*
 * Otter OTA agent: public API.
 *
 *   static const otter_config_t cfg = {
 *       .server_url = "https://otter.example.com", .product = "thermostat",
 *       .enrollment_secret = "ote_...", .hardware_id = "24:6f:28:aa:bb:cc",
 *       .chip = "esp32c3", .chip_id = 5, .channel = "stable",
 *       .trusted_keys = keys, .trusted_key_count = 1, .self_test = my_self_test,
 *   };
 *   otter_agent_init(&cfg, otter_port_espidf());
 *   for (;;) otter_agent_poll();   // or otter_agent_start() on ESP-IDF (a task)
 *
 * The agent trusts nothing but the release public keys in `trusted_keys`: every field of a
 * release is used only after its manifest signature has verified with one of them.
 */
#ifndef OTTER_AGENT_H
#define OTTER_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "otter_port.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OTTER_MAX_TRUSTED_KEYS 4

/* Update states reported to the server and to the state callback. */
typedef enum {
    OTTER_STATE_IDLE = 0,
    OTTER_STATE_DOWNLOADING,
    OTTER_STATE_DOWNLOADED,
    OTTER_STATE_INSTALLING,
    OTTER_STATE_REBOOTING,
    OTTER_STATE_SUCCESS,
    OTTER_STATE_FAILURE,
    OTTER_STATE_ROLLED_BACK,
    OTTER_STATE_REFUSED,
} otter_state_t;

/* A public key in SEC1 uncompressed form (0x04 || X || Y). */
typedef struct {
    uint8_t sec1[65];
} otter_pubkey_t;

typedef struct {
    const char *server_url;        /* base URL, no trailing slash */
    const char *product;
    const char *enrollment_secret; /* per-product secret, used once to get a device token */
    const char *hardware_id;       /* unique per device within the product, e.g. the MAC */
    const char *channel;           /* NULL: "stable" */
    const char *chip;              /* the name the server knows, e.g. "esp32c3" */
    uint16_t chip_id;              /* esp_chip_id_t, 0x8266 for the ESP8266 */
    const otter_pubkey_t *trusted_keys;
    size_t trusted_key_count;      /* 1 ..= OTTER_MAX_TRUSTED_KEYS */
    uint32_t poll_interval_s;      /* used until the server says otherwise; 0: 3600 */
    /* Decides whether a freshly booted image is healthy (network up, peripherals answer...).
     * Return 0 for healthy. NULL: always healthy. */
    int (*self_test)(void *user);
    /* Optional callbacks. */
    void (*on_state)(void *user, otter_state_t state, const char *reason);
    void (*on_progress)(void *user, uint32_t done, uint32_t total);
    void *user;
} otter_config_t;

/* What one call of otter_agent_poll did. */
typedef enum {
    OTTER_POLL_IDLE = 0,      /* nothing to do; wait the returned poll interval */
    OTTER_POLL_REBOOT,        /* a new image is active: the port's reboot was called */
    OTTER_POLL_RETRY,         /* a transient error; wait the returned backoff */
    OTTER_POLL_BAD_CONFIG,    /* the configuration cannot work (see the log) */
} otter_poll_result_t;

/* Sets the agent up; runs the first-boot logic of a new image (self-test, then confirm or roll
 * back). Returns 0, or a negative value for a bad configuration. */
int otter_agent_init(const otter_config_t *config, const otter_port_t *port);

/* One update cycle: enrol if needed, check in, and if a release is offered verify, download,
 * install and activate it. *wait_ms is how long to wait before the next call. */
otter_poll_result_t otter_agent_poll(uint32_t *wait_ms);

/* Runs cycles forever (ESP-IDF task body), sleeping through the port between them. */
void otter_agent_run(void);

/* Asks the running loop to check in now instead of finishing its wait. */
void otter_agent_check_now(void);

/* Parses a P-256 public key in PEM (SubjectPublicKeyInfo, "-----BEGIN PUBLIC KEY-----", what
 * `otter keygen` writes) into SEC1 form. Returns 0 on success. */
int otter_pubkey_from_pem(const char *pem, size_t len, otter_pubkey_t *out);

/* The name of a state as the server spells it ("downloading", ...). */
const char *otter_state_name(otter_state_t state);

#ifdef __cplusplus
}
#endif

#endif /* OTTER_AGENT_H */
