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
    int busy;                  /* answer this many requests 429 with Retry-After: retry_after */
    uint32_t retry_after;
    int reject_token;          /* answer 401 to the device token until it enrols again */
    char last_checkin[600];    /* the body of the last check-in */
    char last_enrol[600];      /* the body of the last enrolment */
    uint32_t ranges[64];       /* range_from of each download request */
    char reports[48][200];
    int report_count;
    int enroll_count, checkin_count, download_count;
    /* The device. */
    uint8_t slot[2][FAKE_SLOT];
    uint32_t slot_cap;
    uint32_t running_slot;
    int pending_verify;
    int confirm_fails;         /* boot_confirm fails (the image stays pending) */
    int own_image_ids;         /* running_image reports its own hash, not the file's (as ESP-IDF) */
    int rolled_back, reboots, activated;
    uint8_t state[2048];
    size_t state_len;
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
/* Installs an image in a slot (the rest 0xFF). */
void fake_put_image(fake_t *f, uint32_t slot, const uint8_t *img, size_t len);
/* The first report whose text contains `needle`, or NULL. */
const char *fake_find_report(const fake_t *f, const char *needle);
/* Download requests from the first byte: whole downloads begun. */
int fake_fresh_downloads(const fake_t *f);
/* Whether some download request asked for bytes from `offset` on. */
int fake_requested_range(const fake_t *f, uint32_t offset);

#endif
