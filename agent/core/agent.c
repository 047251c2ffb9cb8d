/*
 * The update cycle. One static instance, no heap, every buffer sized at compile time.
 *
 *   boot:  a new image pending verification runs the self-test, then confirms (the new security
 *          counter is stored, success reported) or rolls back (reported from the old image).
 *   poll:  enrol once -> report a pending outcome -> check in -> verify the manifest signature
 *          before trusting any field -> refuse what this device must not install -> download
 *          with a streaming SHA-256, resumable with Range -> compare the hash -> activate ->
 *          reboot.
 *
 * Everything that must survive a power cut is in three records (id_rec_t, inst_rec_t,
 * upd_rec_t), each saved through the port, which writes each one atomically.
 */
#include <string.h>

#include "otter_internal.h"

#define IO_BUF 1536
#define ID_LEN 48
#define TOKEN_LEN 96
#define URL_LEN 200 /* the check-in declares "download_url_max":199 (URL_LEN - 1) */
/* Overridable so that unit tests with small images cross every boundary. */
#ifndef OTTER_SAVE_EVERY
#define OTTER_SAVE_EVERY 16384u   /* bytes between saved download offsets */
#endif
#ifndef OTTER_REPORT_EVERY
#define OTTER_REPORT_EVERY 262144u /* bytes per ranged request, between progress reports */
#endif
#define SAVE_EVERY OTTER_SAVE_EVERY
#define REPORT_EVERY OTTER_REPORT_EVERY
#define MAX_ATTEMPTS 3            /* downloads of one release that end in a bad hash */
#define MAX_FIRST_BOOTS 2         /* first boots of one release that ended in a rollback */
#define BACKOFF_MIN_MS 5000u
#define BACKOFF_MAX_MS 900000u
/* Mixed into every record's CRC: a record of another layout reads as damaged. Change it only
 * together with a migration of the records it replaces (see migrate_v2). */
#define RECORD_VERSION 3u

#define FLAG_PENDING 0x1u         /* an image was activated and awaits its first boot */

/* What must survive a power cut is kept in three records, each written atomically and checked
 * on its own, so that damage to one (or a layout change of one) never costs the others: */
typedef struct { /* "id": who the device is; written at enrolment */
    char device_token[TOKEN_LEN];
    char enrol_nonce[33];         /* chosen once, stored before the first enrolment attempt */
    uint32_t crc;
} id_rec_t;

typedef struct { /* "installed": the last confirmed release and the floor it set */
    uint32_t security_counter;    /* only ever rises */
    uint8_t installed_sha256[32]; /* the last confirmed release's image (manifest hash) ... */
    uint8_t installed_port[32];   /* ... and the port's identity of it */
    uint32_t crc;
} inst_rec_t;

/* "update": the update in progress. Losing it costs at most a download, a report not yet
 * delivered (a pending activation's too), or the memory of a release given up. */
typedef struct {
    uint32_t flags;               /* the fields up to pend_from are in the order of layout 2 */
    uint32_t dl_size;
    uint32_t dl_offset;
    uint32_t dl_attempts;
    uint32_t pend_counter;
    uint8_t dl_sha256[32];
    uint8_t pend_sha256[32];      /* the pending release's image (manifest hash) */
    uint8_t pend_from[32];        /* the port's identity of the image it replaces */
    uint32_t failed_boots;        /* first boots of failed_boot_release_id that were rolled back */
    char pend_release_id[ID_LEN]; /* the release ids, one after the other (see load_state) */
    char dl_release_id[ID_LEN];
    char bad_release_id[ID_LEN];  /* refused, or failed too often: not tried again */
    char failed_boot_release_id[ID_LEN];
    char out_release_id[ID_LEN];  /* an outcome still to report */
    char out_state[16];
    char out_reason[128];
    uint32_t crc;
} upd_rec_t;

static struct {
    const otter_config_t *cfg;
    const otter_port_t *port;
    id_rec_t id;
    inst_rec_t inst;
    upd_rec_t st;
    uint8_t key_ids[OTTER_MAX_TRUSTED_KEYS][8];
    otter_running_image_t running;
    uint32_t poll_ms;
    uint32_t backoff_ms;
    uint32_t retry_after_ms;             /* the server asked for this pause (429) */
    volatile int check_now;
    int hashing;                         /* a download's hash is begun and not ended */
    char io[IO_BUF];                     /* request and response bodies, download chunks */
    uint8_t envelope[OTTER_MAX_ENVELOPE];
    char release_id[ID_LEN];
    char path[URL_LEN];
} A;

/* ------------------------------------------------------------------------------------------ */

static const char MALFORMED[] = "malformed answer: ";

static void log_line(const char *a, const char *b)
{
    if (!A.port || !A.port->log) return;
    char line[192];
    otter_text_t t;
    ot_init(&t, line, sizeof line);
    ot_fmt(&t, "otter: %s%s", a, b ? b : "");
    A.port->log(A.port->ctx, line);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static uint32_t *rec_crc(void *rec, size_t size)
{
    return (uint32_t *)((uint8_t *)rec + size - 4);
}

static void save_rec(const char *key, void *rec, size_t size)
{
    *rec_crc(rec, size) = otter_crc32(rec, size - 4) ^ RECORD_VERSION;
    if (A.port->state_save(A.port->ctx, key, rec, size) != 0) log_line("cannot save ", key);
}

/* Returns the bytes stored (0: none, negative: there but unreadable); a damaged record, or one
 * of another layout, is zeroed. */
static int load_rec(const char *key, void *rec, size_t size)
{
    int n = A.port->state_load(A.port->ctx, key, rec, size);
    if (n != (int)size || *rec_crc(rec, size) != (otter_crc32(rec, size - 4) ^ RECORD_VERSION)) {
        if (n > 0) log_line("record discarded: ", key);
        memset(rec, 0, size);
    }
    return n;
}

#define SAVE(key, rec) save_rec(key, &(rec), sizeof(rec))
static void save_state(void) { SAVE("update", A.st); }
static void save_id(void) { SAVE("id", A.id); }
static void save_inst(void) { SAVE("installed", A.inst); }

/* Layout 2 (before records) was one blob, "state". Its identity, security counter, installed
 * release and pending activation are carried over (the first boot of the image that brings this
 * agent is such an activation); a half-done download starts over. */
static void migrate_v2(void)
{
    uint8_t *b = (uint8_t *)A.io;
    uint32_t crc;
    /* 716 bytes with a good CRC: layout 2 was the only one of that size. */
    if (A.port->state_load(A.port->ctx, "state", b, IO_BUF) != 716) return;
    memcpy(&crc, b + 712, 4);
    if (crc != otter_crc32(b, 712)) return;
    memcpy(A.id.device_token, b + 192, TOKEN_LEN + 33);
    memcpy(&A.inst.security_counter, b + 8, 4);
    memcpy(A.inst.installed_sha256, b + 128, 64);
    memcpy(&A.st, b + 12, 116);
    memcpy(A.st.pend_release_id, b + 369, ID_LEN);
    save_id();
    save_inst();
    save_state();
}

static void load_state(void)
{
    int have = load_rec("id", &A.id, sizeof A.id) | load_rec("installed", &A.inst, sizeof A.inst) |
               load_rec("update", &A.st, sizeof A.st);
    if (!have) migrate_v2(); /* none of the records: maybe the layout before them */
    /* Strings from storage are terminated before use, whatever is stored. */
    A.id.device_token[TOKEN_LEN - 1] = A.id.enrol_nonce[32] = '\0';
    for (char *id = A.st.pend_release_id; id < A.st.out_state; id += ID_LEN) id[ID_LEN - 1] = '\0';
    A.st.out_state[15] = A.st.out_reason[127] = '\0';
}

static void notify(otter_state_t s, const char *reason)
{
    if (A.cfg->on_state) A.cfg->on_state(A.cfg->user, s, reason);
}

/* Remembers an outcome to report; it survives reboots until the server has it. */
static void set_outcome(const char *release_id, otter_state_t s, const char *reason)
{
    copy_str(A.st.out_release_id, ID_LEN, release_id);
    copy_str(A.st.out_state, sizeof A.st.out_state, otter_state_name(s));
    copy_str(A.st.out_reason, sizeof A.st.out_reason, reason ? reason : "");
    notify(s, reason);
}

static const char *channel(void)
{
    return A.cfg->channel ? A.cfg->channel : "stable";
}

static uint32_t jitter(uint32_t ms, uint32_t percent)
{
    uint32_t span = (uint32_t)((uint64_t)ms * percent / 100u);
    if (span == 0) return ms;
    uint32_t r = A.port->random(A.port->ctx) % (2u * span + 1u);
    return ms - span + r;
}

static uint32_t next_backoff(void)
{
    A.backoff_ms = A.backoff_ms ? A.backoff_ms * 2u : BACKOFF_MIN_MS;
    if (A.backoff_ms > BACKOFF_MAX_MS) A.backoff_ms = BACKOFF_MAX_MS;
    uint32_t wait = jitter(A.backoff_ms, 25);
    if (A.retry_after_ms > wait) wait = A.retry_after_ms; /* an overloaded server's own pause */
    A.retry_after_ms = 0;
    return wait;
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP exchanges with JSON bodies.                                                            */

/* A path is on our server; anything else is an absolute URL the server chose (a CDN). */
static int url_for(const char *path)
{
    otter_text_t t;
    ot_init(&t, A.path, sizeof A.path);
    ot_fmt(&t, "%s%s", *path == '/' ? A.cfg->server_url : "", path);
    return t.overflow ? -1 : 0;
}

/* Sends `body` (in A.io) and reads the answer into A.io. Returns the HTTP status, or -1. */
static int exchange(const char *method, const char *path, const char *token, size_t *resp_len)
{
    int status = 0;
    uint32_t clen = 0;
    *resp_len = 0;
    if (url_for(path) != 0) return -1;
    if (A.port->http_open(A.port->ctx, method, A.path, token, A.io, 0, &status, &clen) != 0) return -1;
    if (status == 429 && A.port->http_retry_after) {
        uint32_t s = A.port->http_retry_after(A.port->ctx);
        A.retry_after_ms = (s > 3600u ? 3600u : s) * 1000u;
    }
    size_t n = 0;
    for (;;) {
        if (n >= IO_BUF - 1) { /* an answer larger than any we expect: refuse it */
            A.port->http_close(A.port->ctx);
            return -1;
        }
        int got = A.port->http_read(A.port->ctx, (uint8_t *)A.io + n, IO_BUF - 1 - n);
        if (got < 0) {
            A.port->http_close(A.port->ctx);
            return -1;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    A.port->http_close(A.port->ctx);
    A.io[n] = '\0';
    *resp_len = n;
    return status;
}

/* Posts one status report; returns the HTTP status, or -1. */
static int post_status(const char *release_id, const char *state, uint32_t progress, const char *reason)
{
    otter_text_t t;
    ot_init(&t, A.io, IO_BUF);
    ot_fmt(&t, "{\"release_id\":%q,\"state\":%q", release_id, state);
    if (progress) ot_fmt(&t, ",\"progress_bytes\":%u", progress);
    if (reason && *reason) ot_fmt(&t, ",\"reason\":%q", reason);
    ot_str(&t, "}");
    if (t.overflow) return -1;
    size_t len;
    return exchange("POST", "/device/v1/status", A.id.device_token, &len);
}

/* A progress report: best effort (what matters is kept as an outcome and sent until delivered). */
static void report(const char *release_id, const char *state, uint32_t progress, const char *reason)
{
    post_status(release_id, state, progress, reason);
}

/* One step of the current release, told to the server and to the application alike. */
static void step(otter_state_t state, uint32_t progress, const char *reason)
{
    report(A.release_id, otter_state_name(state), progress, reason);
    notify(state, reason);
}

/* Sends a remembered outcome; keeps it when the server cannot be reached. */
static int flush_outcome(void)
{
    if (!A.st.out_state[0]) return 0;
    int status = post_status(A.st.out_release_id, A.st.out_state, 0, A.st.out_reason);
    if (status < 0 || status >= 500 || status == 429) return -1;
    /* Delivered, or refused for good (4xx): either way it is not sent again. */
    A.st.out_state[0] = '\0';
    save_state();
    return 0;
}

/* Enrolment can be repeated with the same nonce when its answer is lost (a power cut before the
 * token was stored): the nonce is stored before the first attempt, so the server can tell that
 * the second attempt comes from the same device. */
static int enrol(void)
{
    otter_text_t t;
    if (!A.id.enrol_nonce[0]) {
        uint8_t raw[16];
        for (size_t i = 0; i < sizeof raw; i += 4) {
            uint32_t r = A.port->random(A.port->ctx);
            memcpy(raw + i, &r, 4);
        }
        ot_init(&t, A.id.enrol_nonce, sizeof A.id.enrol_nonce);
        ot_hex(&t, raw, sizeof raw);
        save_id();
    }
    ot_init(&t, A.io, IO_BUF);
    ot_fmt(&t, "{\"product\":%q,\"enrollment_secret\":%q,\"hardware_id\":%q,\"channel\":%q,"
               "\"enrollment_nonce\":%q}",
           A.cfg->product, A.cfg->enrollment_secret, A.cfg->hardware_id, channel(), A.id.enrol_nonce);
    if (t.overflow) return -1;
    size_t len;
    int status = exchange("POST", "/device/v1/enroll", NULL, &len);
    if (status != 201) {
        log_line(status == 409 ? "enrolment refused (409)" : "enrolment failed", NULL);
        return -1;
    }
    oj_value_t v;
    if (oj_find(A.io, len, NULL, "device_token", &v) != 0 ||
        oj_string(&v, A.id.device_token, TOKEN_LEN) <= 0) {
        A.id.device_token[0] = '\0';
        log_line(MALFORMED, "enrol");
        return -1;
    }
    save_id();
    log_line("enrolled", NULL);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Deciding whether a verified release may be installed.                                        */

static int refuse(const char *reason)
{
    log_line("refused: ", reason);
    copy_str(A.st.bad_release_id, ID_LEN, A.release_id);
    step(OTTER_STATE_REFUSED, 0, reason);
    save_state();
    return -1;
}

static int check_release(const otter_envelope_t *env, const char **clock_note)
{
    char reason[96];
    otter_text_t t;
    ot_init(&t, reason, sizeof reason);
    *clock_note = NULL;
    if (env->product_len != strlen(A.cfg->product) ||
        memcmp(env->product, A.cfg->product, env->product_len) != 0) {
        return refuse("product: another product");
    }
    if (env->chip != A.cfg->chip_id) {
        ot_fmt(&t, "chip: the manifest is for chip id %u, this device is %u", (uint32_t)env->chip,
               (uint32_t)A.cfg->chip_id);
        return refuse(reason);
    }
    if (env->security_counter < A.inst.security_counter) {
        ot_fmt(&t, "downgrade: counter %u < %u", env->security_counter, A.inst.security_counter);
        return refuse(reason);
    }
    if (env->flags & OTTER_MF_DELTA) return refuse("delta: whole images only");
    if (env->flags & OTTER_MF_EXPIRES) {
        uint64_t now = A.port->unix_time(A.port->ctx);
        if (now == 0) {
            *clock_note = "no trusted clock: expiry not checked";
        } else if (now >= env->expires_at) {
            return refuse("expired");
        }
    }
    uint32_t capacity = A.port->slot_capacity(A.port->ctx);
    if (env->image_size > capacity) {
        ot_fmt(&t, "oversize: image of %u bytes, update slot holds %u", env->image_size, capacity);
        return refuse(reason);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Download and install.                                                                        */

/* The next attempt starts from the first byte; the attempt count of the release is kept. */
static void forget_download(void)
{
    A.st.dl_offset = 0;
}

/* Hashes what an interrupted attempt left in the slot, so the stream can continue. */
static int rehash_slot(uint32_t upto)
{
    for (uint32_t off = 0; off < upto;) {
        uint32_t n = upto - off < IO_BUF ? upto - off : IO_BUF;
        if (A.port->slot_read(A.port->ctx, off, (uint8_t *)A.io, n) != 0) return -1;
        A.port->sha256_update(A.port->ctx, (const uint8_t *)A.io, n);
        off += n;
    }
    return 0;
}

/* Every begun hash is ended, also when a download is given up: a live context can hold a
 * hardware SHA engine (the classic ESP32's). */
static void hash_end(uint8_t out[32])
{
    if (A.hashing) A.port->sha256_end(A.port->ctx, out);
    A.hashing = 0;
}

static void hash_begin(void)
{
    hash_end((uint8_t *)A.io);
    A.port->sha256_begin(A.port->ctx);
    A.hashing = 1;
}

typedef enum { DL_DONE = 0, DL_RETRY, DL_FAILED } dl_result_t;

static dl_result_t download(const otter_envelope_t *env, const char *url_path, const char *note)
{
    uint32_t size = env->image_size;
    int same = strcmp(A.st.dl_release_id, A.release_id) == 0 && A.st.dl_size == size &&
               memcmp(A.st.dl_sha256, env->image_sha256, 32) == 0;
    if (!same) {
        copy_str(A.st.dl_release_id, ID_LEN, A.release_id);
        memcpy(A.st.dl_sha256, env->image_sha256, 32);
        A.st.dl_size = size;
        A.st.dl_attempts = 0;
    }
    if (!same || A.st.dl_offset >= size) {
        A.st.dl_offset = 0;
        save_state();
    }
    uint32_t offset = A.st.dl_offset;
    hash_begin();
    int kept = A.port->slot_begin(A.port->ctx, size, offset);
    if (kept < 0 || (uint32_t)kept > offset || rehash_slot((uint32_t)kept) != 0) {
        if (offset == 0) return DL_FAILED;
        forget_download(); /* the kept bytes are unreadable: start over next time */
        save_state();
        return DL_RETRY;
    }
    offset = (uint32_t)kept;
    step(OTTER_STATE_DOWNLOADING, offset, note);

    /* One ranged request per REPORT_EVERY bytes: between them the progress is reported (the
     * port runs one exchange at a time). */
    int no_ranges = 0; /* the server ignored a Range: read the rest in one request */
    while (offset < size) {
        int status = 0;
        uint32_t clen = 0;
        if (url_for(url_path) != 0) return DL_FAILED; /* a report in between reuses A.path */
        /* The device token goes to our server only, never to a CDN or bucket. */
        if (A.port->http_open(A.port->ctx, "GET", A.path,
                              *url_path == '/' ? A.id.device_token : NULL, NULL, offset, &status,
                              &clen) != 0) {
            return DL_RETRY;
        }
        if (offset > 0 && status == 200) {
            /* The server ignored the range: take the whole image from the start, in a new write
             * session (slot writes are sequential). */
            if (A.port->slot_begin(A.port->ctx, size, 0) != 0) {
                A.port->http_close(A.port->ctx);
                return DL_RETRY;
            }
            offset = 0;
            no_ranges = 1;
            hash_begin();
        } else if (!((offset == 0 && status == 200) || (offset > 0 && status == 206))) {
            A.port->http_close(A.port->ctx);
            if (status == 416) { /* our offset is wrong: start over */
                forget_download();
                save_state();
            }
            return DL_RETRY;
        }
        if (clen != UINT32_MAX && clen != size - offset) {
            A.port->http_close(A.port->ctx);
            return DL_RETRY;
        }
        uint32_t saved = offset;
        uint32_t stop = !no_ranges && size - offset > REPORT_EVERY ? offset + REPORT_EVERY : size;
        uint32_t held = 0; /* received but not written yet: less than a 16-byte block */
        while (offset + held < stop) {
            uint32_t want = stop - offset - held;
            if (want > IO_BUF - held) want = IO_BUF - held;
            int got = A.port->http_read(A.port->ctx, (uint8_t *)A.io + held, want);
            if (got <= 0) break;
            held += (uint32_t)got;
            /* Whole 16-byte blocks only, but for the last bytes of the image: with flash
             * encryption esp_ota_write keeps a partial block in RAM, and a resume within the same
             * boot must find on flash every byte it hashes again. */
            uint32_t n = offset + held == size ? held : held & ~15u;
            if (n && A.port->slot_write(A.port->ctx, offset, (const uint8_t *)A.io, n) != 0) {
                A.port->http_close(A.port->ctx);
                forget_download();
                save_state();
                report(A.release_id, "failure", 0, "flash write failed");
                return DL_FAILED;
            }
            A.port->sha256_update(A.port->ctx, (const uint8_t *)A.io, n);
            offset += n;
            held -= n;
            memmove(A.io, A.io + n, held);
            if (offset - saved >= SAVE_EVERY) {
                A.st.dl_offset = saved = offset;
                save_state();
            }
            if (A.cfg->on_progress) A.cfg->on_progress(A.cfg->user, offset, size);
        }
        A.port->http_close(A.port->ctx);
        A.st.dl_offset = offset;
        save_state();
        if (offset < stop) return DL_RETRY; /* the connection dropped: resume next time */
        if (offset < size) report(A.release_id, "downloading", offset, NULL);
    }

    uint8_t digest[32];
    hash_end(digest);
    if (memcmp(digest, env->image_sha256, 32) != 0) {
        uint32_t attempts = ++A.st.dl_attempts;
        forget_download();
        report(A.release_id, "failure", 0, "hash mismatch: image differs from the signed manifest");
        notify(OTTER_STATE_FAILURE, "hash mismatch");
        if (attempts >= MAX_ATTEMPTS) copy_str(A.st.bad_release_id, ID_LEN, A.release_id);
        save_state();
        return DL_FAILED;
    }
    return DL_DONE;
}

/* The platform would not take a verified image: reported, and the release not tried again. */
static otter_poll_result_t give_up(const char *reason, uint32_t *wait_ms)
{
    copy_str(A.st.bad_release_id, ID_LEN, A.release_id);
    save_state();
    step(OTTER_STATE_FAILURE, 0, reason);
    *wait_ms = A.poll_ms;
    return OTTER_POLL_IDLE;
}

/* After a verified download: close the slot, record what is pending, activate, reboot. */
static otter_poll_result_t install(const otter_envelope_t *env, uint32_t *wait_ms)
{
    step(OTTER_STATE_DOWNLOADED, env->image_size, NULL);
    if (A.port->slot_finish(A.port->ctx) != 0) {
        forget_download();
        return give_up("image rejected by the platform", wait_ms);
    }
    step(OTTER_STATE_INSTALLING, 0, NULL);
    /* Pending first, then activate: a power cut between the two leaves a pending record for an
     * image that never booted, which the next boot reports as rolled back. */
    A.st.flags |= FLAG_PENDING;
    copy_str(A.st.pend_release_id, ID_LEN, A.release_id);
    memcpy(A.st.pend_sha256, env->image_sha256, 32);
    memcpy(A.st.pend_from, A.running.sha256, 32);
    A.st.pend_counter = env->security_counter;
    forget_download();
    A.st.dl_attempts = 0;
    save_state();
    if (A.port->slot_activate(A.port->ctx) != 0) {
        A.st.flags &= ~FLAG_PENDING;
        return give_up("cannot set the boot partition", wait_ms);
    }
    step(OTTER_STATE_REBOOTING, 0, NULL);
    A.port->reboot(A.port->ctx);
    *wait_ms = 0;
    return OTTER_POLL_REBOOT;
}

/* The running image's hash as manifests spell it. A port may identify images its own way (ESP-IDF
 * hashes what the bootloader verifies, which leaves out a signature sector): when the running image
 * is the release this agent confirmed last, its manifest hash is used. */
static const uint8_t *running_sha256(void)
{
    if (memcmp(A.running.sha256, A.inst.installed_port, 32) == 0) return A.inst.installed_sha256;
    return A.running.sha256;
}

static int checkin(size_t *len)
{
    otter_text_t t;
    ot_init(&t, A.io, IO_BUF);
    ot_fmt(&t, "{\"version\":%q,\"security_counter\":%u,\"image_sha256\":\"%h\",\"chip\":%q,"
               "\"partition_size\":%u,\"download_url_max\":199}",
           A.running.version, A.inst.security_counter, running_sha256(), A.cfg->chip,
           A.port->slot_capacity(A.port->ctx));
    if (t.overflow) return -1;
    return exchange("POST", "/device/v1/checkin", A.id.device_token, len);
}

otter_poll_result_t otter_agent_poll(uint32_t *wait_ms)
{
    *wait_ms = A.poll_ms;
    if (!A.cfg) return OTTER_POLL_BAD_CONFIG;
    A.check_now = 0;
    if (!A.id.device_token[0] && enrol() != 0) {
        *wait_ms = next_backoff();
        return OTTER_POLL_RETRY;
    }
    if (flush_outcome() != 0) {
        *wait_ms = next_backoff();
        return OTTER_POLL_RETRY;
    }
    size_t len;
    int status = checkin(&len);
    if (status == 401) { /* the token was revoked or the device deleted: enrol again */
        A.id.device_token[0] = '\0';
        save_id();
    }
    if (status != 200) {
        log_line("check-in failed", NULL);
        *wait_ms = next_backoff();
        return OTTER_POLL_RETRY;
    }
    A.backoff_ms = 0;

    oj_value_t v;
    uint32_t poll_s;
    if (oj_find(A.io, len, NULL, "poll_interval_s", &v) != 0) {
        log_line(MALFORMED, "check-in");
        *wait_ms = next_backoff();
        return OTTER_POLL_RETRY;
    }
    if (oj_u32(&v, &poll_s) == 0 && poll_s >= 10 && poll_s <= 7u * 86400u) {
        A.poll_ms = poll_s * 1000u;
    }
    *wait_ms = A.poll_ms;

    char url_path[URL_LEN];
    oj_value_t rid, env64, url;
    if (oj_find(A.io, len, "update", "release_id", &rid) != 0 || rid.type == OJ_NONE) {
        return OTTER_POLL_IDLE; /* "update": null */
    }
    if (oj_string(&rid, A.release_id, ID_LEN) <= 0 ||
        oj_find(A.io, len, "update", "envelope", &env64) != 0 || env64.type != OJ_STRING ||
        oj_find(A.io, len, "update", "download_url", &url) != 0 ||
        oj_string(&url, url_path, sizeof url_path) <= 0 ||
        (strncmp(url_path, "/device/v1/", 11) != 0 && strncmp(url_path, "http", 4) != 0)) {
        log_line(MALFORMED, "update");
        *wait_ms = next_backoff();
        return OTTER_POLL_RETRY;
    }
    if (strcmp(A.release_id, A.st.bad_release_id) == 0) return OTTER_POLL_IDLE;

    /* Base64 straight from the answer (quotes excluded): an escape is not base64 and fails. */
    int env_len = ob64_decode(env64.start + 1, env64.len - 2, A.envelope, sizeof A.envelope, 0);
    otter_envelope_t env;
    if (env_len <= 0 || otter_envelope_parse(A.envelope, (size_t)env_len, &env) != 0) {
        refuse("envelope: malformed");
        return OTTER_POLL_IDLE;
    }
    otter_verify_t verdict = otter_envelope_verify(&env, A.port, (const uint8_t(*)[8])A.key_ids,
                                                   A.cfg->trusted_keys, A.cfg->trusted_key_count);
    if (verdict == OTTER_VERIFY_NO_TRUSTED_KEY) {
        refuse("signature: no trusted key signed the manifest");
        return OTTER_POLL_IDLE;
    }
    if (verdict != OTTER_VERIFY_OK) {
        refuse("signature: a trusted key's signature is bad");
        return OTTER_POLL_IDLE;
    }
    /* From here on the manifest's fields are trusted. */
    if (memcmp(env.image_sha256, running_sha256(), 32) == 0) return OTTER_POLL_IDLE;
    const char *note;
    if (check_release(&env, &note) != 0) return OTTER_POLL_IDLE;

    dl_result_t dl = download(&env, url_path, note);
    hash_end((uint8_t *)A.io); /* a download given up */
    switch (dl) {
    case DL_DONE: return install(&env, wait_ms);
    case DL_RETRY: *wait_ms = next_backoff(); return OTTER_POLL_RETRY;
    case DL_FAILED: break;
    }
    *wait_ms = next_backoff();
    return OTTER_POLL_RETRY;
}

/* A pending release came back: its first boot failed the self-test, or never reached a verdict
 * (a crash, the watchdog, a power cut) and the bootloader went back. Neither proves the image bad
 * (the self-test may have met a network outage), so it is tried once more, the next time the old
 * image reaches the server and is offered it again; the second time it is given up. */
static void first_boot_failed(const char *why)
{
    if (strcmp(A.st.failed_boot_release_id, A.st.pend_release_id) != 0) {
        copy_str(A.st.failed_boot_release_id, ID_LEN, A.st.pend_release_id);
        A.st.failed_boots = 0;
    }
    int give_up = ++A.st.failed_boots >= MAX_FIRST_BOOTS;
    char reason[96];
    otter_text_t t;
    ot_init(&t, reason, sizeof reason);
    ot_fmt(&t, "%s%s", why, give_up ? " again; given up" : "; one more try");
    set_outcome(A.st.pend_release_id, OTTER_STATE_ROLLED_BACK, reason);
    if (give_up) copy_str(A.st.bad_release_id, ID_LEN, A.st.pend_release_id);
    A.st.flags &= ~FLAG_PENDING;
    save_state();
}

/* The first boot of a new image, and the report of what became of an activation. */
static void boot_checks(void)
{
    int pending = (A.st.flags & FLAG_PENDING) != 0;
    /* Port-independent: running something other than what ran when the image was activated. */
    int is_new = pending && memcmp(A.running.sha256, A.st.pend_from, 32) != 0;
    if (A.port->boot_state(A.port->ctx) == OTTER_BOOT_PENDING_VERIFY) {
        int healthy = A.cfg->self_test ? A.cfg->self_test(A.cfg->user) == 0 : 1;
        if (!healthy) {
            log_line("self-test failed", NULL);
            if (pending) first_boot_failed("self-test failed");
            A.port->boot_rollback(A.port->ctx);
            return;
        }
        if (A.port->boot_confirm(A.port->ctx) != 0) {
            /* Still pending: the bootloader goes back at the next reboot, and ESP-IDF opens no
             * update slot until then. Reported, never counted as a success. */
            log_line("cannot confirm the image", NULL);
            if (is_new) {
                set_outcome(A.st.pend_release_id, OTTER_STATE_FAILURE, "cannot confirm the image");
                A.st.flags &= ~FLAG_PENDING;
                save_state();
                return;
            }
        }
    }
    if (!pending) return;
    if (is_new) {
        /* The floor only rises. */
        if (A.st.pend_counter > A.inst.security_counter) A.inst.security_counter = A.st.pend_counter;
        memcpy(A.inst.installed_sha256, A.st.pend_sha256, 32);
        memcpy(A.inst.installed_port, A.running.sha256, 32);
        save_inst();
        set_outcome(A.st.pend_release_id, OTTER_STATE_SUCCESS, NULL);
    } else if (!A.st.out_state[0] || strcmp(A.st.out_release_id, A.st.pend_release_id) != 0) {
        first_boot_failed("not confirmed");
        return;
    }
    A.st.flags &= ~FLAG_PENDING;
    save_state();
}

int otter_agent_init(const otter_config_t *config, const otter_port_t *port)
{
    memset(&A, 0, sizeof A);
    A.port = port;
    if (!config || !config->server_url || !config->product || !config->enrollment_secret ||
        !config->enrollment_secret[0] ||
        !config->hardware_id || !config->chip || !config->trusted_keys ||
        config->trusted_key_count == 0 || config->trusted_key_count > OTTER_MAX_TRUSTED_KEYS) {
        log_line("bad configuration", NULL);
        return -1;
    }
    A.cfg = config;
    A.poll_ms = (config->poll_interval_s ? config->poll_interval_s : 3600u) * 1000u;
    for (size_t i = 0; i < config->trusted_key_count; i++) {
        otter_key_id(port, &config->trusted_keys[i], A.key_ids[i]);
    }
    load_state();
    if (port->running_image(port->ctx, &A.running) != 0) {
        log_line("cannot read the running image", NULL);
        A.cfg = NULL;
        return -1;
    }
    A.running.version[sizeof A.running.version - 1] = '\0';
    boot_checks();
    return 0;
}

void otter_agent_run(void)
{
    for (;;) {
        uint32_t wait_ms;
        otter_poll_result_t r = otter_agent_poll(&wait_ms);
        if (r == OTTER_POLL_REBOOT || r == OTTER_POLL_BAD_CONFIG) return;
        /* Sleep in slices so that otter_agent_check_now() takes effect soon. */
        for (uint32_t slept = 0; slept < wait_ms && !A.check_now; slept += 1000u) {
            A.port->sleep_ms(A.port->ctx, wait_ms - slept < 1000u ? wait_ms - slept : 1000u);
        }
    }
}

void otter_agent_check_now(void)
{
    A.check_now = 1;
}

const char *otter_state_name(otter_state_t state)
{
    switch (state) {
    case OTTER_STATE_DOWNLOADING: return "downloading";
    case OTTER_STATE_DOWNLOADED: return "downloaded";
    case OTTER_STATE_INSTALLING: return "installing";
    case OTTER_STATE_REBOOTING: return "rebooting";
    case OTTER_STATE_SUCCESS: return "success";
    case OTTER_STATE_FAILURE: return "failure";
    case OTTER_STATE_ROLLED_BACK: return "rolled_back";
    case OTTER_STATE_REFUSED: return "refused";
    case OTTER_STATE_IDLE: break;
    }
    return "idle";
}
