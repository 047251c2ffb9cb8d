/* The update cycle of the core against the in-memory port (fake_port.c) with real crypto and
 * envelopes made by the Rust CLI (vectors.h). Each test is one device's life.
 *
 * Built twice: against the core as shipped, and (test_agent_small_chunks) against a core whose
 * download chunks are 256 bytes, so that the 704-byte test image crosses chunk boundaries. */
#include <stddef.h>
#include <string.h>

#include "check.h"
#include "fake_port.h"
#include "otter_internal.h"
#include "vectors.h"

#ifdef OTTER_TEST_SMALL_CHUNKS
#define DROP_AT 100u /* inside the first 256-byte chunk */
#else
#define DROP_AT 300u
#endif

static fake_t F;
static otter_port_t P;
static otter_config_t C;
static otter_pubkey_t KEY_A;
static int self_test_result;
static int self_test_runs;

static int self_test(void *user)
{
    (void)user;
    self_test_runs++;
    return self_test_result;
}

/* A device running VEC_BASE_IMAGE (1.0.0) from slot 0, never enrolled; a server offering
 * `env` for VEC_IMAGE (2.0.0). */
static void new_device(const uint8_t *env, size_t env_len)
{
    fake_init(&F, &P);
    fake_put_image(&F, 0, VEC_BASE_IMAGE, sizeof VEC_BASE_IMAGE);
    F.envelope = env;
    F.envelope_len = env_len;
    F.image = VEC_IMAGE;
    F.image_len = sizeof VEC_IMAGE;
    F.now = 1700000000u;
    otter_pubkey_from_pem(VEC_KEY_A_PEM, strlen(VEC_KEY_A_PEM), &KEY_A);
    memset(&C, 0, sizeof C);
    C.server_url = "http://otter.test";
    C.product = "thermo";
    C.enrollment_secret = "ote_secret";
    C.hardware_id = "aa:bb";
    C.chip = "esp32c3";
    C.chip_id = 5;
    C.trusted_keys = &KEY_A;
    C.trusted_key_count = 1;
    C.self_test = self_test;
    self_test_result = 0;
    self_test_runs = 0;
    CHECK(otter_agent_init(&C, &P) == 0);
}

/* A restart of the same image (a reboot, a crash): RAM is lost. */
static void restart(void)
{
    fake_power_off(&F);
    CHECK(otter_agent_init(&C, &P) == 0);
}

/* What the bootloader does after the agent activated the spare slot and rebooted. */
static void boot_new_image(void)
{
    fake_power_off(&F);
    F.running_slot ^= 1;
    F.pending_verify = 1;
    F.activated = 0;
    CHECK(otter_agent_init(&C, &P) == 0);
}

/* What the bootloader does after a rollback: the previous image, confirmed. */
static void boot_previous_image(void)
{
    fake_power_off(&F);
    F.running_slot ^= 1;
    F.pending_verify = 0;
    CHECK(otter_agent_init(&C, &P) == 0);
}

static otter_poll_result_t poll(uint32_t *wait)
{
    uint32_t w;
    return otter_agent_poll(wait ? wait : &w);
}

static int report_count_with(const char *needle)
{
    int n = 0;
    for (int i = 0; i < F.report_count; i++) n += strstr(F.reports[i], needle) != NULL;
    return n;
}

static void happy_path_installs_confirms_and_reports(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    CHECK(F.enroll_count == 1 && fake_fresh_downloads(&F) == 1);
    CHECK(strstr(F.last_checkin, "\"version\":\"1.0.0\"") && strstr(F.last_checkin, "\"security_counter\":0"));
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
    CHECK(F.activated == 1 && F.reboots == 1);
    const char *order[] = {"\"downloading\"", "\"downloaded\"", "\"installing\"", "\"rebooting\""};
    int at = 0; /* each state reported, in this order (progress reports in between) */
    for (int i = 0; i < 4; i++) {
        while (at < F.report_count && !strstr(F.reports[at], order[i])) at++;
        CHECK(at < F.report_count);
    }

    boot_new_image();
    CHECK(self_test_runs == 1 && F.pending_verify == 0); /* confirmed */
    uint32_t wait;
    CHECK(poll(&wait) == OTTER_POLL_IDLE);
    CHECK(fake_find_report(&F, "\"success\"") && strstr(fake_find_report(&F, "\"success\""), "rel_1"));
    CHECK(strstr(F.last_checkin, "\"version\":\"2.0.0\"") && strstr(F.last_checkin, "\"security_counter\":3"));
    CHECK(wait == 600000u); /* the server's poll interval */
    /* The release it runs is offered again: nothing is downloaded. */
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 1 && report_count_with("\"success\"") == 1);
}

static void port_with_its_own_image_ids_does_not_loop(void)
{
    /* ESP-IDF identifies the running image by the hash the bootloader checks, which is not the
     * manifest's when a signature sector follows the image. The update must still be recognised
     * as confirmed, and not be installed again. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.own_image_ids = 1;
    CHECK(otter_agent_init(&C, &P) == 0);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    boot_new_image();
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(fake_find_report(&F, "\"success\"") && !fake_find_report(&F, "\"rolled_back\""));
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 1);
    /* The check-in names the image by its manifest hash. */
    otter_envelope_t env;
    CHECK(otter_envelope_parse(VEC_ENV_OK, sizeof VEC_ENV_OK, &env) == 0);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", env.image_sha256[i]);
    CHECK(strstr(F.last_checkin, hex) != NULL);
}

/* A device whose update to rel_1 failed its self-test on the first boot and rolled back. */
static void device_after_a_failed_self_test(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    self_test_result = -1;
    boot_new_image();
    CHECK(F.rolled_back == 1);
    boot_previous_image();
    CHECK(self_test_runs == 1); /* the old image is not pending: no self-test */
}

static void failed_self_test_is_retried_once_after_the_old_image_is_back(void)
{
    /* A self-test that failed for a passing reason (the network was down during the first boot)
     * must not blacklist a good release: once the old image reaches the server again, the release
     * is installed once more, and this time it passes. */
    device_after_a_failed_self_test();
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    const char *r = fake_find_report(&F, "\"rolled_back\"");
    CHECK(r && strstr(r, "self-test failed") && strstr(r, "one more try") && strstr(r, "rel_1"));
    CHECK(strstr(F.last_checkin, "\"version\":\"1.0.0\"") && strstr(F.last_checkin, "\"security_counter\":0"));
    CHECK(fake_fresh_downloads(&F) == 2);
    self_test_result = 0;
    boot_new_image();
    CHECK(F.pending_verify == 0 && F.rolled_back == 1); /* confirmed */
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(report_count_with("\"success\"") == 1 && strstr(F.last_checkin, "\"version\":\"2.0.0\""));
}

static void failed_self_test_twice_gives_the_release_up(void)
{
    device_after_a_failed_self_test();
    CHECK(poll(NULL) == OTTER_POLL_REBOOT); /* the one retry */
    boot_new_image();                       /* fails again */
    CHECK(F.rolled_back == 2);
    boot_previous_image();
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(report_count_with("\"rolled_back\"") == 2 && fake_find_report(&F, "again; given up"));
    /* Not downloaded again. */
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 2);
}

static void image_that_never_confirms_is_retried_once(void)
{
    /* The new image crashed (or lost power) before the agent ran; the bootloader went back to the
     * old one. That is tried once more, then given up. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    restart(); /* still the old image, not pending */
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    const char *r = fake_find_report(&F, "\"rolled_back\"");
    CHECK(r && strstr(r, "not confirmed") && strstr(r, "one more try"));
    CHECK(fake_fresh_downloads(&F) == 2);
    restart(); /* and again */
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(report_count_with("\"rolled_back\"") == 2 && fake_find_report(&F, "given up"));
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 2);
}

static void untrusted_signature_is_refused_once(void)
{
    new_device(VEC_ENV_UNTRUSTED, sizeof VEC_ENV_UNTRUSTED);
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(F.download_count == 0 && F.activated == 0);
    const char *r = fake_find_report(&F, "\"refused\"");
    CHECK(r && strstr(r, "no trusted key"));
    int before = F.report_count;
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.report_count == before);
}

static void tampered_image_is_never_activated(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.tamper_at = 100;
    for (int i = 0; i < 3; i++) CHECK(poll(NULL) == OTTER_POLL_RETRY);
    CHECK(fake_fresh_downloads(&F) == 3 && F.activated == 0 && F.reboots == 0);
    CHECK(report_count_with("hash mismatch") == 3);
    /* Given up on after three attempts. */
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 3);
}

/* A device whose first download the network cut after DROP_AT bytes. */
static void device_with_an_interrupted_download(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.drop_after = DROP_AT;
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    F.drop_after = 0;
}

/* Every hash the core begins it ends, also when it gives a download up: on the classic ESP32 a
 * context left live keeps the hardware SHA engine locked (issue 8, item 25). */
static void abandoned_download_frees_its_hash(void)
{
    device_with_an_interrupted_download();
    CHECK(!F.sha.live && F.sha.begun_live == 0);
    /* A server that ignores the Range of the resumed attempt makes the core restart its hash. */
    device_with_an_interrupted_download();
    F.ignore_range = 1;
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    CHECK(!F.sha.live && F.sha.begun_live == 0);
}

static void dropped_download_resumes_with_range(void)
{
    device_with_an_interrupted_download();
    /* The agent restarts (a reboot or a crash) before the next attempt. */
    restart();
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    /* Resumed from the last whole 64-byte "sector" the fake port kept. */
    CHECK(fake_fresh_downloads(&F) == 1 && fake_requested_range(&F, DROP_AT & ~63u));
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
}

static void same_boot_resume_under_flash_encryption_hashes_only_what_is_on_flash(void)
{
    /* With flash encryption the write session keeps a partial 16-byte block in RAM. A download
     * resumed in the same boot must go on from bytes that are on flash, or the hash of the kept
     * bytes is wrong and a good release ends up refused. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.encrypted = 1;
    F.drop_after = DROP_AT; /* not a multiple of 16 */
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    F.drop_after = 0;
    CHECK(poll(NULL) == OTTER_POLL_REBOOT); /* the same boot: the session is still open */
    CHECK(!fake_find_report(&F, "hash mismatch") && F.bad_writes == 0);
    CHECK(fake_fresh_downloads(&F) == 1 && fake_requested_range(&F, DROP_AT & ~15u));
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
}

static void server_ignoring_range_restarts_the_write_session(void)
{
    /* A proxy that ignores Range answers 200 with the whole image: the slot is written again from
     * its first byte in a new write session, never out of order (esp_ota_write is sequential). */
    for (int reboot = 0; reboot < 2; reboot++) {
        device_with_an_interrupted_download();
        if (reboot) restart();
        F.ignore_range = 1;
        CHECK(poll(NULL) == OTTER_POLL_REBOOT);
        CHECK(F.bad_writes == 0 && !fake_find_report(&F, "flash write failed"));
        CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
    }
}

static void damaged_partial_download_is_not_trusted(void)
{
    /* A resumed download whose kept bytes changed (flash corruption) ends in a hash mismatch,
     * never in an activation, and the next attempt starts over. */
    device_with_an_interrupted_download();
    F.slot[1][10] ^= 1;
    CHECK(poll(NULL) == OTTER_POLL_RETRY && F.activated == 0);
    CHECK(fake_find_report(&F, "hash mismatch") != NULL);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT && fake_fresh_downloads(&F) == 2);
}

static void downgrade_is_refused(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    boot_new_image();
    CHECK(poll(NULL) == OTTER_POLL_IDLE); /* success reported; counter 3 stored */
    F.envelope = VEC_ENV_LOW;             /* 1.0.0 signed with counter 1 */
    F.envelope_len = sizeof VEC_ENV_LOW;
    F.image = VEC_BASE_IMAGE;
    F.image_len = sizeof VEC_BASE_IMAGE;
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    const char *r = fake_find_report(&F, "\"refused\"");
    CHECK(r && strstr(r, "downgrade: counter 1 < 3"));
    CHECK(fake_fresh_downloads(&F) == 1);
}

static void refusals_before_download(void)
{
    struct {
        const char *what;
        const uint8_t *env;
        size_t len;
        uint16_t chip;
        const char *product;
        uint64_t now;
        uint32_t slot_cap;
    } cases[] = {
        {"chip: the manifest is for chip id 5, this device is 9", VEC_ENV_OK, sizeof VEC_ENV_OK, 9, "thermo", 1700000000u, FAKE_SLOT},
        {"product: another product", VEC_ENV_OK, sizeof VEC_ENV_OK, 5, "boiler", 1700000000u, FAKE_SLOT},
        {"expired", VEC_ENV_EXPIRED, sizeof VEC_ENV_EXPIRED, 5, "thermo", 4000000000u, FAKE_SLOT},
        {"oversize: image of 704 bytes, update slot holds 512", VEC_ENV_OK, sizeof VEC_ENV_OK, 5, "thermo", 1700000000u, 512},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        new_device(cases[i].env, cases[i].len);
        C.chip_id = cases[i].chip;
        C.product = cases[i].product;
        F.now = cases[i].now;
        F.slot_cap = cases[i].slot_cap;
        CHECK(otter_agent_init(&C, &P) == 0);
        CHECK(poll(NULL) == OTTER_POLL_IDLE);
        const char *r = fake_find_report(&F, "\"refused\"");
        if (!r || !strstr(r, cases[i].what)) fprintf(stderr, "  case %zu: %s\n", i, r ? r : "(no report)");
        CHECK(r && strstr(r, cases[i].what));
        CHECK(F.download_count == 0 && F.activated == 0);
    }
}

static void expiry_without_a_clock_is_noted_not_refused(void)
{
    new_device(VEC_ENV_EXPIRED, sizeof VEC_ENV_EXPIRED);
    F.now = 0;
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    const char *r = fake_find_report(&F, "\"downloading\"");
    CHECK(r && strstr(r, "no trusted clock"));
}

static void server_down_backs_off_with_jitter_and_never_updates(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.server_down = 1;
    uint32_t expect = 5000, wait = 0;
    for (int i = 0; i < 12; i++) {
        CHECK(poll(&wait) == OTTER_POLL_RETRY);
        CHECK(wait >= expect - expect / 4 && wait <= expect + expect / 4);
        expect = expect * 2 > 900000u ? 900000u : expect * 2;
    }
    CHECK(F.activated == 0 && F.reboots == 0);
    F.server_down = 0;
    F.envelope = NULL;
    CHECK(poll(&wait) == OTTER_POLL_IDLE && wait == 600000u);
    /* Back to the shortest backoff after a success. */
    F.server_down = 1;
    CHECK(poll(&wait) == OTTER_POLL_RETRY && wait <= 5000u + 1250u);
}

static void overloaded_server_is_given_the_pause_it_asks_for(void)
{
    new_device(NULL, 0);
    F.busy = 1;
    F.retry_after = 120;
    uint32_t wait;
    CHECK(poll(&wait) == OTTER_POLL_RETRY && wait == 120000u); /* more than the 5 s backoff */
    CHECK(poll(&wait) == OTTER_POLL_IDLE && F.enroll_count == 1);
    F.busy = 1;
    F.retry_after = 999999; /* capped at an hour */
    CHECK(poll(&wait) == OTTER_POLL_RETRY && wait == 3600000u);
    F.busy = 1;
    F.retry_after = 1; /* never shorter than the agent's own backoff */
    CHECK(poll(&wait) == OTTER_POLL_RETRY && wait >= 3750u);
}

static void offer_update_and_check_now(void)
{
    F.envelope = VEC_ENV_OK;
    F.envelope_len = sizeof VEC_ENV_OK;
    otter_agent_check_now();
}

static void run_loop_wakes_up_on_check_now(void)
{
    /* Nothing to do at first (the server says: poll in 600 s). During the first second of the
     * wait, the application asks for a check now and an update appears: the loop installs it and
     * returns for the reboot, without sleeping out the 600 s. */
    new_device(NULL, 0);
    F.on_sleep = offer_update_and_check_now;
    otter_agent_run();
    CHECK(F.reboots == 1 && F.activated == 1);
    CHECK(F.slept_ms == 1000u);
}

static void malformed_answers_change_nothing(void)
{
    static const char *answers[] = {
        "", "{", "not json", "{\"update\":{\"release_id\":5}}",
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"!!!!\",\"download_url\":\"/device/v1/releases/rel_1/image\"}}",
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"T1RTRQ==\",\"download_url\":\"/device/v1/releases/rel_1/image\"}}",
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"T1RTRQ==\",\"download_url\":\"//evil.example/x\"}}",
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"T1RTRQ==\",\"download_url\":\"ftp://evil.example/x\"}}",
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"T1RTRQ==\"}}",
        "{\"update\":{\"release_id\":\"\",\"envelope\":\"T1RTRQ==\",\"download_url\":\"/device/v1/x\"}}",
        "{\"poll_interval_s\":1}",
    };
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
        F.checkin_override = answers[i];
        uint32_t wait;
        otter_poll_result_t r = poll(&wait);
        CHECK(r == OTTER_POLL_IDLE || r == OTTER_POLL_RETRY);
        CHECK(F.download_count == 0 && F.activated == 0);
        CHECK(wait >= 3750u); /* a poll interval of 1 s is not obeyed */
    }
}

static void absolute_download_url_is_fetched_without_the_device_token(void)
{
    /* `[downloads] redirect` set to a CDN: the check-in says how long a URL the agent follows,
     * the image comes from the CDN, is verified as ever, and the device token stays home. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.download_url = "http://cdn.test/fw/images/0123456789abcdef";
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    CHECK(strstr(F.last_checkin, "\"download_url_max\":199"));
    CHECK(F.cdn_requests >= 1 && F.cdn_bearer == 0);
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0 && F.activated == 1);
    CHECK(fake_find_report(&F, "\"rebooting\""));
    /* Bytes from the CDN that do not match the signed hash are never activated. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    F.download_url = "http://cdn.test/fw/images/0123456789abcdef";
    F.tamper_at = 100;
    CHECK(poll(NULL) == OTTER_POLL_RETRY && F.activated == 0 && F.cdn_bearer == 0);
}

static void revoked_token_enrols_again(void)
{
    new_device(NULL, 0);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    F.reject_token = 1;
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 2);
}

static void enrolment_nonce_is_stored_before_the_first_attempt(void)
{
    /* The answer to an enrolment can be lost; the repeat must carry the same nonce, so the nonce
     * is stored before the first request goes out. */
    new_device(NULL, 0);
    F.server_down = 1;
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    const char *n = strstr(F.last_enrol, "\"enrollment_nonce\":\"");
    CHECK(n != NULL);
    char first[33] = "";
    if (n) memcpy(first, n + 20, 32);
    CHECK(strspn(first, "0123456789abcdef") == 32);
    restart(); /* a reboot in between */
    F.server_down = 0;
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    CHECK(strstr(F.last_enrol, first) != NULL);
}

/* Damages the stored record `key` (a flipped bit, or a record of another layout). */
static void damage_record(const char *key)
{
    uint8_t *r = fake_record(&F, key, NULL);
    CHECK(r != NULL);
    if (r) r[5] ^= 0x55;
}

static void damaged_update_record_keeps_identity_and_counter(void)
{
    /* The device runs release rel_1 (counter 3). Its update record is damaged: it must keep its
     * token (a second enrolment without the right nonce is refused with 409 for good, as otterd
     * does) and its security counter (a downgrade stays refused). */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    boot_new_image();
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    damage_record("update");
    restart();
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    CHECK(strstr(F.last_checkin, "\"security_counter\":3") != NULL);
    F.envelope = VEC_ENV_LOW; /* 1.0.0 signed with counter 1 */
    F.envelope_len = sizeof VEC_ENV_LOW;
    F.image = VEC_BASE_IMAGE;
    F.image_len = sizeof VEC_BASE_IMAGE;
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(fake_find_report(&F, "downgrade: counter 1 < 3") != NULL);
    /* A short or foreign blob in place of a record is no different. */
    size_t *len;
    CHECK(fake_record(&F, "update", &len) != NULL);
    *len = 7;
    restart();
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
}

static void damaged_identity_enrols_again_and_is_refused(void)
{
    /* Without its nonce the device cannot prove it is the one that enrolled: otterd (and the fake)
     * answer 409, and the agent reports and retries rather than pretending to work. */
    new_device(NULL, 0);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    damage_record("id");
    restart();
    CHECK(poll(NULL) == OTTER_POLL_RETRY && F.enroll_count == 1);
}

/* The stored state of agents before records (layout 2): one blob, "state". */
typedef struct {
    uint32_t magic, version, security_counter, flags, dl_size, dl_offset, dl_attempts, pend_counter;
    uint8_t dl_sha256[32], pend_sha256[32], pend_from[32], installed_sha256[32], installed_port[32];
    char device_token[96], enrol_nonce[33], dl_release_id[48], pend_release_id[48], bad_release_id[48],
        unconfirmed_release_id[48];
    uint32_t unconfirmed_count;
    char out_release_id[48], out_state[16], out_reason[128];
    uint32_t crc;
} layout2_t;

static void layout_2_state_is_migrated(void)
{
    /* A device updates from an agent with layout 2 to this one: the first boot of the new image
     * keeps the device's identity and counter, and reports the activation that brought it. */
    static const char nonce[] = "00112233445566778899aabbccddeeff";
    new_device(NULL, 0);
    F.records[0].key[0] = '\0'; /* a clean slate: nothing but the old blob */
    F.records[1].key[0] = F.records[2].key[0] = F.records[3].key[0] = '\0';
    layout2_t old;
    memset(&old, 0, sizeof old);
    old.magic = 0x5453544fu;
    old.version = 2;
    old.security_counter = 2;
    old.flags = 1; /* an activation pending ... */
    old.pend_counter = 3;
    memset(old.pend_from, 0xAB, 32); /* ... from an image that is not the one running */
    snprintf(old.pend_release_id, sizeof old.pend_release_id, "rel_1");
    snprintf(old.device_token, sizeof old.device_token, "otd_test");
    memcpy(old.enrol_nonce, nonce, 33);
    old.crc = otter_crc32((const uint8_t *)&old, offsetof(layout2_t, crc));
    CHECK(sizeof old == 716);
    snprintf(F.records[0].key, sizeof F.records[0].key, "state");
    memcpy(F.records[0].data, &old, sizeof old);
    F.records[0].len = sizeof old;
    memcpy(F.enrolled_nonce, nonce, 33); /* the server knows this device */
    F.pending_verify = 1;
    restart();
    CHECK(F.pending_verify == 0); /* confirmed */
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 0);
    const char *r = fake_find_report(&F, "\"success\"");
    CHECK(r && strstr(r, "rel_1"));
    CHECK(strstr(F.last_checkin, "\"security_counter\":3") != NULL);
    /* Migrated once: the records are what is read from now on. */
    restart();
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 0 && report_count_with("\"success\"") == 1);
}

static void outcome_survives_an_unreachable_server(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    F.server_down = 1;
    boot_new_image();
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    restart(); /* and a restart */
    F.server_down = 0;
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(report_count_with("\"success\"") == 1);
}

/* otterd limits status reports per device (429 + Retry-After): an update's outcome refused that
 * way is kept, the agent waits the server's delay, and sends it at the next poll. */
static void rate_limited_outcome_waits_the_delay_and_is_sent_later(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    boot_new_image();
    F.busy = 1;
    F.retry_after = 30;
    uint32_t wait;
    CHECK(poll(&wait) == OTTER_POLL_RETRY && wait == 30000u);
    CHECK(report_count_with("\"success\"") == 0);
    CHECK(poll(&wait) == OTTER_POLL_IDLE && report_count_with("\"success\"") == 1);
}

static void bad_configuration_is_refused(void)
{
    new_device(NULL, 0);
    otter_config_t bad = C;
    bad.trusted_key_count = 0;
    CHECK(otter_agent_init(&bad, &P) != 0);
    uint32_t wait;
    CHECK(otter_agent_poll(&wait) == OTTER_POLL_BAD_CONFIG);
    bad = C;
    bad.server_url = NULL;
    CHECK(otter_agent_init(&bad, &P) != 0);
    CHECK(otter_agent_init(NULL, &P) != 0);
}

/* An empty enrolment secret can never enrol: refused at init, not retried for ever (issue 8,
 * item 27). */
static void empty_enrolment_secret_is_refused_at_init(void)
{
    new_device(NULL, 0);
    otter_config_t bad = C;
    bad.enrollment_secret = "";
    CHECK(otter_agent_init(&bad, &P) != 0);
    uint32_t wait;
    CHECK(otter_agent_poll(&wait) == OTTER_POLL_BAD_CONFIG && F.enroll_count == 0);
}

/* A new image that passed its self-test but could not be confirmed (the platform refused) stays
 * pending, goes back at the next reboot, and blocks further updates until then: the server hears
 * a failure, never a success (issue 8, item 27). */
static void failed_confirm_is_reported_as_a_failure(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    F.confirm_fails = 1;
    boot_new_image();
    CHECK(F.pending_verify == 1);
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    const char *r = fake_find_report(&F, "cannot confirm the image");
    CHECK(r && strstr(r, "\"failure\"") && strstr(r, "rel_1"));
    CHECK(fake_find_report(&F, "\"success\"") == NULL);
    CHECK(strstr(F.last_checkin, "\"security_counter\":0") != NULL);
}

int main(void)
{
    RUN(happy_path_installs_confirms_and_reports);
    RUN(port_with_its_own_image_ids_does_not_loop);
    RUN(failed_self_test_is_retried_once_after_the_old_image_is_back);
    RUN(failed_self_test_twice_gives_the_release_up);
    RUN(image_that_never_confirms_is_retried_once);
    RUN(untrusted_signature_is_refused_once);
    RUN(tampered_image_is_never_activated);
    RUN(abandoned_download_frees_its_hash);
    RUN(dropped_download_resumes_with_range);
    RUN(same_boot_resume_under_flash_encryption_hashes_only_what_is_on_flash);
    RUN(server_ignoring_range_restarts_the_write_session);
    RUN(damaged_partial_download_is_not_trusted);
    RUN(downgrade_is_refused);
    RUN(refusals_before_download);
    RUN(expiry_without_a_clock_is_noted_not_refused);
    RUN(server_down_backs_off_with_jitter_and_never_updates);
    RUN(overloaded_server_is_given_the_pause_it_asks_for);
    RUN(run_loop_wakes_up_on_check_now);
    RUN(malformed_answers_change_nothing);
    RUN(absolute_download_url_is_fetched_without_the_device_token);
    RUN(revoked_token_enrols_again);
    RUN(enrolment_nonce_is_stored_before_the_first_attempt);
    RUN(damaged_update_record_keeps_identity_and_counter);
    RUN(damaged_identity_enrols_again_and_is_refused);
    RUN(layout_2_state_is_migrated);
    RUN(outcome_survives_an_unreachable_server);
    RUN(rate_limited_outcome_waits_the_delay_and_is_sent_later);
    RUN(bad_configuration_is_refused);
    RUN(empty_enrolment_secret_is_refused_at_init);
    RUN(failed_confirm_is_reported_as_a_failure);
    return check_failures != 0;
}
