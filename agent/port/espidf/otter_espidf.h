/*
 * The ESP-IDF port of the Otter agent (ESP-IDF v5.x).
 *
 *   #include "otter_espidf.h"
 *
 *   static otter_config_t cfg;
 *
 *   void app_main(void) {
 *       nvs_flash_init();                 // the default NVS partition (Wi-Fi, the app)
 *       ...connect Wi-Fi, optionally start SNTP...
 *       otter_config_from_kconfig(&cfg);  // server, product, secret, channel, poll, keys
 *       cfg.self_test = my_self_test;     // decides whether a fresh image is healthy
 *       otter_agent_start(&cfg);          // a FreeRTOS task; returns at once
 *   }
 *
 * See docs/agent.md for the whole guide (partitions, rollback, keys, HTTPS).
 */
#ifndef OTTER_ESPIDF_H
#define OTTER_ESPIDF_H

#include "esp_err.h"
#include "otter_agent.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The port table for this device. HTTPS uses the certificate bundle, or `ca_pem` when
 * otter_espidf_set_ca() was called (pin your own root CA for a self-hosted server). */
const otter_port_t *otter_port_espidf(void);

/* Pins the root CA (PEM, NUL-terminated, kept by the caller) instead of the bundle. */
void otter_espidf_set_ca(const char *ca_pem);

/* Fills server URL, product, enrolment secret, channel, chip and poll interval from Kconfig
 * (menuconfig, "Otter OTA agent"), the hardware id from the factory MAC, and the trusted keys
 * from CONFIG_OTTER_TRUSTED_KEYS_FILE when it is set. Hooks stay for the caller to set. */
void otter_config_from_kconfig(otter_config_t *cfg);

/* Starts the agent in its own task (stack and priority from Kconfig): first-boot checks
 * (self-test, confirm or roll back), then update cycles forever. `cfg` must outlive the task.
 * With a dedicated NVS partition (CONFIG_OTTER_NVS_PARTITION, when the partition table has it)
 * it first initialises that partition, never erasing it, and copies the agent's records from
 * the default partition once; call nvs_flash_init() before. When that fails it returns the
 * error and starts nothing. */
esp_err_t otter_agent_start(const otter_config_t *cfg);

#ifdef __cplusplus
}
#endif

#endif /* OTTER_ESPIDF_H */
