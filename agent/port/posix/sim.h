/* The POSIX port and device simulator: file-backed flash, a bootloader with ESP-IDF's rollback
 * rules, plain-HTTP client, power-cut injection. */
#ifndef OTTER_SIM_H
#define OTTER_SIM_H

#include <stdint.h>

#include "otter_mbedtls.h"
#include "otter_port.h"

/* otadata image states, as ESP-IDF's esp_ota_img_states_t. */
enum { IMG_EMPTY = 0, IMG_VALID = 1, IMG_NEW = 2, IMG_PENDING_VERIFY = 3, IMG_INVALID = 4 };

typedef struct {
    uint32_t magic;
    uint32_t boot_slot;
    uint32_t state[2];
} otadata_t;

typedef struct {
    char dir[512];
    uint32_t slot_size;
    uint32_t running_slot;
    otadata_t otadata;
    int64_t cut_flash_at;    /* power cut after this many flash bytes written (-1: never) */
    int64_t cut_download_at; /* power cut after this many body bytes received (-1: never) */
    int64_t cut_write_at;    /* power cut before the Nth persistent write (0-based) of kind
                              * `cut_kind` ("": any), counted across reboots (-1: never) */
    char cut_kind[16];
    int64_t writes;          /* persistent writes of that kind so far in this boot */
    int64_t flash_written;
    int ota_open;             /* the spare slot's write session (esp_ota_begin ... esp_ota_end) */
    uint32_t ota_written;     /* where the next write must go */
    int flash_encryption;     /* write whole 16-byte blocks, buffering a partial one in RAM */
    uint8_t partial[16];
    uint32_t partial_len;
    int64_t downloaded;
    int sock;
    uint8_t rx[2048];
    size_t rx_len, rx_pos;
    uint32_t body_left;       /* UINT32_MAX: until the connection closes */
    uint32_t retry_after;     /* Retry-After of the last answer, seconds */
    otter_mbedtls_sha256_t sha;
    double time_scale;        /* real sleep = requested * time_scale */
    uint64_t slept_ms;        /* simulated time asleep, for the backoff log */
    int quiet;
    char last_error[256];     /* the last failed exchange: no connection, or an HTTP error */
} sim_t;

/* Fills `port` with the simulator's functions. */
void sim_port(sim_t *sim, otter_port_t *port);

/* Files of the simulated flash. */
void sim_path(const sim_t *sim, char *out, size_t cap, const char *name);
int sim_write_file_atomic(const sim_t *sim, const char *name, const void *data, size_t len);
int sim_read_otadata(sim_t *sim);
int sim_write_otadata(sim_t *sim);

/* Checks an ESP-IDF app image in a slot file as the bootloader would (header, segments,
 * checksum, appended SHA-256). Returns its length, or -1; fills `version` (33 bytes) and
 * `sha256` of the image bytes. */
long sim_check_image(const uint8_t *data, size_t cap, char *version, uint8_t sha256[32]);

/* Reads a whole slot into a fresh buffer (caller frees). */
uint8_t *sim_read_slot(const sim_t *sim, uint32_t slot);

void sim_power_cut(const char *where);

/* Counts one persistent write (a slot write, a state save, an otadata update) and cuts the power
 * before it when it is the chosen one. With OTTER_SIM_WRITE_LOG set, appends `kind` to that file:
 * the list of cut points a test can choose from. */
void sim_count_write(sim_t *sim, const char *kind);

#endif
