/* The update cycle of the core against the in-memory port (fake_port.c) with real crypto and
 * envelopes made by the Rust CLI (vectors.h). Each test is one device's life.
 *
 * Built twice: against the core as shipped, and (test_agent_small_chunks) against a core whose
 * download chunks are 256 bytes, so that the 704-byte test image crosses chunk boundaries. */
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

/* What the bootloader does after the agent activated the spare slot and rebooted. */
static void boot_new_image(void)
{
    F.running_slot ^= 1;
    F.pending_verify = 1;
    F.activated = 0;
    CHECK(otter_agent_init(&C, &P) == 0);
}

/* What the bootloader does after a rollback: the previous image, confirmed. */
static void boot_previous_image(void)
{
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

static void failed_self_test_rolls_back_and_reports(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    self_test_result = -1;
    boot_new_image();
    CHECK(F.rolled_back == 1);
    boot_previous_image();
    CHECK(self_test_runs == 1); /* the old image is not pending: no self-test */
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    const char *r = fake_find_report(&F, "\"rolled_back\"");
    CHECK(r && strstr(r, "self-test failed") && strstr(r, "rel_1"));
    CHECK(strstr(F.last_checkin, "\"version\":\"1.0.0\"") && strstr(F.last_checkin, "\"security_counter\":0"));
    /* Not downloaded again. */
    CHECK(poll(NULL) == OTTER_POLL_IDLE && fake_fresh_downloads(&F) == 1);
}

static void image_that_never_confirms_is_retried_once(void)
{
    /* The new image crashed (or lost power) before the agent ran; the bootloader went back to the
     * old one. That is tried once more, then given up. */
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    CHECK(otter_agent_init(&C, &P) == 0); /* still the old image, not pending */
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    const char *r = fake_find_report(&F, "\"rolled_back\"");
    CHECK(r && strstr(r, "not confirmed") && strstr(r, "tried once more"));
    CHECK(fake_fresh_downloads(&F) == 2);
    CHECK(otter_agent_init(&C, &P) == 0); /* and again */
    CHECK(poll(NULL) == OTTER_POLL_IDLE);
    CHECK(report_count_with("\"rolled_back\"") == 2 && fake_find_report(&F, "not tried again"));
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

static void dropped_download_resumes_with_range(void)
{
    device_with_an_interrupted_download();
    /* The agent restarts (a reboot or a crash) before the next attempt. */
    CHECK(otter_agent_init(&C, &P) == 0);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    /* Resumed from the last whole 64-byte "sector" the fake port kept. */
    CHECK(fake_fresh_downloads(&F) == 1 && fake_requested_range(&F, DROP_AT & ~63u));
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
}

static void server_ignoring_range_is_handled(void)
{
    device_with_an_interrupted_download();
    F.ignore_range = 1;
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    CHECK(memcmp(F.slot[1], VEC_IMAGE, sizeof VEC_IMAGE) == 0);
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
        "{\"update\":{\"release_id\":\"rel_1\",\"envelope\":\"T1RTRQ==\",\"download_url\":\"https://evil.example/x\"}}",
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
    CHECK(otter_agent_init(&C, &P) == 0); /* a reboot in between */
    F.server_down = 0;
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    CHECK(strstr(F.last_enrol, first) != NULL);
}

static void damaged_state_starts_fresh(void)
{
    new_device(NULL, 0);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 1);
    F.state[20] ^= 0x55;
    CHECK(otter_agent_init(&C, &P) == 0);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 2);
    F.state_len = 7; /* a short blob */
    CHECK(otter_agent_init(&C, &P) == 0);
    CHECK(poll(NULL) == OTTER_POLL_IDLE && F.enroll_count == 3);
}

static void outcome_survives_an_unreachable_server(void)
{
    new_device(VEC_ENV_OK, sizeof VEC_ENV_OK);
    CHECK(poll(NULL) == OTTER_POLL_REBOOT);
    F.server_down = 1;
    boot_new_image();
    CHECK(poll(NULL) == OTTER_POLL_RETRY);
    CHECK(otter_agent_init(&C, &P) == 0); /* and a restart */
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

int main(void)
{
    RUN(happy_path_installs_confirms_and_reports);
    RUN(port_with_its_own_image_ids_does_not_loop);
    RUN(failed_self_test_rolls_back_and_reports);
    RUN(image_that_never_confirms_is_retried_once);
    RUN(untrusted_signature_is_refused_once);
    RUN(tampered_image_is_never_activated);
    RUN(dropped_download_resumes_with_range);
    RUN(server_ignoring_range_is_handled);
    RUN(damaged_partial_download_is_not_trusted);
    RUN(downgrade_is_refused);
    RUN(refusals_before_download);
    RUN(expiry_without_a_clock_is_noted_not_refused);
    RUN(server_down_backs_off_with_jitter_and_never_updates);
    RUN(overloaded_server_is_given_the_pause_it_asks_for);
    RUN(run_loop_wakes_up_on_check_now);
    RUN(malformed_answers_change_nothing);
    RUN(revoked_token_enrols_again);
    RUN(enrolment_nonce_is_stored_before_the_first_attempt);
    RUN(damaged_state_starts_fresh);
    RUN(outcome_survives_an_unreachable_server);
    RUN(rate_limited_outcome_waits_the_delay_and_is_sent_later);
    RUN(bad_configuration_is_refused);
    return check_failures != 0;
}
