/*
 * otter-agent-sim: a device on the host. Its flash is a directory (ota_0.bin, ota_1.bin,
 * otadata, agent-*); a reboot re-executes the program, so nothing in RAM survives; a power cut is
 * an immediate _exit at a chosen byte of a download or a flash write, or before the Nth
 * persistent write of any kind (slot, agent state, otadata; counted across reboots).
 * `otter-agent-sim --help` prints the commands, options and exit codes (HELP below).
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "otter_agent.h"
#include "sim.h"

static sim_t sim;
static otter_port_t port;
static char **saved_argv;
static const char *fail_version, *fail_once_version;
static int failed_once; /* the self-test failed as --fail-self-test-once asked: drop it at reboot */
static int no_clock;

#define DEFAULT_SLOT_SIZE 0x1E0000u /* ota_0/ota_1 of ESP-IDF's usual 4 MB two-OTA layout */

static const char HELP[] =
    "otter-agent-sim: the Otter agent's core on a simulated ESP32 (flash slots, otadata and the\n"
    "agent's records are files in a directory; a reboot re-executes the program).\n"
    "\n"
    "usage:\n"
    "  otter-agent-sim init   --dir DIR --image FW.bin [--slot-size BYTES]\n"
    "  otter-agent-sim run    --dir DIR --server http://HOST:PORT --product NAME --secret SECRET\n"
    "                         --hardware-id ID --chip CHIP --key release.pub.pem [OPTIONS]\n"
    "  otter-agent-sim status --dir DIR\n"
    "  otter-agent-sim --help\n"
    "\n"
    "init: a new device in DIR running FW.bin (an ESP-IDF app image) from slot 0.\n"
    "  --slot-size BYTES     size of each OTA slot (default 1966080 = 0x1E0000, the OTA slots of\n"
    "                        ESP-IDF's 4 MB two-OTA layout); decimal or 0x hex\n"
    "run: boots the device and runs update cycles against otterd (plain HTTP only).\n"
    "  --chip CHIP           esp32, esp32s2, esp32s3, esp32c2, esp32c3, esp32c6, esp32h2, esp32p4\n"
    "                        (or any name with --chip-id)\n"
    "  --chip-id N           the chip id manifests carry (esp_chip_id_t); default: that of --chip,\n"
    "                        and it must agree with --chip when both are known\n"
    "  --key PEM             a trusted release public key (1 to 4 times)\n"
    "  --channel NAME        release channel (default stable)\n"
    "  --until-version V     stop (exit 0) once V runs and nothing is left to do; without it, stop\n"
    "                        at the first cycle that has nothing to do\n"
    "  --max-polls N         update cycles per boot before giving up (default 50, exit 3)\n"
    "  --time-scale F        really sleep F x the agent's waits (default 0: simulated time only)\n"
    "  --no-clock            the device has no trusted clock (expiry is not checked)\n"
    "  --flash-encryption    write flash as esp_ota_write does with flash encryption: whole\n"
    "                        16-byte blocks, a partial block kept in RAM until complete\n"
    "  --fail-self-test V    the self-test of version V fails, every time\n"
    "  --fail-self-test-once V  the self-test of version V fails on its first boot only\n"
    "  --cut-download-at N   power cut after N downloaded body bytes\n"
    "  --cut-flash-at N      power cut after N bytes programmed into the update slot\n"
    "  --cut-at-write [slot:|state:|otadata:]N  power cut before the Nth persistent write\n"
    "                        (0-based, of that kind; counted across reboots)\n"
    "  --quiet               no log lines on stderr\n"
    "status: prints the boot slot, the otadata states and the version that would boot.\n"
    "\n"
    "Each command prints one JSON line on stdout. run prints {\"result\": \"done\"|\"idle\"|\n"
    "\"polls exhausted\", ...}; when polls run out it also names the last error it met.\n"
    "\n"
    "exit codes: 0 done (or idle), 2 usage or setup error, 3 polls exhausted, 4 a boot loop (more\n"
    "than 20 reboots in one run), 99 no bootable image (a bricked device), 137 power cut.\n";

static void usage(const char *why)
{
    fprintf(stderr, "otter-agent-sim: %s\n(otter-agent-sim --help lists the commands and options)\n", why);
    exit(2);
}

static void usagef(const char *fmt, const char *a, const char *b)
{
    char why[512];
    snprintf(why, sizeof why, fmt, a, b ? b : "");
    usage(why);
}

/* A whole number, decimal or 0x hex, that fits `max`. */
static unsigned long long number(const char *opt, const char *v, unsigned long long max)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 0);
    if (!*v || *end || errno || v[0] == '-' || n > max) usagef("%s: '%s' is not a number in range", opt, v);
    return n;
}

/* The chip ids of esp_chip_id_t (ESP-IDF), as manifests carry them. */
static const struct {
    const char *name;
    uint16_t id;
} CHIPS[] = {{"esp32", 0},    {"esp32s2", 2},  {"esp32c3", 5},  {"esp32s3", 9},   {"esp32c2", 12},
             {"esp32c6", 13}, {"esp32h2", 16}, {"esp32p4", 18}, {"esp8266", 0x8266}};

/* A reboot: start this program again with the same arguments, minus the power-cut options
 * (a cut happens once), with the boot count incremented. */
void sim_reboot(void)
{
    static char *argv2[64];
    int n = 0;
    static char remaining[24];
    for (int i = 0; saved_argv[i] && n < 62; i++) {
        if (strcmp(saved_argv[i], "--cut-flash-at") == 0 || strcmp(saved_argv[i], "--cut-download-at") == 0 ||
            (failed_once && strcmp(saved_argv[i], "--fail-self-test-once") == 0)) {
            i++;
            continue;
        }
        if (strcmp(saved_argv[i], "--cut-at-write") == 0 && saved_argv[i + 1]) {
            /* Counted across reboots: the next boot cuts at what is left. */
            snprintf(remaining, sizeof remaining, "%s%s%lld", sim.cut_kind, sim.cut_kind[0] ? ":" : "",
                     (long long)(sim.cut_write_at - sim.writes));
            argv2[n++] = saved_argv[i++];
            argv2[n++] = remaining;
            continue;
        }
        argv2[n++] = saved_argv[i];
    }
    argv2[n] = NULL;
    const char *boots = getenv("OTTER_SIM_BOOTS");
    char next[16];
    snprintf(next, sizeof next, "%d", boots ? atoi(boots) + 1 : 1);
    setenv("OTTER_SIM_BOOTS", next, 1);
    if (!sim.quiet) fprintf(stderr, "sim: reboot\n");
    fflush(NULL);
    execv("/proc/self/exe", argv2);
    perror("execv");
    _exit(1);
}

static int image_ok(uint32_t slot)
{
    uint8_t *img = sim_read_slot(&sim, slot);
    char version[33];
    uint8_t sha[32];
    long len = img ? sim_check_image(img, sim.slot_size, version, sha) : -1;
    free(img);
    return len > 0;
}

/* The second-stage bootloader with app rollback enabled, as ESP-IDF's. */
static void bootloader(void)
{
    if (sim_read_otadata(&sim) != 0) usage("no otadata: run `init` first");
    uint32_t slot = sim.otadata.boot_slot;
    if (sim.otadata.state[slot] == IMG_NEW) {
        sim.otadata.state[slot] = IMG_PENDING_VERIFY; /* first boot of a new image */
    } else if (sim.otadata.state[slot] == IMG_PENDING_VERIFY) {
        sim.otadata.state[slot] = IMG_INVALID; /* it booted before and never confirmed */
        slot ^= 1u;
    }
    if (sim.otadata.state[slot] == IMG_INVALID || sim.otadata.state[slot] == IMG_EMPTY || !image_ok(slot)) {
        if (sim.otadata.state[slot] == IMG_PENDING_VERIFY) sim.otadata.state[slot] = IMG_INVALID;
        slot ^= 1u;
        if (sim.otadata.state[slot] == IMG_INVALID || sim.otadata.state[slot] == IMG_EMPTY || !image_ok(slot)) {
            fprintf(stderr, "sim: BRICKED: no bootable image in either slot\n");
            exit(99);
        }
    }
    sim.otadata.boot_slot = slot;
    sim.running_slot = slot;
    if (sim_write_otadata(&sim) != 0) {
        fprintf(stderr, "sim: cannot write otadata\n");
        exit(1);
    }
}

static int self_test(void *user)
{
    (void)user;
    otter_running_image_t img;
    port.running_image(port.ctx, &img);
    if (fail_version && strcmp(img.version, fail_version) == 0) {
        fprintf(stderr, "sim: self-test of %s fails (as asked)\n", img.version);
        return -1;
    }
    if (fail_once_version && strcmp(img.version, fail_once_version) == 0) {
        fprintf(stderr, "sim: self-test of %s fails this once (as asked)\n", img.version);
        failed_once = 1;
        return -1;
    }
    return 0;
}

static uint64_t no_time(void *ctx)
{
    (void)ctx;
    return 0;
}

static void load_slot_size(void)
{
    char path[600];
    sim_path(&sim, path, sizeof path, "ota_0.bin");
    struct stat st;
    if (stat(path, &st) != 0) usage("no ota_0.bin: run `init` first");
    sim.slot_size = (uint32_t)st.st_size;
}

static void print_status(void)
{
    load_slot_size();
    if (sim_read_otadata(&sim) != 0) usage("no otadata");
    uint32_t slot = sim.otadata.boot_slot;
    uint8_t *img = sim_read_slot(&sim, slot);
    char version[33] = "";
    uint8_t sha[32];
    long len = img ? sim_check_image(img, sim.slot_size, version, sha) : -1;
    free(img);
    printf("{\"boot_slot\":%u,\"state\":[%u,%u],\"version\":\"%s\",\"valid\":%s}\n", slot,
           sim.otadata.state[0], sim.otadata.state[1], len > 0 ? version : "", len > 0 ? "true" : "false");
}

static int init(const char *image, uint32_t slot_size)
{
    FILE *f = fopen(image, "rb");
    if (!f) usagef("--image %s: %s", image, strerror(errno));
    static uint8_t buf[16u << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n == 0) usagef("--image %s: the file is empty", image, NULL);
    if (n > slot_size) {
        char why[700];
        snprintf(why, sizeof why, "--image %s: %zu bytes do not fit a slot of %u bytes (--slot-size)", image, n,
                 slot_size);
        usage(why);
    }
    mkdir(sim.dir, 0700);
    sim.slot_size = slot_size;
    memset(buf + n, 0xFF, slot_size - n);
    static uint8_t blank[16u << 20];
    memset(blank, 0xFF, slot_size);
    if (sim_write_file_atomic(&sim, "ota_0.bin", buf, slot_size) != 0 ||
        sim_write_file_atomic(&sim, "ota_1.bin", blank, slot_size) != 0) {
        usage("cannot write the slots");
    }
    memset(&sim.otadata, 0, sizeof sim.otadata);
    sim.otadata.boot_slot = 0;
    sim.otadata.state[0] = IMG_VALID;
    if (sim_write_otadata(&sim) != 0) usage("cannot write otadata");
    char version[33];
    uint8_t sha[32];
    if (sim_check_image(buf, slot_size, version, sha) <= 0) usagef("--image %s: not a valid ESP-IDF app image", image, NULL);
    printf("{\"initialised\":\"%s\",\"version\":\"%s\"}\n", sim.dir, version);
    return 0;
}

static int read_key(const char *path, otter_pubkey_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char pem[1024];
    size_t n = fread(pem, 1, sizeof pem, f);
    fclose(f);
    return otter_pubkey_from_pem(pem, n, out);
}

int main(int argc, char **argv)
{
    saved_argv = argv;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "help") == 0) {
            fputs(HELP, stdout);
            return 0;
        }
    }
    if (argc < 2) usage("missing command: init, run or status");
    const char *cmd = argv[1];
    if (strcmp(cmd, "init") != 0 && strcmp(cmd, "run") != 0 && strcmp(cmd, "status") != 0) {
        usagef("unknown command '%s': init, run or status", cmd, NULL);
    }
    const char *image = NULL, *until = NULL;
    uint32_t slot_size = DEFAULT_SLOT_SIZE;
    long max_polls = 50;
    static otter_pubkey_t keys[OTTER_MAX_TRUSTED_KEYS];
    size_t key_count = 0;
    int chip_id = -1;
    otter_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    sim.cut_flash_at = sim.cut_download_at = sim.cut_write_at = -1;
    sim.sock = -1;
    sim.time_scale = 0.0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--no-clock") == 0) { no_clock = 1; continue; }
        if (strcmp(a, "--quiet") == 0) { sim.quiet = 1; continue; }
        if (strcmp(a, "--flash-encryption") == 0) { sim.flash_encryption = 1; continue; }
        if (strncmp(a, "--", 2) != 0) usagef("unexpected argument '%s'", a, NULL);
        static const char *const valued[] = {
            "--dir", "--image", "--slot-size", "--server", "--product", "--secret", "--hardware-id",
            "--channel", "--chip", "--chip-id", "--key", "--until-version", "--max-polls",
            "--fail-self-test", "--fail-self-test-once", "--cut-flash-at", "--cut-download-at",
            "--cut-at-write", "--time-scale"};
        size_t opt = 0;
        while (opt < sizeof valued / sizeof valued[0] && strcmp(a, valued[opt]) != 0) opt++;
        if (opt == sizeof valued / sizeof valued[0]) usagef("unknown option '%s'", a, NULL);
        if (i + 1 >= argc) usagef("%s needs a value", a, NULL);
        const char *v = argv[++i];
        if (strcmp(a, "--dir") == 0) snprintf(sim.dir, sizeof sim.dir, "%s", v);
        else if (strcmp(a, "--image") == 0) image = v;
        else if (strcmp(a, "--slot-size") == 0) slot_size = (uint32_t)number(a, v, 16u << 20);
        else if (strcmp(a, "--server") == 0) cfg.server_url = v;
        else if (strcmp(a, "--product") == 0) cfg.product = v;
        else if (strcmp(a, "--secret") == 0) cfg.enrollment_secret = v;
        else if (strcmp(a, "--hardware-id") == 0) cfg.hardware_id = v;
        else if (strcmp(a, "--channel") == 0) cfg.channel = v;
        else if (strcmp(a, "--chip") == 0) cfg.chip = v;
        else if (strcmp(a, "--chip-id") == 0) chip_id = (int)number(a, v, 0xFFFF);
        else if (strcmp(a, "--key") == 0) {
            if (key_count == OTTER_MAX_TRUSTED_KEYS) usage("--key: at most 4 keys");
            if (read_key(v, &keys[key_count]) != 0) usagef("--key %s: cannot read a P-256 public key (PEM) from it", v, NULL);
            key_count++;
        } else if (strcmp(a, "--until-version") == 0) until = v;
        else if (strcmp(a, "--max-polls") == 0) max_polls = (long)number(a, v, 1000000);
        else if (strcmp(a, "--fail-self-test") == 0) fail_version = v;
        else if (strcmp(a, "--fail-self-test-once") == 0) fail_once_version = v;
        else if (strcmp(a, "--cut-flash-at") == 0) sim.cut_flash_at = (int64_t)number(a, v, INT64_MAX);
        else if (strcmp(a, "--cut-download-at") == 0) sim.cut_download_at = (int64_t)number(a, v, INT64_MAX);
        else if (strcmp(a, "--cut-at-write") == 0) { /* [KIND:]N */
            const char *colon = strchr(v, ':');
            if (colon) {
                size_t k = (size_t)(colon - v);
                if (!((k == 4 && strncmp(v, "slot", 4) == 0) || (k == 5 && strncmp(v, "state", 5) == 0) ||
                      (k == 7 && strncmp(v, "otadata", 7) == 0))) {
                    usagef("--cut-at-write '%s': the kind is slot, state or otadata", v, NULL);
                }
                memcpy(sim.cut_kind, v, k);
                v = colon + 1;
            }
            sim.cut_write_at = (int64_t)number(a, v, INT64_MAX);
        }
        else if (strcmp(a, "--time-scale") == 0) {
            char *end;
            sim.time_scale = strtod(v, &end);
            if (!*v || *end || sim.time_scale < 0) usagef("--time-scale: '%s' is not a number >= 0", v, NULL);
        }
        else usagef("unknown option '%s'", a, NULL);
    }
    if (!sim.dir[0]) usage("--dir is required");
    if (strcmp(cmd, "init") == 0) {
        if (!image) usage("init: --image is required");
        return init(image, slot_size);
    }
    if (strcmp(cmd, "status") == 0) {
        print_status();
        return 0;
    }
    static const char *const required[] = {"--server", "--product", "--secret", "--hardware-id", "--chip"};
    const char *given[] = {cfg.server_url, cfg.product, cfg.enrollment_secret, cfg.hardware_id, cfg.chip};
    for (size_t i = 0; i < 5; i++) {
        if (!given[i]) usagef("run: %s is required", required[i], NULL);
    }
    if (key_count == 0) usage("run: --key is required (the release public key, release.pub.pem)");
    if (strncmp(cfg.server_url, "http://", 7) != 0) {
        usagef("--server %s: the simulator speaks plain http:// only", cfg.server_url, NULL);
    }
    int known = -1;
    for (size_t i = 0; i < sizeof CHIPS / sizeof CHIPS[0]; i++) {
        if (strcmp(cfg.chip, CHIPS[i].name) == 0) known = CHIPS[i].id;
    }
    if (known < 0 && chip_id < 0) usagef("--chip %s: unknown chip; give its id with --chip-id", cfg.chip, NULL);
    if (known >= 0 && chip_id >= 0 && known != chip_id) {
        char why[200];
        snprintf(why, sizeof why, "--chip %s has chip id %d, but --chip-id says %d", cfg.chip, known, chip_id);
        usage(why);
    }
    cfg.chip_id = (uint16_t)(chip_id >= 0 ? chip_id : known);

    const char *boots = getenv("OTTER_SIM_BOOTS");
    if (boots && atoi(boots) > 20) {
        fprintf(stderr, "sim: more than 20 reboots in one run: a boot loop\n");
        return 4;
    }
    load_slot_size();
    bootloader();
    srandom((unsigned)getpid());
    sim_port(&sim, &port);
    if (no_clock) port.unix_time = no_time;
    cfg.trusted_keys = keys;
    cfg.trusted_key_count = key_count;
    cfg.self_test = self_test;
    cfg.poll_interval_s = 60;
    if (otter_agent_init(&cfg, &port) != 0) usage("the agent refused its configuration (see the line above)");

    for (long poll = 0; poll < max_polls; poll++) {
        uint32_t wait_ms;
        otter_poll_result_t r = otter_agent_poll(&wait_ms);
        otter_running_image_t img;
        port.running_image(port.ctx, &img);
        if (r == OTTER_POLL_IDLE && until && strcmp(img.version, until) == 0) {
            printf("{\"result\":\"done\",\"version\":\"%s\",\"slot\":%u,\"boots\":%s}\n", img.version,
                   sim.running_slot, boots ? boots : "0");
            return 0;
        }
        if (r == OTTER_POLL_IDLE && !until) {
            printf("{\"result\":\"idle\",\"version\":\"%s\",\"slot\":%u}\n", img.version, sim.running_slot);
            return 0;
        }
        if (!sim.quiet) fprintf(stderr, "sim: poll %ld: result %d, next in %u ms\n", poll, (int)r, wait_ms);
        port.sleep_ms(port.ctx, wait_ms);
    }
    otter_running_image_t img;
    port.running_image(port.ctx, &img);
    printf("{\"result\":\"polls exhausted\",\"version\":\"%s\",\"slot\":%u,\"slept_ms\":%llu,\"last_error\":\"",
           img.version, sim.running_slot, (unsigned long long)sim.slept_ms);
    for (const char *c = sim.last_error; *c; c++) { /* JSON-escaped */
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if ((unsigned char)*c >= 0x20) putchar(*c);
    }
    printf("\"}\n");
    if (sim.last_error[0]) fprintf(stderr, "otter-agent-sim: polls exhausted; last error: %s\n", sim.last_error);
    return 3;
}
