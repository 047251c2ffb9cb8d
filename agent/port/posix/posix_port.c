/* The POSIX port: plain HTTP/1.1 over sockets, flash slots and otadata as files in a directory,
 * state written atomically, mbedTLS crypto, and power cuts injected at chosen byte counts. */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define OTADATA_MAGIC 0x4154414fu /* "OTAD" */
#define SIM_SECTOR 4096u

void sim_power_cut(const char *where)
{
    fprintf(stderr, "sim: POWER CUT during %s\n", where);
    fflush(stderr);
    _exit(137);
}

void sim_count_write(sim_t *sim, const char *kind)
{
    if (!sim->cut_kind[0] || strcmp(sim->cut_kind, kind) == 0) {
        if (sim->cut_write_at >= 0 && sim->writes == sim->cut_write_at) sim_power_cut(kind);
        sim->writes++;
    }
    const char *log = getenv("OTTER_SIM_WRITE_LOG");
    if (log && *log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%s\n", kind);
            fclose(f);
        }
    }
}

void sim_path(const sim_t *sim, char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", sim->dir, name);
}

int sim_write_file_atomic(const sim_t *sim, const char *name, const void *data, size_t len)
{
    char path[600], tmp[620];
    sim_path(sim, path, sizeof path, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    int ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) return -1;
    return 0;
}

static int read_file(const sim_t *sim, const char *name, void *buf, size_t cap)
{
    char path[600];
    sim_path(sim, path, sizeof path, name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, cap);
    close(fd);
    return n < 0 ? -1 : (int)n;
}

int sim_read_otadata(sim_t *sim)
{
    otadata_t d;
    if (read_file(sim, "otadata", &d, sizeof d) != (int)sizeof d || d.magic != OTADATA_MAGIC ||
        d.boot_slot > 1) {
        return -1;
    }
    sim->otadata = d;
    return 0;
}

int sim_write_otadata(sim_t *sim)
{
    sim->otadata.magic = OTADATA_MAGIC;
    sim_count_write(sim, "otadata");
    return sim_write_file_atomic(sim, "otadata", &sim->otadata, sizeof sim->otadata);
}

static const char *slot_name(uint32_t slot)
{
    return slot ? "ota_1.bin" : "ota_0.bin";
}

uint8_t *sim_read_slot(const sim_t *sim, uint32_t slot)
{
    uint8_t *buf = malloc(sim->slot_size);
    if (!buf) return NULL;
    int n = read_file(sim, slot_name(slot), buf, sim->slot_size);
    if (n != (int)sim->slot_size) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---------------------------------------------------------------- HTTP */

static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap,
                     const char **path)
{
    if (strncmp(url, "http://", 7) != 0) return -1; /* the simulator speaks plain HTTP */
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    if (!slash) return -1;
    const char *colon = memchr(h, ':', (size_t)(slash - h));
    const char *hend = colon ? colon : slash;
    if ((size_t)(hend - h) >= hcap) return -1;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    if (colon) {
        if ((size_t)(slash - colon - 1) >= pcap) return -1;
        memcpy(port, colon + 1, (size_t)(slash - colon - 1));
        port[slash - colon - 1] = '\0';
    } else {
        snprintf(port, pcap, "80");
    }
    *path = slash;
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Remembers (and, unless --quiet, logs) why an exchange failed: a wrong port and a wrong secret
 * must not look alike. */
static void http_error(sim_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
    va_end(ap);
    if (!s->quiet) fprintf(stderr, "sim: %s\n", s->last_error);
}

static uint32_t http_retry_after(void *ctx)
{
    return ((sim_t *)ctx)->retry_after;
}

static void http_close(void *ctx)
{
    sim_t *s = ctx;
    if (s->sock >= 0) close(s->sock);
    s->sock = -1;
}

static int http_open(void *ctx, const char *method, const char *url, const char *bearer,
                     const char *json_body, uint32_t range_from, int *status, uint32_t *clen)
{
    sim_t *s = ctx;
    char host[128], port[8];
    const char *path;
    if (parse_url(url, host, sizeof host, port, sizeof port, &path) != 0) {
        http_error(s, "%s: not a plain http:// URL with a host", url);
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        http_error(s, "%s %s: cannot resolve %s", method, url, host);
        return -1;
    }
    s->sock = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    struct timeval tv = {10, 0};
    if (s->sock >= 0) {
        setsockopt(s->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(s->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    int rc = s->sock < 0 ? -1 : connect(s->sock, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0) {
        http_error(s, "%s %s: cannot connect to %s:%s (%s)", method, url, host, port, strerror(errno));
        http_close(s);
        return -1;
    }
    char head[1024];
    size_t body_len = json_body && strcmp(method, "GET") != 0 ? strlen(json_body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\nUser-Agent: otter-agent-sim\r\n",
                     method, path, host, port);
    if (bearer && *bearer) n += snprintf(head + n, sizeof head - (size_t)n, "Authorization: Bearer %s\r\n", bearer);
    if (range_from) n += snprintf(head + n, sizeof head - (size_t)n, "Range: bytes=%u-\r\n", range_from);
    if (body_len) {
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
    } else if (strcmp(method, "POST") == 0) {
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: 0\r\n");
    }
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (n >= (int)sizeof head || send_all(s->sock, head, (size_t)n) != 0 ||
        (body_len && send_all(s->sock, json_body, body_len) != 0)) {
        http_close(s);
        return -1;
    }
    /* Read the status line and headers. */
    s->rx_len = s->rx_pos = 0;
    char *end = NULL;
    while (!end) {
        if (s->rx_len >= sizeof s->rx - 1) {
            http_close(s);
            return -1;
        }
        ssize_t r = recv(s->sock, s->rx + s->rx_len, sizeof s->rx - 1 - s->rx_len, 0);
        if (r <= 0) {
            http_close(s);
            return -1;
        }
        s->rx_len += (size_t)r;
        s->rx[s->rx_len] = '\0';
        end = strstr((char *)s->rx, "\r\n\r\n");
    }
    if (sscanf((char *)s->rx, "HTTP/1.%*d %d", status) != 1) {
        http_close(s);
        return -1;
    }
    *clen = UINT32_MAX;
    s->retry_after = 0;
    for (char *line = strstr((char *)s->rx, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0) *clen = (uint32_t)strtoul(line + 15, NULL, 10);
        if (strncasecmp(line, "retry-after:", 12) == 0) s->retry_after = (uint32_t)strtoul(line + 12, NULL, 10);
        if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
            http_close(s); /* the server sends lengths; chunked bodies are not needed here */
            return -1;
        }
    }
    s->rx_pos = (size_t)(end + 4 - (char *)s->rx);
    s->body_left = *clen;
    if (*status >= 400) { /* with the start of the server's error body, when it came along */
        size_t shown = s->rx_len - s->rx_pos < 160 ? s->rx_len - s->rx_pos : 160;
        http_error(s, "%s %s: HTTP %d %.*s", method, path, *status, (int)shown, (char *)s->rx + s->rx_pos);
    }
    return 0;
}

static int http_read(void *ctx, uint8_t *buf, size_t cap)
{
    sim_t *s = ctx;
    if (s->sock < 0) return -1;
    if (s->body_left == 0) return 0;
    if (s->body_left != UINT32_MAX && cap > s->body_left) cap = s->body_left;
    size_t n;
    if (s->rx_pos < s->rx_len) {
        n = s->rx_len - s->rx_pos < cap ? s->rx_len - s->rx_pos : cap;
        memcpy(buf, s->rx + s->rx_pos, n);
        s->rx_pos += n;
    } else {
        ssize_t r = recv(s->sock, buf, cap, 0);
        if (r < 0) return -1;
        if (r == 0) return s->body_left == UINT32_MAX ? 0 : -1; /* closed early */
        n = (size_t)r;
    }
    if (s->body_left != UINT32_MAX) s->body_left -= (uint32_t)n;
    if (s->cut_download_at >= 0 && s->downloaded + (int64_t)n > s->cut_download_at) {
        sim_power_cut("download");
    }
    s->downloaded += (int64_t)n;
    return (int)n;
}

/* ---------------------------------------------------------------- flash */

static uint32_t slot_capacity(void *ctx)
{
    return ((sim_t *)ctx)->slot_size;
}

static uint32_t spare_slot(const sim_t *s)
{
    return s->running_slot ^ 1u;
}

static int open_spare(sim_t *s, int flags)
{
    char path[600];
    sim_path(s, path, sizeof path, slot_name(spare_slot(s)));
    return open(path, flags, 0600);
}

/* The write session of the spare slot follows esp_ota_begin/esp_ota_resume/esp_ota_write/
 * esp_ota_end as the ESP-IDF port uses them: a session still open from this boot goes on where it
 * is; otherwise whole sectors are kept (esp_ota_resume) and the rest erased. Writes are
 * sequential, and with --flash-encryption a partial 16-byte block stays in RAM until it is
 * complete or the session ends, as esp_ota_write does with flash encryption. */
static int slot_begin(void *ctx, uint32_t image_size, uint32_t keep)
{
    sim_t *s = ctx;
    if (image_size > s->slot_size || keep > image_size) return -1;
    if (keep > 0 && s->ota_open && s->ota_written == keep) return (int)keep;
    s->ota_open = 0;          /* esp_ota_abort: a buffered partial block is lost */
    s->partial_len = 0;
    keep &= ~(uint32_t)(SIM_SECTOR - 1); /* erasing works on whole sectors, as on flash */
    int fd = open_spare(s, O_RDWR | O_CREAT);
    if (fd < 0) return -1;
    /* Erase (0xFF) everything after what is kept, as flash must be erased before writing. */
    static uint8_t ff[4096];
    memset(ff, 0xFF, sizeof ff);
    int rc = 0;
    for (uint32_t off = keep; off < s->slot_size && rc == 0; off += sizeof ff) {
        size_t n = s->slot_size - off < sizeof ff ? s->slot_size - off : sizeof ff;
        if (pwrite(fd, ff, n, off) != (ssize_t)n) rc = -1;
    }
    if (fsync(fd) != 0) rc = -1;
    close(fd);
    /* A slot being written is not bootable: otadata must not point at it as NEW. */
    if (rc == 0 && s->otadata.state[spare_slot(s)] != IMG_EMPTY) {
        s->otadata.state[spare_slot(s)] = IMG_EMPTY;
        rc = sim_write_otadata(s);
    }
    if (rc != 0) return -1;
    s->ota_open = 1;
    s->ota_written = keep;
    return (int)keep;
}

/* Programs flash as NOR flash does; the power may be cut at a chosen byte. */
static int program(sim_t *s, uint32_t offset, const uint8_t *data, size_t len)
{
    int fd = open_spare(s, O_RDWR);
    if (fd < 0) return -1;
    size_t n = len;
    int cut = 0;
    if (s->cut_flash_at >= 0 && s->flash_written + (int64_t)len > s->cut_flash_at) {
        n = (size_t)(s->cut_flash_at - s->flash_written);
        cut = 1;
    }
    /* NOR flash programming only clears bits: what is written is old AND new, so a write over
     * bytes that were not erased corrupts them, as on a device. */
    uint8_t merged[2048];
    int rc = 0;
    for (size_t done = 0; done < n && rc == 0;) {
        size_t k = n - done < sizeof merged ? n - done : sizeof merged;
        if (pread(fd, merged, k, (off_t)(offset + done)) != (ssize_t)k) rc = -1;
        for (size_t i = 0; i < k; i++) merged[i] &= data[done + i];
        if (rc == 0 && pwrite(fd, merged, k, (off_t)(offset + done)) != (ssize_t)k) rc = -1;
        done += k;
    }
    close(fd);
    if (cut) sim_power_cut("flash write");
    s->flash_written += (int64_t)n;
    return rc;
}

static int slot_write(void *ctx, uint32_t offset, const uint8_t *data, size_t len)
{
    sim_t *s = ctx;
    if (!s->ota_open || offset != s->ota_written) {
        fprintf(stderr, "sim: slot write at %u refused: the write session %s (esp_ota_write is sequential)\n",
                offset, s->ota_open ? "is elsewhere" : "is not open");
        if (s->ota_open) fprintf(stderr, "sim:   the session is at %u\n", s->ota_written);
        return -1;
    }
    if ((uint64_t)offset + len > s->slot_size) return -1;
    sim_count_write(s, "slot");
    s->ota_written += (uint32_t)len;
    if (!s->flash_encryption) return program(s, offset, data, len);
    uint32_t at = offset - s->partial_len; /* where the buffered block begins */
    if (s->partial_len) {
        size_t k = 16 - s->partial_len < len ? 16 - s->partial_len : len;
        memcpy(s->partial + s->partial_len, data, k);
        s->partial_len += (uint32_t)k;
        data += k;
        len -= k;
        if (s->partial_len < 16) return 0;
        if (program(s, at, s->partial, 16) != 0) return -1;
        at += 16;
        s->partial_len = 0;
    }
    size_t whole = len & ~(size_t)15;
    if (whole && program(s, at, data, whole) != 0) return -1;
    memcpy(s->partial, data + whole, len - whole);
    s->partial_len = (uint32_t)(len - whole);
    return 0;
}

static int slot_read(void *ctx, uint32_t offset, uint8_t *data, size_t len)
{
    sim_t *s = ctx;
    int fd = open_spare(s, O_RDONLY);
    if (fd < 0) return -1;
    int rc = pread(fd, data, len, offset) == (ssize_t)len ? 0 : -1;
    close(fd);
    return rc;
}

static int slot_finish(void *ctx)
{
    sim_t *s = ctx;
    if (!s->ota_open) return -1;
    s->ota_open = 0;
    if (s->partial_len) { /* esp_ota_end pads the last block and writes it */
        memset(s->partial + s->partial_len, 0xFF, 16 - s->partial_len);
        if (program(s, s->ota_written - s->partial_len, s->partial, 16) != 0) return -1;
        s->partial_len = 0;
    }
    uint8_t *img = sim_read_slot(s, spare_slot(s));
    char version[33];
    uint8_t sha[32];
    long len = img ? sim_check_image(img, s->slot_size, version, sha) : -1;
    free(img);
    return len > 0 ? 0 : -1; /* esp_ota_end verifies the image */
}

static int slot_activate(void *ctx)
{
    sim_t *s = ctx;
    s->otadata.boot_slot = spare_slot(s);
    s->otadata.state[spare_slot(s)] = IMG_NEW;
    return sim_write_otadata(s);
}

static int running_image(void *ctx, otter_running_image_t *out)
{
    sim_t *s = ctx;
    uint8_t *img = sim_read_slot(s, s->running_slot);
    long len = img ? sim_check_image(img, s->slot_size, out->version, out->sha256) : -1;
    free(img);
    return len > 0 ? 0 : -1;
}

static otter_boot_state_t boot_state(void *ctx)
{
    sim_t *s = ctx;
    return s->otadata.state[s->running_slot] == IMG_PENDING_VERIFY ? OTTER_BOOT_PENDING_VERIFY
                                                                    : OTTER_BOOT_NORMAL;
}

static int boot_confirm(void *ctx)
{
    sim_t *s = ctx;
    s->otadata.state[s->running_slot] = IMG_VALID;
    return sim_write_otadata(s);
}

/* Reboot: the simulator re-executes itself (see sim_main.c), so all RAM state is lost. */
extern void sim_reboot(void);

static void boot_rollback(void *ctx)
{
    sim_t *s = ctx;
    s->otadata.state[s->running_slot] = IMG_INVALID;
    s->otadata.boot_slot = s->running_slot ^ 1u;
    sim_write_otadata(s);
    sim_reboot();
}

static void reboot(void *ctx)
{
    (void)ctx;
    sim_reboot();
}

/* ---------------------------------------------------------------- state, crypto, time */

/* Each record is a file "agent-KEY", written atomically (NVS writes a blob atomically). */
static int state_load(void *ctx, const char *key, void *buf, size_t cap)
{
    char name[40];
    snprintf(name, sizeof name, "agent-%s", key);
    return read_file(ctx, name, buf, cap);
}

static int state_save(void *ctx, const char *key, const void *buf, size_t len)
{
    char name[40];
    snprintf(name, sizeof name, "agent-%s", key);
    sim_count_write(ctx, "state");
    return sim_write_file_atomic(ctx, name, buf, len);
}

static void sha_begin(void *ctx) { otter_mbedtls_sha256_begin(&((sim_t *)ctx)->sha); }
static void sha_update(void *ctx, const uint8_t *d, size_t n) { otter_mbedtls_sha256_update(&((sim_t *)ctx)->sha, d, n); }
static void sha_end(void *ctx, uint8_t out[32]) { otter_mbedtls_sha256_end(&((sim_t *)ctx)->sha, out); }

static int ecdsa_verify(void *ctx, const uint8_t pub[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    (void)ctx;
    return otter_mbedtls_ecdsa_p256_verify(pub, msg, len, sig);
}

static uint64_t unix_time(void *ctx)
{
    (void)ctx;
    return (uint64_t)time(NULL);
}

static void sleep_ms(void *ctx, uint32_t ms)
{
    sim_t *s = ctx;
    s->slept_ms += ms;
    double real = ms * s->time_scale;
    if (real >= 1.0) {
        struct timespec ts = {(time_t)(real / 1000), (long)((long long)real % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static uint32_t rnd(void *ctx)
{
    (void)ctx;
    uint32_t v;
    if (getentropy(&v, sizeof v) != 0) v = (uint32_t)random(); /* the kernel's CSPRNG first */
    return v;
}

static void log_line(void *ctx, const char *line)
{
    sim_t *s = ctx;
    if (!s->quiet) fprintf(stderr, "%s\n", line);
}

void sim_port(sim_t *sim, otter_port_t *p)
{
    memset(p, 0, sizeof *p);
    p->ctx = sim;
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
    p->ecdsa_p256_verify = ecdsa_verify;
    p->unix_time = unix_time;
    p->sleep_ms = sleep_ms;
    p->random = rnd;
    p->log = log_line;
}
