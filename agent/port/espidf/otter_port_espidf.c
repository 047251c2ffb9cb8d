/*
 * The ESP-IDF port (v5.x): esp_http_client for HTTP(S), esp_ota_ops for the update slot and
 * rollback, NVS for the agent's state, mbedTLS (as ESP-IDF ships it) for SHA-256 and ECDSA.
 *
 * This file cannot be built on the development host; .github/workflows/agent-esp-idf.yml builds it
 * in Espressif's IDF container for esp32, esp32c3 and esp32s3. Everything it calls is listed, with
 * the ESP-IDF version that introduced it, in docs/agent.md ("What the ESP-IDF port calls").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "esp_app_desc.h"
#include "esp_crt_bundle.h"
#include "esp_http_client.h"
#include "esp_idf_version.h"
#include "esp_image_format.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "esp_system.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "sdkconfig.h"

#include "otter_espidf.h"
#include "otter_mbedtls.h"

static const char *TAG = "otter";

/* esp_ota_resume: ESP-IDF v5.3.3 and later v5.3.x, v5.4.2 and later, v5.5 on. */
#if (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 3, 3) && ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 4, 0)) || \
    ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 4, 2)
#define OTTER_HAVE_OTA_RESUME 1
#else
#define OTTER_HAVE_OTA_RESUME 0
#endif

/* Secure Boot v1 (and v1-style signed apps) append a signature block that the running-image
 * hash below does not cover: the agent would see its own image as different from the release
 * it installed. Refused at start. */
#if CONFIG_SECURE_BOOT_V1_ENABLED || CONFIG_SECURE_SIGNED_APPS_ECDSA_SCHEME
#define OTTER_UNSUPPORTED_SECURE_BOOT 1
#else
#define OTTER_UNSUPPORTED_SECURE_BOOT 0
#endif

#define NVS_NAMESPACE "otter"
#define SECTOR 4096u
/* Before this (2023-11-14) the clock was never set: SNTP has not run. */
#define CLOCK_SET_AFTER 1700000000ull

static struct {
    esp_http_client_handle_t http;
    const esp_partition_t *update;
    esp_ota_handle_t ota;
    int ota_open;
    uint32_t ota_written;
    otter_mbedtls_sha256_t sha;
    const char *ca_pem;
    uint32_t retry_after;
    int broken;                     /* the last exchange failed: its connection is not reused */
    uint32_t cr_first, cr_total;    /* the last answer's Content-Range */
    int windowed;                   /* the open download is served in windows */
    uint32_t win_next, win_total;
    int running_known;
    otter_running_image_t running;
    const char *state_part;         /* the NVS partition of the agent's records */
    int state_tried;                /* it was prepared (once per boot) */
    esp_err_t state_err;            /* with this outcome */
} P;

/* ---------------------------------------------------------------- HTTP(S) */

/* One client and, with keep-alive, one TLS connection for all the exchanges of a poll: check-in,
 * reports and the download. A ranged download ("bytes=N-" from the core) is fetched as bounded
 * windows on that connection, so that each of the core's requests ends on a window boundary
 * and leaves the connection reusable; the core still sees one response with the rest of the
 * image. The connection is closed when the core sleeps between polls. */
#define WINDOW (64u * 1024u) /* divides the core's 256 KiB between progress reports */
#define MAX_REDIRECTS 3

static void http_drop(void)
{
    if (!P.http) return;
    esp_http_client_close(P.http);
    esp_http_client_cleanup(P.http);
    P.http = NULL;
}

/* The core is done with an answer: a fully read one leaves the connection open for the next. */
static void http_close(void *ctx)
{
    (void)ctx;
    if (P.http && (P.broken || !esp_http_client_is_complete_data_received(P.http))) {
        esp_http_client_close(P.http);
    }
    P.windowed = 0;
}

/* Response headers arrive as events during esp_http_client_fetch_headers. */
static esp_err_t on_http_event(esp_http_client_event_t *event)
{
    if (event->event_id != HTTP_EVENT_ON_HEADER) return ESP_OK;
    if (strcasecmp(event->header_key, "Retry-After") == 0) {
        P.retry_after = (uint32_t)strtoul(event->header_value, NULL, 10);
    } else if (strcasecmp(event->header_key, "Content-Range") == 0) {
        /* "bytes <first>-<last>/<total>" */
        const char *v = event->header_value;
        if (strncmp(v, "bytes ", 6) == 0) {
            char *end;
            P.cr_first = (uint32_t)strtoul(v + 6, &end, 10);
            const char *slash = strchr(end, '/');
            P.cr_total = slash ? (uint32_t)strtoul(slash + 1, NULL, 10) : 0;
        }
    }
    return ESP_OK;
}

static uint32_t http_retry_after(void *ctx)
{
    (void)ctx;
    return P.retry_after;
}

/* "scheme://host[:port]" of a URL: its length. */
static size_t origin_len(const char *url)
{
    const char *host = strstr(url, "://");
    if (!host) return 0;
    const char *path = strchr(host + 3, '/');
    return path ? (size_t)(path - url) : strlen(url);
}

/* Sends the prepared request and reads the answer's headers, following up to MAX_REDIRECTS
 * redirects (esp_http_client_open does not). A kept-alive connection the server has closed
 * meanwhile is reopened once. Returns the HTTP status, or -1. */
static int http_request(const char *body, int body_len, int64_t *length)
{
    int reopened = 0;
    for (int hops = 0;;) {
        P.cr_first = 0;
        P.cr_total = 0;
        P.retry_after = 0;
        P.broken = 1;
        int ok = esp_http_client_open(P.http, body_len) == ESP_OK &&
                 (!body_len || esp_http_client_write(P.http, body, body_len) == body_len) &&
                 (*length = esp_http_client_fetch_headers(P.http)) >= 0;
        if (!ok) {
            esp_http_client_close(P.http);
            if (reopened++) return -1;
            continue;
        }
        reopened = 1;
        int status = esp_http_client_get_status_code(P.http);
        if (status != 301 && status != 302 && status != 307 && status != 308) {
            P.broken = 0;
            return status;
        }
        if (++hops > MAX_REDIRECTS) {
            ESP_LOGE(TAG, "more than %d redirects", MAX_REDIRECTS);
            return -1;
        }
        char drain[64];
        while (esp_http_client_read(P.http, drain, sizeof drain) > 0) {
        }
        /* esp_http_client_get_url gives "scheme://host/path", without the port. */
        char before[160], url[160];
        if (esp_http_client_get_url(P.http, before, sizeof before) != ESP_OK) before[0] = '\0';
        if (esp_http_client_set_redirection(P.http) != ESP_OK ||
            esp_http_client_get_url(P.http, url, sizeof url) != ESP_OK) {
            return -1;
        }
#if !CONFIG_OTTER_ALLOW_PLAIN_HTTP
        if (strncmp(url, "https://", 8) != 0) {
            ESP_LOGE(TAG, "refusing a redirect to %s: HTTPS only", url);
            return -1;
        }
#endif
        /* The device token goes to the server's own host only. */
        size_t n = origin_len(url);
        if (n != origin_len(before) || strncasecmp(url, before, n) != 0) {
            esp_http_client_delete_header(P.http, "Authorization");
        }
        ESP_LOGI(TAG, "redirected (%d) to %s", status, url);
    }
}

static int http_open(void *ctx, const char *method, const char *url, const char *bearer,
                     const char *json_body, uint32_t range_from, int *status, uint32_t *content_length)
{
    (void)ctx;
#if !CONFIG_OTTER_ALLOW_PLAIN_HTTP
    if (strncmp(url, "https://", 8) != 0) {
        ESP_LOGE(TAG, "refusing %s: HTTPS only (CONFIG_OTTER_ALLOW_PLAIN_HTTP is for a lab)", url);
        return -1;
    }
#endif
    P.windowed = 0;
    if (P.http && esp_http_client_set_url(P.http, url) != ESP_OK) http_drop();
    if (!P.http) {
        esp_http_client_config_t config = {
            .url = url,
            .timeout_ms = CONFIG_OTTER_HTTP_TIMEOUT_MS,
            .buffer_size = 1024,
            .buffer_size_tx = 1024,
            .keep_alive_enable = true, /* TCP keep-alive probes on the kept connection */
            .event_handler = on_http_event,
        };
        if (P.ca_pem) {
            config.cert_pem = P.ca_pem;
        } else {
#if CONFIG_OTTER_TLS_CERT_BUNDLE
            config.crt_bundle_attach = esp_crt_bundle_attach;
#endif
        }
        P.http = esp_http_client_init(&config);
        if (!P.http) return -1;
    }
    int post = strcmp(method, "POST") == 0;
    esp_http_client_set_method(P.http, post ? HTTP_METHOD_POST : HTTP_METHOD_GET);
    char header[128];
    if (bearer && *bearer) {
        snprintf(header, sizeof header, "Bearer %s", bearer);
        esp_http_client_set_header(P.http, "Authorization", header);
    } else {
        esp_http_client_delete_header(P.http, "Authorization");
    }
    if (range_from) {
        snprintf(header, sizeof header, "bytes=%u-%u", (unsigned)range_from, (unsigned)(range_from + WINDOW - 1u));
        esp_http_client_set_header(P.http, "Range", header);
    } else {
        esp_http_client_delete_header(P.http, "Range");
    }
    if (post) {
        esp_http_client_set_header(P.http, "Content-Type", "application/json");
    } else {
        esp_http_client_delete_header(P.http, "Content-Type");
    }
    int body_len = post && json_body ? (int)strlen(json_body) : 0;
    int64_t length = 0;
    *status = http_request(json_body, body_len, &length);
    if (*status < 0) {
        http_close(ctx);
        return -1;
    }
    if (range_from && *status == 206 && P.cr_first == range_from && P.cr_total > range_from &&
        length > 0 && (uint64_t)length <= P.cr_total - range_from) {
        /* The first window of the rest of the image: the core sees all of the rest. */
        P.windowed = 1;
        P.win_next = range_from + (uint32_t)length;
        P.win_total = P.cr_total;
        *content_length = P.cr_total - range_from;
        return 0;
    }
    *content_length = esp_http_client_is_chunked_response(P.http) || length > UINT32_MAX - 1
                          ? UINT32_MAX
                          : (uint32_t)length;
    return 0;
}

/* The next window of a windowed download, on the same connection. */
static int next_window(void)
{
    uint32_t last = P.win_total - P.win_next > WINDOW ? P.win_next + WINDOW - 1u : P.win_total - 1u;
    char range[48];
    snprintf(range, sizeof range, "bytes=%u-%u", (unsigned)P.win_next, (unsigned)last);
    esp_http_client_set_header(P.http, "Range", range);
    int64_t length = 0;
    if (http_request(NULL, 0, &length) != 206 || P.cr_first != P.win_next || length <= 0 ||
        (uint64_t)length > (uint64_t)last - P.win_next + 1u) {
        P.broken = 1;
        return -1;
    }
    P.win_next += (uint32_t)length;
    return 0;
}

static int http_read(void *ctx, uint8_t *buf, size_t cap)
{
    (void)ctx;
    if (!P.http) return -1;
    int n = esp_http_client_read(P.http, (char *)buf, (int)cap);
    if (n == 0 && P.windowed && P.win_next < P.win_total && esp_http_client_is_complete_data_received(P.http)) {
        if (next_window() != 0) return -1;
        n = esp_http_client_read(P.http, (char *)buf, (int)cap);
        if (n == 0) n = -1; /* an empty window */
    }
    if (n < 0) {
        P.broken = 1;
        return -1;
    }
    if (n == 0 && !esp_http_client_is_complete_data_received(P.http)) { /* dropped */
        P.broken = 1;
        return -1;
    }
    return n;
}

/* ---------------------------------------------------------------- the update slot */

static const esp_partition_t *update_partition(void)
{
    if (!P.update) P.update = esp_ota_get_next_update_partition(NULL);
    return P.update;
}

static uint32_t slot_capacity(void *ctx)
{
    (void)ctx;
    const esp_partition_t *part = update_partition();
    return part ? part->size : 0;
}

static int slot_begin(void *ctx, uint32_t image_size, uint32_t keep)
{
    (void)ctx;
    const esp_partition_t *part = update_partition();
    if (!part || image_size > part->size) return -1;
    /* Still open from an attempt in this boot, exactly where the core wants to go on. */
    if (keep > 0 && P.ota_open && P.ota_written == keep) return (int)keep;
    if (P.ota_open) {
        esp_ota_abort(P.ota);
        P.ota_open = 0;
    }
    keep &= ~(SECTOR - 1u);
#if OTTER_HAVE_OTA_RESUME
    if (keep > 0) {
        /* Keep whole sectors; the rest is erased sector by sector as writing goes on. */
        if (esp_ota_resume(part, OTA_WITH_SEQUENTIAL_WRITES, keep, &P.ota) != ESP_OK) return -1;
        P.ota_open = 1;
        P.ota_written = keep;
        return (int)keep;
    }
#endif
    /* Without esp_ota_resume a new boot starts the image over. */
    esp_err_t err = esp_ota_begin(part, OTA_WITH_SEQUENTIAL_WRITES, &P.ota);
    if (err != ESP_OK) {
        /* ESP_ERR_OTA_ROLLBACK_INVALID_STATE: the running image is still unconfirmed. */
        ESP_LOGE(TAG, "esp_ota_begin: %s", esp_err_to_name(err));
        return -1;
    }
    P.ota_open = 1;
    P.ota_written = 0;
    return 0;
}

static int slot_write(void *ctx, uint32_t offset, const uint8_t *data, size_t len)
{
    (void)ctx;
    if (!P.ota_open || offset != P.ota_written) return -1; /* esp_ota_write is sequential */
    if (esp_ota_write(P.ota, data, len) != ESP_OK) return -1;
    P.ota_written += (uint32_t)len;
    return 0;
}

static int slot_read(void *ctx, uint32_t offset, uint8_t *data, size_t len)
{
    (void)ctx;
    const esp_partition_t *part = update_partition();
    return part && esp_partition_read(part, offset, data, len) == ESP_OK ? 0 : -1;
}

static int slot_finish(void *ctx)
{
    (void)ctx;
    if (!P.ota_open) return -1;
    P.ota_open = 0;
    esp_err_t err = esp_ota_end(P.ota); /* verifies the image (and its signature, if configured) */
    if (err != ESP_OK) ESP_LOGE(TAG, "esp_ota_end: %s", esp_err_to_name(err));
    return err == ESP_OK ? 0 : -1;
}

static int slot_activate(void *ctx)
{
    (void)ctx;
    esp_err_t err = esp_ota_set_boot_partition(update_partition());
    if (err != ESP_OK) ESP_LOGE(TAG, "esp_ota_set_boot_partition: %s", esp_err_to_name(err));
    return err == ESP_OK ? 0 : -1;
}

/* ---------------------------------------------------------------- the running image */

/* SHA-256 of the running image as its .bin file: the image up to its appended hash and, when
 * signed apps are configured, the signature sector after it. Computed once per boot. */
static int running_image(void *ctx, otter_running_image_t *out)
{
    (void)ctx;
    if (OTTER_UNSUPPORTED_SECURE_BOOT) {
        ESP_LOGE(TAG, "Secure Boot v1 / v1 signed apps are not supported: use Secure Boot v2");
        return -1;
    }
    if (!P.running_known) {
        const esp_app_desc_t *desc = esp_app_get_description();
        snprintf(P.running.version, sizeof P.running.version, "%s", desc->version);
        const esp_partition_t *part = esp_ota_get_running_partition();
        esp_partition_pos_t pos = {.offset = part->address, .size = part->size};
        esp_image_metadata_t meta;
        if (esp_image_get_metadata(&pos, &meta) != ESP_OK) return -1;
        uint32_t len = meta.image_len;
#if CONFIG_SECURE_BOOT_V2_ENABLED || CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME || CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME
        len = ((len + SECTOR - 1u) & ~(SECTOR - 1u)) + SECTOR;
#endif
        if (len > part->size) return -1;
        static uint8_t buf[1024];
        otter_mbedtls_sha256_t h = {0}; /* its own context: a download's may be live */
        otter_mbedtls_sha256_begin(&h);
        for (uint32_t off = 0; off < len; off += sizeof buf) {
            uint32_t n = len - off < sizeof buf ? len - off : sizeof buf;
            if (esp_partition_read(part, off, buf, n) != ESP_OK) {
                otter_mbedtls_sha256_end(&h, P.running.sha256); /* frees the context */
                return -1;
            }
            otter_mbedtls_sha256_update(&h, buf, n);
        }
        otter_mbedtls_sha256_end(&h, P.running.sha256);
        P.running_known = 1;
    }
    *out = P.running;
    return 0;
}

static otter_boot_state_t boot_state(void *ctx)
{
    (void)ctx;
    esp_ota_img_states_t state;
    if (esp_ota_get_state_partition(esp_ota_get_running_partition(), &state) == ESP_OK &&
        state == ESP_OTA_IMG_PENDING_VERIFY) {
        return OTTER_BOOT_PENDING_VERIFY;
    }
    return OTTER_BOOT_NORMAL;
}

static int boot_confirm(void *ctx)
{
    (void)ctx;
    return esp_ota_mark_app_valid_cancel_rollback() == ESP_OK ? 0 : -1;
}

static void boot_rollback(void *ctx)
{
    (void)ctx;
    esp_ota_mark_app_invalid_rollback_and_reboot();
    esp_restart(); /* only reached when no previous image can boot: start again */
}

static void reboot(void *ctx)
{
    (void)ctx;
    esp_restart();
}

/* ---------------------------------------------------------------- state in NVS */

/* One NVS blob per record key ("id", "installed", "update"; "state" is the layout before
 * records, read once to migrate it), in namespace "otter" of the NVS partition
 * CONFIG_OTTER_NVS_PARTITION. NVS writes a blob atomically: after a power cut the old value or
 * the new one is there. */
static const char *const STATE_KEYS[] = {"id", "installed", "update", "state"};
/* Written in a dedicated partition once the records of the default one have been copied. */
#define MOVED_KEY "moved"

static esp_err_t state_open(nvs_open_mode_t mode, nvs_handle_t *nvs)
{
    return nvs_open_from_partition(P.state_part, NVS_NAMESPACE, mode, nvs);
}

/* An agent that kept its records in the default partition and now has a dedicated one: each
 * record the dedicated partition lacks is copied from namespace "otter" of the default
 * partition, until MOVED_KEY says all of them were. A power cut part way copies the rest at the
 * next start. The default partition's copies stay (an older firmware started again finds its
 * own); an application that erases that partition later loses nothing of the agent's. */
static esp_err_t state_move_from_default(nvs_handle_t to)
{
    uint8_t moved;
    size_t len = sizeof moved;
    if (nvs_get_blob(to, MOVED_KEY, &moved, &len) == ESP_OK) return ESP_OK;
    nvs_handle_t from;
    esp_err_t err = nvs_open_from_partition(NVS_DEFAULT_PART_NAME, NVS_NAMESPACE, NVS_READONLY, &from);
    if (err == ESP_OK) {
        for (size_t i = 0; err == ESP_OK && i < sizeof STATE_KEYS / sizeof STATE_KEYS[0]; i++) {
            const char *key = STATE_KEYS[i];
            if (nvs_get_blob(to, key, NULL, &len) == ESP_OK) continue; /* has its own */
            if (nvs_get_blob(from, key, NULL, &len) != ESP_OK || len == 0) continue;
            void *buf = malloc(len);
            if (!buf) {
                err = ESP_ERR_NO_MEM;
                break;
            }
            err = nvs_get_blob(from, key, buf, &len);
            if (err == ESP_OK) err = nvs_set_blob(to, key, buf, len);
            free(buf);
            if (err == ESP_OK) ESP_LOGI(TAG, "record %s moved from NVS partition %s", key, NVS_DEFAULT_PART_NAME);
        }
        nvs_close(from);
    } else if (err == ESP_ERR_NVS_NOT_FOUND ||
               !esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_NVS,
                                         NVS_DEFAULT_PART_NAME)) {
        err = ESP_OK; /* no "otter" namespace there, or no default partition: nothing to move */
    } else {
        /* There but not initialised: its records would be missed for good. */
        ESP_LOGE(TAG, "call nvs_flash_init() before otter_agent_start(): records may be in NVS partition %s",
                 NVS_DEFAULT_PART_NAME);
    }
    moved = 1;
    if (err == ESP_OK) err = nvs_set_blob(to, MOVED_KEY, &moved, sizeof moved);
    if (err == ESP_OK) err = nvs_commit(to);
    return err;
}

/* ESP_OK once the partition is ready, else why not; tried once per boot. CONFIG_OTTER_NVS_PARTITION
 * when the partition table has it, else the default partition. A dedicated partition that
 * cannot be initialised (no free pages, a newer NVS format) is NOT erased: the agent stays
 * stopped and keeps the device's identity and security counter for a firmware that can read
 * them. Erasing it is a decision for whoever owns the device (docs/agent.md). */
static esp_err_t state_ready(void)
{
    if (P.state_tried) return P.state_err;
    P.state_tried = 1;
    esp_err_t err = ESP_OK;
    P.state_part = CONFIG_OTTER_NVS_PARTITION;
    if (strcmp(P.state_part, NVS_DEFAULT_PART_NAME) != 0 &&
        !esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_NVS, P.state_part)) {
        /* An image built for the new partition table, installed by OTA on a device with the old
         * one (OTA never rewrites the table): it goes on where the state is. */
        ESP_LOGW(TAG, "no NVS partition \"%s\" (CONFIG_OTTER_NVS_PARTITION) in the partition table: the "
                      "agent's state stays in \"%s\"", P.state_part, NVS_DEFAULT_PART_NAME);
        P.state_part = NVS_DEFAULT_PART_NAME;
    }
    if (strcmp(P.state_part, NVS_DEFAULT_PART_NAME) != 0) {
#if CONFIG_NVS_ENCRYPTION
        ESP_LOGW(TAG, "NVS partition %s is not encrypted (only ESP-IDF's default one is)", P.state_part);
#endif
        err = nvs_flash_init_partition(P.state_part);
        nvs_handle_t nvs;
        if (err == ESP_OK) err = state_open(NVS_READWRITE, &nvs);
        if (err == ESP_OK) {
            err = state_move_from_default(nvs);
            nvs_close(nvs);
        }
        if (err != ESP_OK) {
            ESP_LOGE(TAG, "NVS partition \"%s\" (CONFIG_OTTER_NVS_PARTITION): %s; the agent does not start "
                          "and erases nothing (see docs/agent.md, \"Where the agent keeps its state\")",
                     P.state_part, esp_err_to_name(err));
        }
    }
    P.state_err = err;
    return err;
}

static int state_load(void *ctx, const char *key, void *buf, size_t cap)
{
    (void)ctx;
    if (state_ready() != ESP_OK) return -1; /* there, but unreadable */
    nvs_handle_t nvs;
    if (state_open(NVS_READONLY, &nvs) != ESP_OK) return 0;
    size_t len = cap;
    esp_err_t err = nvs_get_blob(nvs, key, buf, &len);
    nvs_close(nvs);
    if (err == ESP_ERR_NVS_INVALID_LENGTH) return -1; /* there, but larger: another layout */
    return err == ESP_OK ? (int)len : 0;
}

static int state_save(void *ctx, const char *key, const void *buf, size_t len)
{
    (void)ctx;
    nvs_handle_t nvs;
    if (state_ready() != ESP_OK || state_open(NVS_READWRITE, &nvs) != ESP_OK) return -1;
    esp_err_t err = nvs_set_blob(nvs, key, buf, len);
    if (err == ESP_OK) err = nvs_commit(nvs);
    nvs_close(nvs);
    return err == ESP_OK ? 0 : -1;
}

/* ---------------------------------------------------------------- crypto, time, randomness */

static void sha_begin(void *ctx) { (void)ctx; otter_mbedtls_sha256_begin(&P.sha); }
static void sha_update(void *ctx, const uint8_t *d, size_t n) { (void)ctx; otter_mbedtls_sha256_update(&P.sha, d, n); }
static void sha_end(void *ctx, uint8_t out[32]) { (void)ctx; otter_mbedtls_sha256_end(&P.sha, out); }

static int ecdsa_verify(void *ctx, const uint8_t pub[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    (void)ctx;
    return otter_mbedtls_ecdsa_p256_verify(pub, msg, len, sig);
}

static uint64_t unix_time(void *ctx)
{
    (void)ctx;
#if CONFIG_OTTER_TRUST_SYSTEM_CLOCK
    time_t now = time(NULL);
    return (uint64_t)now > CLOCK_SET_AFTER ? (uint64_t)now : 0;
#else
    return 0;
#endif
}

static void sleep_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    http_drop(); /* no idle TLS connection (and its buffers) between polls */
    vTaskDelay(pdMS_TO_TICKS(ms) ? pdMS_TO_TICKS(ms) : 1);
}

static uint32_t random32(void *ctx)
{
    (void)ctx;
    return esp_random();
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    ESP_LOGI(TAG, "%s", line);
}

/* ---------------------------------------------------------------- public */

const otter_port_t *otter_port_espidf(void)
{
    static const otter_port_t port = {
        .ctx = NULL,
        .http_open = http_open,
        .http_read = http_read,
        .http_close = http_close,
        .http_retry_after = http_retry_after,
        .slot_capacity = slot_capacity,
        .slot_begin = slot_begin,
        .slot_write = slot_write,
        .slot_read = slot_read,
        .slot_finish = slot_finish,
        .slot_activate = slot_activate,
        .running_image = running_image,
        .boot_state = boot_state,
        .boot_confirm = boot_confirm,
        .boot_rollback = boot_rollback,
        .reboot = reboot,
        .state_load = state_load,
        .state_save = state_save,
        .sha256_begin = sha_begin,
        .sha256_update = sha_update,
        .sha256_end = sha_end,
        .ecdsa_p256_verify = ecdsa_verify,
        .unix_time = unix_time,
        .sleep_ms = sleep_ms,
        .random = random32,
        .log = log_line,
    };
    return &port;
}

void otter_espidf_set_ca(const char *ca_pem)
{
    P.ca_pem = ca_pem;
}

#if OTTER_KCONFIG_KEYS
extern const char otter_keys_start[] asm("_binary_otter_trusted_keys_pem_start");
extern const char otter_keys_end[] asm("_binary_otter_trusted_keys_pem_end");

/* Every "BEGIN PUBLIC KEY" block of the embedded file, up to OTTER_MAX_TRUSTED_KEYS. */
static size_t kconfig_keys(otter_pubkey_t *keys)
{
    static const char end_line[] = "-----END PUBLIC KEY-----";
    size_t count = 0;
    const char *p = otter_keys_start, *end = otter_keys_end;
    while (count < OTTER_MAX_TRUSTED_KEYS && p < end) {
        const char *stop = strstr(p, end_line); /* the file is NUL-terminated (TEXT) */
        if (!stop) break;
        stop += sizeof end_line - 1;
        if (otter_pubkey_from_pem(p, (size_t)(stop - p), &keys[count]) == 0) {
            count++;
        } else {
            ESP_LOGE(TAG, "CONFIG_OTTER_TRUSTED_KEYS_FILE: a key is not a P-256 public key; skipped");
        }
        p = stop;
    }
    return count;
}
#endif

void otter_config_from_kconfig(otter_config_t *cfg)
{
    static char hardware_id[18];
    uint8_t mac[6] = {0};
    esp_efuse_mac_get_default(mac);
    snprintf(hardware_id, sizeof hardware_id, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
             mac[3], mac[4], mac[5]);
    memset(cfg, 0, sizeof *cfg);
    cfg->server_url = CONFIG_OTTER_SERVER_URL;
    cfg->product = CONFIG_OTTER_PRODUCT;
    cfg->enrollment_secret = CONFIG_OTTER_ENROLLMENT_SECRET;
    cfg->channel = CONFIG_OTTER_CHANNEL;
    cfg->hardware_id = hardware_id;
    cfg->chip = CONFIG_IDF_TARGET;
    cfg->chip_id = (uint16_t)CONFIG_IDF_FIRMWARE_CHIP_ID;
    cfg->poll_interval_s = CONFIG_OTTER_POLL_INTERVAL_S;
#if OTTER_KCONFIG_KEYS
    static otter_pubkey_t keys[OTTER_MAX_TRUSTED_KEYS];
    cfg->trusted_keys = keys;
    cfg->trusted_key_count = kconfig_keys(keys);
#endif
}

static void agent_task(void *arg)
{
    const otter_config_t *cfg = arg;
    if (otter_agent_init(cfg, otter_port_espidf()) == 0) otter_agent_run();
    ESP_LOGE(TAG, "agent stopped: see the lines above");
    vTaskDelete(NULL);
}

esp_err_t otter_agent_start(const otter_config_t *cfg)
{
    if (OTTER_UNSUPPORTED_SECURE_BOOT) {
        ESP_LOGE(TAG, "Secure Boot v1 / v1 signed apps are not supported: use Secure Boot v2");
        return ESP_ERR_NOT_SUPPORTED;
    }
    esp_err_t err = state_ready();
    if (err != ESP_OK) return err;
    BaseType_t ok = xTaskCreate(agent_task, "otter", CONFIG_OTTER_TASK_STACK_SIZE, (void *)cfg,
                                CONFIG_OTTER_TASK_PRIORITY, NULL);
    return ok == pdPASS ? ESP_OK : ESP_ERR_NO_MEM;
}
