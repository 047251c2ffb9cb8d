#define _DEFAULT_SOURCE
#include "fake_port.h"

#include <stdio.h>
#include <string.h>

#include "sim.h" /* sim_check_image: the bootloader's image check */

static const char *ENROLLED = "{\"device_id\":\"dev_1\",\"device_token\":\"otd_test\"}";

static void respond(fake_t *f, int *status, int code, const void *body, size_t len)
{
    *status = code;
    if (len > sizeof f->resp) len = sizeof f->resp;
    memcpy(f->resp, body, len);
    f->resp_len = len;
    f->resp_pos = 0;
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static int http_open(void *ctx, const char *method, const char *url, const char *bearer,
                     const char *body, uint32_t range_from, int *status, uint32_t *clen)
{
    fake_t *f = ctx;
    (void)method;
    const char *path = strstr(url, "/device/v1/");
    if (path && strcmp(path, "/device/v1/enroll") == 0) {
        snprintf(f->last_enrol, sizeof f->last_enrol, "%s", body ? body : "");
    }
    if (f->server_down) return -1;
    if (strncmp(url, "http://cdn.test/", 16) == 0) {
        /* A CDN in front of the bucket: the same image, to anyone who asks. */
        f->cdn_requests++;
        if (bearer) f->cdn_bearer++;
        bearer = "otd_test";
        path = "/device/v1/releases/rel_1/image";
    }
    if (!path) return -1;
    if (f->busy > 0) {
        f->busy--;
        respond(f, status, 429, "{\"error\":\"overloaded\"}", 22);
        *clen = (uint32_t)f->resp_len;
        return 0;
    }
    if (strcmp(path, "/device/v1/enroll") == 0) {
        /* As otterd: a hardware id enrols once; a repeat needs the nonce of the first. */
        const char *n = body ? strstr(body, "\"enrollment_nonce\":\"") : NULL;
        char nonce[40] = "";
        if (n) sscanf(n + 20, "%39[0-9a-f]", nonce);
        if (f->enrolled_nonce[0] && strcmp(nonce, f->enrolled_nonce) != 0) {
            respond(f, status, 409, "{\"error\":\"already_enrolled\"}", 28);
            *clen = (uint32_t)f->resp_len;
            return 0;
        }
        snprintf(f->enrolled_nonce, sizeof f->enrolled_nonce, "%s", nonce[0] ? nonce : "-");
        f->enroll_count++;
        f->reject_token = 0;
        respond(f, status, 201, ENROLLED, strlen(ENROLLED));
    } else if (!bearer || strcmp(bearer, "otd_test") != 0 || f->reject_token) {
        respond(f, status, 401, "{}", 2);
    } else if (strcmp(path, "/device/v1/status") == 0) {
        if (f->report_count < 48) snprintf(f->reports[f->report_count++], 200, "%s", body ? body : "");
        respond(f, status, 204, "", 0);
    } else if (strcmp(path, "/device/v1/checkin") == 0) {
        f->checkin_count++;
        snprintf(f->last_checkin, sizeof f->last_checkin, "%s", body ? body : "");
        if (f->checkin_override) {
            respond(f, status, 200, f->checkin_override, strlen(f->checkin_override));
        } else if (!f->envelope) {
            const char *none = "{\"update\":null,\"poll_interval_s\":600}";
            respond(f, status, 200, none, strlen(none));
        } else {
            char env[1200], text[2048];
            b64(f->envelope, f->envelope_len, env);
            int n = snprintf(text, sizeof text,
                             "{\"update\":{\"release_id\":\"rel_1\",\"version\":\"2.0.0\",\"envelope\":\"%s\","
                             "\"download_url\":\"%s\",\"size\":%zu},\"poll_interval_s\":600}",
                             env, f->download_url ? f->download_url : "/device/v1/releases/rel_1/image",
                             f->image_len);
            respond(f, status, 200, text, (size_t)n);
        }
    } else if (strcmp(path, "/device/v1/releases/rel_1/image") == 0) {
        if (f->download_count < 64) f->ranges[f->download_count] = range_from;
        f->download_count++;
        uint32_t from = f->ignore_range ? 0 : range_from;
        if (from >= f->image_len) {
            respond(f, status, 416, "", 0);
        } else {
            respond(f, status, from ? 206 : 200, f->image + from, f->image_len - from);
            if (f->tamper_at >= (int)from && f->tamper_at < (int)f->image_len) f->resp[f->tamper_at - from] ^= 0x40;
            if (f->drop_after && f->resp_len > f->drop_after) f->resp_len = f->drop_after; /* connection drops */
            *clen = (uint32_t)(f->image_len - from);
            return 0;
        }
    } else {
        respond(f, status, 404, "{}", 2);
    }
    *clen = (uint32_t)f->resp_len;
    return 0;
}

static int http_read(void *ctx, uint8_t *buf, size_t cap)
{
    fake_t *f = ctx;
    size_t n = f->resp_len - f->resp_pos;
    if (n > cap) n = cap;
    memcpy(buf, f->resp + f->resp_pos, n);
    f->resp_pos += n;
    return (int)n;
}

static void http_close(void *ctx) { (void)ctx; }
static uint32_t http_retry_after(void *ctx) { return ((fake_t *)ctx)->retry_after; }
static uint32_t slot_capacity(void *ctx) { return ((fake_t *)ctx)->slot_cap; }

static int slot_begin(void *ctx, uint32_t size, uint32_t keep)
{
    fake_t *f = ctx;
    if (size > f->slot_cap) return -1;
    /* Still open from an attempt in this boot, exactly where the core goes on (the ESP-IDF
     * port does the same). */
    if (keep > 0 && f->ota_open && f->ota_written == keep) return (int)keep;
    keep &= ~63u; /* 64-byte "sectors": a port may keep less than asked */
    memset(f->slot[f->running_slot ^ 1] + keep, 0xFF, FAKE_SLOT - keep);
    f->ota_open = 1;
    f->ota_written = keep;
    f->partial_len = 0;
    return (int)keep;
}

static void program(fake_t *f, uint32_t off, const uint8_t *d, size_t n)
{
    memcpy(f->slot[f->running_slot ^ 1] + off, d, n);
}

static int slot_write(void *ctx, uint32_t off, const uint8_t *d, size_t n)
{
    fake_t *f = ctx;
    if (!f->ota_open || off != f->ota_written || off + n > f->slot_cap) {
        f->bad_writes++;
        return -1;
    }
    f->ota_written += (uint32_t)n;
    if (!f->encrypted) {
        program(f, off, d, n);
        return 0;
    }
    uint32_t at = off - f->partial_len; /* where the buffered block begins */
    while (n) {
        size_t k = 16 - f->partial_len < n ? 16 - f->partial_len : n;
        memcpy(f->partial + f->partial_len, d, k);
        f->partial_len += (uint32_t)k;
        d += k;
        n -= k;
        if (f->partial_len == 16) {
            program(f, at, f->partial, 16);
            at += 16;
            f->partial_len = 0;
        }
    }
    return 0;
}

static int slot_read(void *ctx, uint32_t off, uint8_t *d, size_t n)
{
    fake_t *f = ctx;
    memcpy(d, f->slot[f->running_slot ^ 1] + off, n);
    return 0;
}

static int slot_finish(void *ctx)
{
    fake_t *f = ctx;
    if (!f->ota_open) return -1;
    if (f->partial_len) { /* esp_ota_end pads and writes the last block */
        memset(f->partial + f->partial_len, 0xFF, 16 - f->partial_len);
        program(f, f->ota_written - f->partial_len, f->partial, 16);
    }
    f->ota_open = 0;
    char v[33];
    uint8_t sha[32];
    return sim_check_image(f->slot[f->running_slot ^ 1], f->slot_cap, v, sha) > 0 ? 0 : -1;
}

static int slot_activate(void *ctx)
{
    ((fake_t *)ctx)->activated++;
    return 0;
}

static int running_image(void *ctx, otter_running_image_t *out)
{
    fake_t *f = ctx;
    if (sim_check_image(f->slot[f->running_slot], FAKE_SLOT, out->version, out->sha256) <= 0) return -1;
    if (f->own_image_ids) out->sha256[0] ^= 0x5a;
    return 0;
}

static otter_boot_state_t boot_state(void *ctx)
{
    return ((fake_t *)ctx)->pending_verify ? OTTER_BOOT_PENDING_VERIFY : OTTER_BOOT_NORMAL;
}

static int boot_confirm(void *ctx)
{
    if (((fake_t *)ctx)->confirm_fails) return -1;
    ((fake_t *)ctx)->pending_verify = 0;
    return 0;
}

static void boot_rollback(void *ctx) { ((fake_t *)ctx)->rolled_back++; }
static void reboot(void *ctx) { ((fake_t *)ctx)->reboots++; }

uint8_t *fake_record(fake_t *f, const char *key, size_t **len)
{
    for (size_t i = 0; i < sizeof f->records / sizeof f->records[0]; i++) {
        if (strcmp(f->records[i].key, key) == 0) {
            if (len) *len = &f->records[i].len;
            return f->records[i].data;
        }
    }
    return NULL;
}

static int state_load(void *ctx, const char *key, void *buf, size_t cap)
{
    fake_t *f = ctx;
    size_t *len;
    uint8_t *data = fake_record(f, key, &len);
    if (!data) return 0;
    size_t n = *len < cap ? *len : cap;
    memcpy(buf, data, n);
    return (int)n;
}

static int state_save(void *ctx, const char *key, const void *buf, size_t len)
{
    fake_t *f = ctx;
    size_t *plen;
    uint8_t *data = fake_record(f, key, &plen);
    for (size_t i = 0; !data && i < sizeof f->records / sizeof f->records[0]; i++) {
        if (!f->records[i].key[0]) {
            snprintf(f->records[i].key, sizeof f->records[i].key, "%s", key);
            data = f->records[i].data;
            plen = &f->records[i].len;
        }
    }
    if (!data || len > sizeof f->records[0].data) return -1;
    memcpy(data, buf, len);
    *plen = len;
    return 0;
}

static void sha_begin(void *ctx) { otter_mbedtls_sha256_begin(&((fake_t *)ctx)->sha); }
static void sha_update(void *ctx, const uint8_t *d, size_t n) { otter_mbedtls_sha256_update(&((fake_t *)ctx)->sha, d, n); }
static void sha_end(void *ctx, uint8_t out[32]) { otter_mbedtls_sha256_end(&((fake_t *)ctx)->sha, out); }

static int verify(void *ctx, const uint8_t pub[65], const uint8_t *m, size_t n, const uint8_t sig[64])
{
    (void)ctx;
    return otter_mbedtls_ecdsa_p256_verify(pub, m, n, sig);
}

static uint64_t unix_time(void *ctx) { return ((fake_t *)ctx)->now; }
static void sleep_ms(void *ctx, uint32_t ms)
{
    fake_t *f = ctx;
    f->slept_ms += ms;
    if (f->on_sleep) f->on_sleep();
}
static uint32_t rnd(void *ctx)
{
    fake_t *f = ctx;
    f->random_state = f->random_state * 1103515245u + 12345u; /* varies, and repeats per test */
    return f->random_state >> 1;
}

void fake_power_off(fake_t *f)
{
    f->ota_open = 0;
    f->partial_len = 0;
}

void fake_put_image(fake_t *f, uint32_t slot, const uint8_t *img, size_t len)
{
    memset(f->slot[slot], 0xFF, FAKE_SLOT);
    memcpy(f->slot[slot], img, len);
}

const char *fake_find_report(const fake_t *f, const char *needle)
{
    for (int i = 0; i < f->report_count; i++) {
        if (strstr(f->reports[i], needle)) return f->reports[i];
    }
    return NULL;
}

int fake_fresh_downloads(const fake_t *f)
{
    int n = 0;
    for (int i = 0; i < f->download_count && i < 64; i++) n += f->ranges[i] == 0;
    return n;
}

int fake_requested_range(const fake_t *f, uint32_t offset)
{
    for (int i = 0; i < f->download_count && i < 64; i++) {
        if (f->ranges[i] == offset) return 1;
    }
    return 0;
}

void fake_init(fake_t *f, otter_port_t *p)
{
    memset(f, 0, sizeof *f);
    f->tamper_at = -1;
    f->slot_cap = FAKE_SLOT;
    memset(f->slot, 0xFF, sizeof f->slot);
    memset(p, 0, sizeof *p);
    p->ctx = f;
    p->http_open = http_open;
    p->http_read = http_read;
    p->http_close = http_close;
    p->http_retry_after = http_retry_after;
    p->slot_capacity = slot_capacity;
    p->slot_begin = slot_begin;
    p->slot_write = slot_write;
    p->slot_read = slot_read;
    p->slot_finish = slot_finish;
    p->slot_activate = slot_activate;
    p->running_image = running_image;
    p->boot_state = boot_state;
    p->boot_confirm = boot_confirm;
    p->boot_rollback = boot_rollback;
    p->reboot = reboot;
    p->state_load = state_load;
    p->state_save = state_save;
    p->sha256_begin = sha_begin;
    p->sha256_update = sha_update;
    p->sha256_end = sha_end;
    p->ecdsa_p256_verify = verify;
    p->unix_time = unix_time;
    p->sleep_ms = sleep_ms;
    p->random = rnd;
}
