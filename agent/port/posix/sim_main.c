/*
 * otter-agent-sim: a device on the host. Its flash is a directory (ota_0.bin, ota_1.bin,
 * otadata, agent-state); a reboot re-executes the program, so nothing in RAM survives; a power
 * cut is an immediate _exit at a chosen byte of a download or a flash write, or before the Nth
 * persistent write of any kind (slot, agent state, otadata; counted across reboots).
 *
 *   otter-agent-sim init   --dir D --image fw.bin [--slot-size BYTES]
 *   otter-agent-sim run    --dir D --server URL --product P --secret S --hardware-id H
 *                          --chip esp32c3 --chip-id 5 --key release.pub.pem [--key ...]
 *                          [--channel C] [--until-version V] [--max-polls N]
 *                          [--fail-self-test VERSION] [--cut-flash-at N] [--cut-download-at N]
 *                          [--cut-at-write [slot:|state:|otadata:]N]
 *                          [--time-scale F] [--no-clock] [--quiet]
 *   otter-agent-sim status --dir D
 *
 * Exit codes: 0 done (or `--until-version` reached), 3 polls exhausted, 99 no bootable image
 * (a bricked device), 137 power cut, 2 usage.
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
static const char *fail_version;
static int no_clock;

static void usage(const char *why)
{
    fprintf(stderr, "otter-agent-sim: %s (see the comment at the top of sim_main.c)\n", why);
    exit(2);
}

/* A reboot: start this program again with the same arguments, minus the power-cut options
 * (a cut happens once), with the boot count incremented. */
void sim_reboot(void)
{
    static char *argv2[64];
    int n = 0;
    static char remaining[24];
    for (int i = 0; saved_argv[i] && n < 62; i++) {
        if (strcmp(saved_argv[i], "--cut-flash-at") == 0 || strcmp(saved_argv[i], "--cut-download-at") == 0) {
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
    if (!f) usage("cannot read --image");
    static uint8_t buf[16u << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n == 0 || n > slot_size) usage("the image is empty or larger than --slot-size");
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
    if (sim_check_image(buf, slot_size, version, sha) <= 0) usage("the image is not a valid ESP-IDF app");
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
    if (argc < 2) usage("missing command");
    const char *cmd = argv[1];
    const char *image = NULL, *until = NULL;
    uint32_t slot_size = 1u << 20;
    long max_polls = 50;
    static otter_pubkey_t keys[OTTER_MAX_TRUSTED_KEYS];
    size_t key_count = 0;
    otter_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    sim.cut_flash_at = sim.cut_download_at = sim.cut_write_at = -1;
    sim.sock = -1;
    sim.time_scale = 0.0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-clock") == 0) { no_clock = 1; continue; }
        if (strcmp(a, "--quiet") == 0) { sim.quiet = 1; continue; }
        if (!v) usage("an option lacks its value");
        i++;
        if (strcmp(a, "--dir") == 0) snprintf(sim.dir, sizeof sim.dir, "%s", v);
        else if (strcmp(a, "--image") == 0) image = v;
        else if (strcmp(a, "--slot-size") == 0) slot_size = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--server") == 0) cfg.server_url = v;
        else if (strcmp(a, "--product") == 0) cfg.product = v;
        else if (strcmp(a, "--secret") == 0) cfg.enrollment_secret = v;
        else if (strcmp(a, "--hardware-id") == 0) cfg.hardware_id = v;
        else if (strcmp(a, "--channel") == 0) cfg.channel = v;
        else if (strcmp(a, "--chip") == 0) cfg.chip = v;
        else if (strcmp(a, "--chip-id") == 0) cfg.chip_id = (uint16_t)strtoul(v, NULL, 0);
        else if (strcmp(a, "--key") == 0) {
            if (key_count == OTTER_MAX_TRUSTED_KEYS || read_key(v, &keys[key_count]) != 0) usage("bad --key");
            key_count++;
        } else if (strcmp(a, "--until-version") == 0) until = v;
        else if (strcmp(a, "--max-polls") == 0) max_polls = strtol(v, NULL, 10);
        else if (strcmp(a, "--fail-self-test") == 0) fail_version = v;
        else if (strcmp(a, "--cut-flash-at") == 0) sim.cut_flash_at = strtoll(v, NULL, 10);
        else if (strcmp(a, "--cut-download-at") == 0) sim.cut_download_at = strtoll(v, NULL, 10);
        else if (strcmp(a, "--cut-at-write") == 0) { /* [KIND:]N */
            const char *colon = strchr(v, ':');
            if (colon && (size_t)(colon - v) < sizeof sim.cut_kind) {
                memcpy(sim.cut_kind, v, (size_t)(colon - v));
                v = colon + 1;
            }
            sim.cut_write_at = strtoll(v, NULL, 10);
        }
        else if (strcmp(a, "--time-scale") == 0) sim.time_scale = strtod(v, NULL);
        else usage("unknown option");
    }
    if (!sim.dir[0]) usage("--dir is required");
    if (strcmp(cmd, "init") == 0) {
        if (!image) usage("--image is required");
        return init(image, slot_size);
    }
    if (strcmp(cmd, "status") == 0) {
        print_status();
        return 0;
    }
    if (strcmp(cmd, "run") != 0) usage("unknown command");

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
    if (otter_agent_init(&cfg, &port) != 0) usage("the agent refused its configuration");

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
    printf("{\"result\":\"polls exhausted\",\"version\":\"%s\",\"slot\":%u,\"slept_ms\":%llu}\n",
           img.version, sim.running_slot, (unsigned long long)sim.slept_ms);
    return 3;
}
