/*
 * The ESP-IDF port's state storage with a dedicated NVS partition (CONFIG_OTTER_NVS_PARTITION
 * set to "otter_nvs"), on the host: the port's source is compiled here against the transcribed
 * ESP-IDF declarations (port/espidf/signatures) and a fake NVS with two partitions, "nvs" and
 * "otter_nvs", that keeps its contents across simulated reboots. Only the functions below are
 * called; scripts/check_espidf.sh builds and runs it. What it guards:
 *   - the agent's records move once from the default partition, and a power cut part way loses
 *     none of them;
 *   - records of its own are never overwritten by the default partition's;
 *   - a partition that cannot be initialised is never erased, and the agent does not start;
 *   - without the partition in the table (an OTA image on an old table) the state stays in "nvs";
 *   - a default partition the application has not initialised yet is not taken for empty.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* The port itself, so that a test can reset its per-boot state (a reboot). */
#include "otter_port_espidf.c"

/* Values of ESP-IDF's esp_err.h and nvs.h that only the fake returns. */
#define ESP_ERR_NOT_FOUND 0x105
#define ESP_ERR_NVS_NO_FREE_PAGES (ESP_ERR_NVS_BASE + 0x0d)
#define ESP_ERR_NVS_PART_NOT_FOUND (ESP_ERR_NVS_BASE + 0x0f)

/* ------------------------------------------------------------------------ the fake NVS */

#define MAX_KEYS 8
typedef struct {
    char key[16];
    uint8_t value[1024];
    size_t len;
} blob_t;

typedef struct {
    const char *label;
    int in_table;        /* listed in the partition table */
    int initialised;     /* nvs_flash_init_partition (or the app's nvs_flash_init) succeeded */
    esp_err_t init_err;  /* what nvs_flash_init_partition returns */
    int has_namespace;   /* namespace "otter" exists */
    blob_t blobs[MAX_KEYS];
    int erased;          /* anything ever erased */
} part_t;

static part_t parts[2];
static int sets_before_power_cut = -1; /* nvs_set_blob fails after this many (-1: never) */
static int tasks_created;

static part_t *part(const char *label)
{
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(parts[i].label, label) == 0) return &parts[i];
    }
    return NULL;
}

static blob_t *find(part_t *p, const char *key)
{
    for (size_t i = 0; i < MAX_KEYS; i++) {
        if (p->blobs[i].key[0] && strcmp(p->blobs[i].key, key) == 0) return &p->blobs[i];
    }
    return NULL;
}

static void put(const char *label, const char *key, const void *value, size_t len)
{
    part_t *p = part(label);
    blob_t *b = find(p, key);
    for (size_t i = 0; !b && i < MAX_KEYS; i++) {
        if (!p->blobs[i].key[0]) b = &p->blobs[i];
    }
    snprintf(b->key, sizeof b->key, "%s", key);
    memcpy(b->value, value, len);
    b->len = len;
    p->has_namespace = 1;
}

static int holds(const char *label, const char *key, const void *value, size_t len)
{
    blob_t *b = find(part(label), key);
    return b && b->len == len && memcmp(b->value, value, len) == 0;
}

esp_err_t nvs_flash_init_partition(const char *partition_label)
{
    part_t *p = part(partition_label);
    if (!p || !p->in_table) return ESP_ERR_NOT_FOUND; /* never asked: the port looks first */
    if (p->init_err == ESP_OK) p->initialised = 1;
    return p->init_err;
}

/* The handle is the partition's index + 1, and READWRITE in bit 4. */
esp_err_t nvs_open_from_partition(const char *part_name, const char *namespace_name, nvs_open_mode_t open_mode,
                                  nvs_handle_t *out_handle)
{
    part_t *p = part(part_name);
    if (strcmp(namespace_name, "otter") != 0) return ESP_FAIL;
    if (!p || !p->initialised) return ESP_ERR_NVS_PART_NOT_FOUND;
    if (!p->has_namespace) {
        if (open_mode == NVS_READONLY) return ESP_ERR_NVS_NOT_FOUND;
        p->has_namespace = 1;
    }
    *out_handle = (nvs_handle_t)(p - parts + 1) | (open_mode == NVS_READWRITE ? 16u : 0u);
    return ESP_OK;
}

esp_err_t nvs_open(const char *namespace_name, nvs_open_mode_t open_mode, nvs_handle_t *out_handle)
{
    return nvs_open_from_partition("nvs", namespace_name, open_mode, out_handle);
}

esp_err_t nvs_get_blob(nvs_handle_t handle, const char *key, void *out_value, size_t *length)
{
    blob_t *b = find(&parts[(handle & 15u) - 1], key);
    if (!b) return ESP_ERR_NVS_NOT_FOUND;
    if (!out_value) {
        *length = b->len;
        return ESP_OK;
    }
    if (*length < b->len) return ESP_ERR_NVS_INVALID_LENGTH;
    memcpy(out_value, b->value, b->len);
    *length = b->len;
    return ESP_OK;
}

esp_err_t nvs_set_blob(nvs_handle_t handle, const char *key, const void *value, size_t length)
{
    if (!(handle & 16u) || length > sizeof parts[0].blobs[0].value) return ESP_FAIL;
    if (sets_before_power_cut == 0) return ESP_FAIL;
    if (sets_before_power_cut > 0) sets_before_power_cut--;
    put(parts[(handle & 15u) - 1].label, key, value, length);
    return ESP_OK;
}

esp_err_t nvs_commit(nvs_handle_t handle)
{
    return handle & 16u ? ESP_OK : ESP_FAIL;
}

void nvs_close(nvs_handle_t handle)
{
    (void)handle;
}

/* The port never erases; were it to call an erase, this records it. */
esp_err_t nvs_flash_erase_partition(const char *part_name);
esp_err_t nvs_flash_erase_partition(const char *part_name)
{
    part(part_name)->erased = 1;
    memset(part(part_name)->blobs, 0, sizeof part(part_name)->blobs);
    return ESP_OK;
}

const esp_partition_t *esp_partition_find_first(esp_partition_type_t type, esp_partition_subtype_t subtype,
                                                const char *label)
{
    static esp_partition_t found;
    part_t *p = part(label);
    if (type != ESP_PARTITION_TYPE_DATA || subtype != ESP_PARTITION_SUBTYPE_DATA_NVS || !p || !p->in_table) {
        return NULL;
    }
    return &found;
}

void esp_log_check(const char *tag, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    fprintf(stderr, "   [%s] ", tag);
    vfprintf(stderr, format, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *esp_err_to_name(esp_err_t code)
{
    static char name[16];
    snprintf(name, sizeof name, "0x%x", (unsigned)code);
    return name;
}

BaseType_t xTaskCreate(TaskFunction_t pxTaskCode, const char *const pcName, const uint32_t usStackDepth,
                       void *const pvParameters, UBaseType_t uxPriority, TaskHandle_t *const pxCreatedTask)
{
    (void)pxTaskCode, (void)pcName, (void)usStackDepth, (void)pvParameters, (void)uxPriority, (void)pxCreatedTask;
    tasks_created++;
    return pdPASS;
}

/* ------------------------------------------------------------------------ helpers */

static const uint8_t ID[] = "token-and-nonce", INSTALLED[] = "counter=7", UPDATE[] = "pending";
static const otter_config_t CFG;

/* A fresh device: both partitions in the table, the app's "nvs" initialised by nvs_flash_init. */
static void flash_new(void)
{
    memset(parts, 0, sizeof parts);
    parts[0].label = "nvs";
    parts[1].label = "otter_nvs";
    parts[0].in_table = parts[1].in_table = 1;
    parts[0].initialised = 1;
    sets_before_power_cut = -1;
    tasks_created = 0;
    memset(&P, 0, sizeof P);
}

/* A reboot: RAM is gone, flash stays; the app initialises "nvs" again. */
static void reboot_device(void)
{
    memset(&P, 0, sizeof P);
    parts[0].initialised = parts[0].in_table;
    parts[1].initialised = 0;
    sets_before_power_cut = -1;
}

static void agent_of_the_default_partition(void)
{
    put("nvs", "id", ID, sizeof ID);
    put("nvs", "installed", INSTALLED, sizeof INSTALLED);
    put("nvs", "update", UPDATE, sizeof UPDATE);
}

/* ------------------------------------------------------------------------ tests */

static void records_move_once_from_the_default_partition(void)
{
    flash_new();
    agent_of_the_default_partition();
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(tasks_created == 1);
    CHECK(holds("otter_nvs", "id", ID, sizeof ID));
    CHECK(holds("otter_nvs", "installed", INSTALLED, sizeof INSTALLED));
    CHECK(holds("otter_nvs", "update", UPDATE, sizeof UPDATE));
    CHECK(find(part("otter_nvs"), "moved") != NULL);
    CHECK(holds("nvs", "id", ID, sizeof ID)); /* the default partition's copy stays */

    /* The core reads them through the port. */
    uint8_t buf[64];
    CHECK(otter_port_espidf()->state_load(NULL, "installed", buf, sizeof buf) == (int)sizeof INSTALLED);
    CHECK(memcmp(buf, INSTALLED, sizeof INSTALLED) == 0);

    /* The application erases its "nvs"; the agent's state is untouched. */
    memset(part("nvs")->blobs, 0, sizeof part("nvs")->blobs);
    part("nvs")->has_namespace = 0;
    reboot_device();
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(otter_port_espidf()->state_load(NULL, "id", buf, sizeof buf) == (int)sizeof ID);
    CHECK(memcmp(buf, ID, sizeof ID) == 0);

    /* Once moved, never again: older records later found in "nvs" are not taken. */
    static const uint8_t OLD[] = "counter=1";
    put("nvs", "installed", OLD, sizeof OLD);
    put("otter_nvs", "update", UPDATE, sizeof UPDATE);
    blob_t *lost = find(part("otter_nvs"), "installed"); /* say, lost */
    if (lost) memset(lost, 0, sizeof *lost);
    reboot_device();
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(find(part("otter_nvs"), "installed") == NULL);
    CHECK(part("nvs")->erased == 0 && part("otter_nvs")->erased == 0);
}

static void a_power_cut_while_moving_loses_no_record(void)
{
    flash_new();
    agent_of_the_default_partition();
    sets_before_power_cut = 1; /* "id" is copied, then the power goes */
    CHECK(otter_agent_start(&CFG) != ESP_OK);
    CHECK(tasks_created == 0);
    CHECK(holds("otter_nvs", "id", ID, sizeof ID));
    CHECK(find(part("otter_nvs"), "moved") == NULL);

    reboot_device();
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(holds("otter_nvs", "id", ID, sizeof ID));
    CHECK(holds("otter_nvs", "installed", INSTALLED, sizeof INSTALLED));
    CHECK(holds("otter_nvs", "update", UPDATE, sizeof UPDATE));
    CHECK(find(part("otter_nvs"), "moved") != NULL);
}

static void records_of_its_own_are_not_overwritten(void)
{
    static const uint8_t MINE[] = "counter=9";
    flash_new();
    agent_of_the_default_partition();
    put("otter_nvs", "installed", MINE, sizeof MINE);
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(holds("otter_nvs", "installed", MINE, sizeof MINE));
    CHECK(holds("otter_nvs", "id", ID, sizeof ID)); /* the ones it lacked are copied */
}

static void a_new_device_starts_with_nothing_to_move(void)
{
    flash_new();
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(find(part("otter_nvs"), "moved") != NULL);
    uint8_t buf[64];
    CHECK(otter_port_espidf()->state_load(NULL, "id", buf, sizeof buf) == 0);
    CHECK(otter_port_espidf()->state_save(NULL, "id", ID, sizeof ID) == 0);
    CHECK(holds("otter_nvs", "id", ID, sizeof ID));
    CHECK(find(part("nvs"), "id") == NULL);
}

static void an_unusable_partition_is_not_erased_and_the_agent_stays_stopped(void)
{
    static const esp_err_t errors[] = {ESP_ERR_NVS_NO_FREE_PAGES, ESP_ERR_NVS_BASE + 0x10 /* NEW_VERSION_FOUND */};
    for (size_t i = 0; i < 2; i++) {
        flash_new();
        put("otter_nvs", "installed", INSTALLED, sizeof INSTALLED);
        part("otter_nvs")->init_err = errors[i];
        CHECK(otter_agent_start(&CFG) == errors[i]);
        CHECK(tasks_created == 0);
        uint8_t buf[64];
        CHECK(otter_port_espidf()->state_load(NULL, "installed", buf, sizeof buf) < 0);
        CHECK(otter_port_espidf()->state_save(NULL, "installed", "x", 1) < 0);
        CHECK(part("otter_nvs")->erased == 0);
        CHECK(holds("otter_nvs", "installed", INSTALLED, sizeof INSTALLED));
    }
}

/* An image built for the new partition table, installed by OTA on a device with the old one. */
static void without_the_partition_in_the_table_the_state_stays_in_the_default_one(void)
{
    flash_new();
    agent_of_the_default_partition();
    part("otter_nvs")->in_table = 0;
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(tasks_created == 1);
    uint8_t buf[64];
    CHECK(otter_port_espidf()->state_load(NULL, "id", buf, sizeof buf) == (int)sizeof ID);
    CHECK(memcmp(buf, ID, sizeof ID) == 0);
    CHECK(otter_port_espidf()->state_save(NULL, "update", "x", 1) == 0);
    CHECK(holds("nvs", "update", "x", 1));
    CHECK(find(part("otter_nvs"), "id") == NULL);
}

static void an_uninitialised_default_partition_is_not_taken_for_empty(void)
{
    flash_new();
    agent_of_the_default_partition();
    part("nvs")->initialised = 0; /* the app starts the agent before nvs_flash_init() */
    CHECK(otter_agent_start(&CFG) != ESP_OK);
    CHECK(tasks_created == 0);
    CHECK(find(part("otter_nvs"), "moved") == NULL);

    reboot_device(); /* initialises "nvs" this time */
    CHECK(otter_agent_start(&CFG) == ESP_OK);
    CHECK(holds("otter_nvs", "id", ID, sizeof ID));

    /* No default partition in the table: nothing to move, the agent starts. */
    flash_new();
    part("nvs")->in_table = part("nvs")->initialised = 0;
    CHECK(otter_agent_start(&CFG) == ESP_OK);
}

int main(void)
{
    if (strcmp(CONFIG_OTTER_NVS_PARTITION, "otter_nvs") != 0) {
        fprintf(stderr, "test_espidf_nvs: build it with CONFIG_OTTER_NVS_PARTITION=\"otter_nvs\"\n");
        return 2;
    }
    RUN(records_move_once_from_the_default_partition);
    RUN(a_power_cut_while_moving_loses_no_record);
    RUN(records_of_its_own_are_not_overwritten);
    RUN(a_new_device_starts_with_nothing_to_move);
    RUN(an_unusable_partition_is_not_erased_and_the_agent_stays_stopped);
    RUN(an_uninitialised_default_partition_is_not_taken_for_empty);
    RUN(without_the_partition_in_the_table_the_state_stays_in_the_default_one);
    return check_failures ? 1 : 0;
}
