/*
 * The smallest useful Otter device: joins Wi-Fi, starts the agent, and tells it whether a fresh
 * image is healthy (here: it got an IP address within 30 seconds).
 */
#include <string.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "nvs_flash.h"

#include "otter_espidf.h"

static const char *TAG = "example";
static EventGroupHandle_t s_net;
#define GOT_IP BIT0

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && (id == WIFI_EVENT_STA_START || id == WIFI_EVENT_STA_DISCONNECTED)) {
        xEventGroupClearBits(s_net, GOT_IP);
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        xEventGroupSetBits(s_net, GOT_IP);
    }
}

static void wifi_start(void)
{
    s_net = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_event, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_event, NULL));
    wifi_config_t sta = {0};
    strncpy((char *)sta.sta.ssid, CONFIG_EXAMPLE_WIFI_SSID, sizeof sta.sta.ssid - 1);
    strncpy((char *)sta.sta.password, CONFIG_EXAMPLE_WIFI_PASSWORD, sizeof sta.sta.password - 1);
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &sta));
    ESP_ERROR_CHECK(esp_wifi_start());
}

/* Runs once, on the first boot of a new image: 0 keeps it, anything else rolls back. Check what
 * your product cannot live without; the network is the minimum, since without it no later
 * update can repair a mistake. */
static int self_test(void *user)
{
    (void)user;
    EventBits_t bits = xEventGroupWaitBits(s_net, GOT_IP, pdFALSE, pdTRUE, pdMS_TO_TICKS(30000));
    return (bits & GOT_IP) ? 0 : -1;
}

static void on_state(void *user, otter_state_t state, const char *reason)
{
    (void)user;
    ESP_LOGI(TAG, "update %s%s%s", otter_state_name(state), reason ? ": " : "", reason ? reason : "");
}

static otter_config_t cfg;

void app_main(void)
{
    esp_err_t err = nvs_flash_init();
    /* ESP-IDF's usual recovery: it erases the default partition "nvs" only, the application's
     * own settings. The Otter agent keeps its identity and security counter in "otter_nvs"
     * (CONFIG_OTTER_NVS_PARTITION), which it initialises itself and never erases. With the
     * agent's state in "nvs" this erase would make the device a stranger to the server (409).
     * See docs/agent.md, "Where the agent keeps its state". */
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);
    wifi_start();

    otter_config_from_kconfig(&cfg);
    cfg.self_test = self_test;
    cfg.on_state = on_state;
    /* Without the agent (its NVS partition unusable, see the log) the application runs on. */
    err = otter_agent_start(&cfg);
    if (err != ESP_OK) ESP_LOGE(TAG, "no updates: otter_agent_start: %s", esp_err_to_name(err));
}
