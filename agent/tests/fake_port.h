/* An in-memory port with a scripted server, for unit tests and fuzzing of the core. Crypto is
 * real (mbedTLS); HTTP, flash and state are arrays. */
#ifndef FAKE_PORT_H
#define FAKE_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "otter_mbedtls.h"
#include "otter_port.h"

#define FAKE_SLOT 2048

typedef struct {
    /* The server. */
    int server_down;
    const char *checkin_override; /* a raw check-in answer (fuzzing, malformed answers) */
    const uint8_t *envelope;
    size_t envelope_len;
    const uint8_t *image;
    size_t image_len;
    int tamper_at;             /* serve the image with this byte flipped (-1: none) */
    uint32_t drop_after;       /* close a download after this many body bytes (0: never) */
    int ignore_range;
    const char *download_url;  /* the check-in's download_url (NULL: otterd's own path) */
    int cdn_requests;          /* requests to http://cdn.test/..., which serves the image ... */
    int cdn_bearer;            /* ... to anyone; requests that carried a token there anyway */
    int busy;                  /* answer this many requests 429 with Retry-After: retry_after */
    uint32_t retry_after;
    int reject_token;          /* answer 401 to the device token until it enrols again */
    char enrolled_nonce[40];   /* the nonce of the first enrolment ("": not enrolled yet); a
                                * later one without it is refused with 409, as otterd does */
    char last_checkin[600];    /* the body of the last check-in */
    char last_enrol[600];      /* the body of the last enrolment */
    uint32_t ranges[64];       /* range_from of each download request */
    char reports[48][200];
    int report_count;
    int enroll_count, checkin_count, download_count;
    /* The device. */
    uint8_t slot[2][FAKE_SLOT];
    uint32_t slot_cap;
    /* The write session of the spare slot, as esp_ota_begin/write/end: writes are sequential
     * from where the session is (a write elsewhere fails and is counted), and with `encrypted`
     * the last partial 16-byte block stays in RAM until it is complete or the session ends. */
    int ota_open;
    uint32_t ota_written;
    int encrypted;
    uint8_t partial[16];
    uint32_t partial_len;
    int bad_writes;
    uint32_t running_slot;
    int pending_verify;
    int confirm_fails;         /* boot_confirm fails (the image stays pending) */
    int own_image_ids;         /* running_image reports its own hash, not the file's (as ESP-IDF) */
    int rolled_back, reboots, activated;
    /* Persistent records by key (NVS blobs). */
    struct {
        char key[16];
        uint8_t data[1024];
        size_t len;
    } records[4];
    uint64_t now;
    uint32_t random_state;
    uint64_t slept_ms;
    void (*on_sleep)(void); /* called at each sleep, for tests of the run loop */
    /* One HTTP exchange. */
    uint8_t resp[8192];
    size_t resp_len, resp_pos;
    otter_mbedtls_sha256_t sha;
} fake_t;

void fake_init(fake_t *f, otter_port_t *p);
/* A reboot as the port sees it: RAM is lost, so an open write session (and the partial block
 * it held) is gone. */
void fake_power_off(fake_t *f);
/* The stored record `key`, or NULL; *len its length. */
uint8_t *fake_record(fake_t *f, const char *key, size_t **len);
/* Installs an image in a slot (the rest 0xFF). */
void fake_put_image(fake_t *f, uint32_t slot, const uint8_t *img, size_t len);
/* The first report whose text contains `needle`, or NULL. */
const char *fake_find_report(const fake_t *f, const char *needle);
/* Download requests from the first byte: whole downloads begun. */
int fake_fresh_downloads(const fake_t *f);
/* Whether some download request asked for bytes from `offset` on. */
int fake_requested_range(const fake_t *f, uint32_t offset);

#endif
