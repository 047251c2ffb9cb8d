/*
 * The port interface: everything the portable core needs from the platform. The core includes
 * no platform header and no crypto header; an ESP-IDF port (port/espidf) and a POSIX port
 * (port/posix, the device simulator) fill this table.
 *
 * Conventions: functions return 0 on success and a negative value on failure unless said
 * otherwise. Exactly one HTTP exchange and one SHA-256 stream are in use at any time.
 */
#ifndef OTTER_PORT_H
#define OTTER_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the running image is, for the check-in. */
typedef struct {
    char version[33];          /* esp_app_desc_t.version */
    uint8_t sha256[32];        /* SHA-256 of the image as flashed (what manifests sign) */
} otter_running_image_t;

/* Boot state of the running image, as the bootloader left it. */
typedef enum {
    OTTER_BOOT_NORMAL = 0,     /* confirmed, or rollback not in use */
    OTTER_BOOT_PENDING_VERIFY, /* first boot of a new image: confirm or roll back */
} otter_boot_state_t;

typedef struct otter_port {
    void *ctx;

    /* --- HTTP(S). `url` is absolute. A request body, if any, is sent whole. `range_from` > 0
     * asks for "Range: bytes=<range_from>-". On success *status holds the HTTP status and
     * *content_length the body length (UINT32_MAX when unknown). */
    int (*http_open)(void *ctx, const char *method, const char *url, const char *bearer,
                     const char *json_body, uint32_t range_from, int *status,
                     uint32_t *content_length);
    /* Reads up to `cap` body bytes; returns the count, 0 at the end, negative on error. */
    int (*http_read)(void *ctx, uint8_t *buf, size_t cap);
    void (*http_close)(void *ctx);
    /* Optional (may be NULL): the seconds of the last answer's Retry-After header, 0 if none. */
    uint32_t (*http_retry_after)(void *ctx);

    /* --- The spare (update) slot. */
    uint32_t (*slot_capacity)(void *ctx);
    /* Prepares the slot for an image of `image_size` bytes, keeping at most the first `keep`
     * bytes written by an earlier, interrupted attempt (0: start over), and erasing the rest.
     * Returns how many bytes it kept (a port may keep fewer, e.g. down to a flash sector
     * boundary, or none when it cannot resume), or a negative value on failure. Writes then
     * continue sequentially from there: a write anywhere else fails (esp_ota_write). The bytes
     * kept must be on flash, readable with slot_read; the core writes whole 16-byte blocks
     * until the last write of an image, so that a write session that buffers a partial block
     * in RAM (esp_ota_write with flash encryption) holds nothing when a download stops. A
     * call with `keep` 0 ends any session still open and starts a new one. */
    int (*slot_begin)(void *ctx, uint32_t image_size, uint32_t keep);
    int (*slot_write)(void *ctx, uint32_t offset, const uint8_t *data, size_t len);
    int (*slot_read)(void *ctx, uint32_t offset, uint8_t *data, size_t len);
    /* Closes the slot after the last byte; the platform may verify the image here. */
    int (*slot_finish)(void *ctx);
    /* Makes the slot the next boot image, pending verification. */
    int (*slot_activate)(void *ctx);

    /* --- The running image and its boot state. */
    int (*running_image)(void *ctx, otter_running_image_t *out);
    otter_boot_state_t (*boot_state)(void *ctx);
    int (*boot_confirm)(void *ctx);   /* the running image is good: cancel rollback */
    /* The running image is bad: mark it invalid and boot the previous one. Does not return
     * on a device. */
    void (*boot_rollback)(void *ctx);
    void (*reboot)(void *ctx);        /* does not return on a device */

    /* --- Persistent state: a few small blobs, each named by `key` (at most 15 characters, an
     * NVS key) and each written atomically on its own. load returns the number of bytes read (0
     * when there is none). The core uses the keys "id", "installed", "update", and reads the
     * older single blob "state" once to migrate it. */
    int (*state_load)(void *ctx, const char *key, void *buf, size_t cap);
    int (*state_save)(void *ctx, const char *key, const void *buf, size_t len);

    /* --- Crypto. */
    void (*sha256_begin)(void *ctx);
    void (*sha256_update)(void *ctx, const uint8_t *data, size_t len);
    void (*sha256_end)(void *ctx, uint8_t out[32]);
    /* Verifies an ECDSA P-256 signature (r||s, big-endian) over SHA-256(msg) with a public key in
     * SEC1 uncompressed form (65 bytes). Returns 0 when valid. */
    int (*ecdsa_p256_verify)(void *ctx, const uint8_t pubkey[65], const uint8_t *msg,
                             size_t msg_len, const uint8_t sig[64]);

    /* --- Time and randomness. */
    uint64_t (*unix_time)(void *ctx);  /* trusted Unix seconds, or 0 when unknown */
    void (*sleep_ms)(void *ctx, uint32_t ms);
    /* Cryptographically strong on a device (esp_random with RF or the bootloader RNG enabled):
     * it makes the enrolment nonce. */
    uint32_t (*random)(void *ctx);

    /* --- Optional diagnostics (may be NULL). */
    void (*log)(void *ctx, const char *line);
} otter_port_t;

#ifdef __cplusplus
}
#endif

#endif /* OTTER_PORT_H */
