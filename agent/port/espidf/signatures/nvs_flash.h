#include "esp_idf_v5_api.h" /* NOT ESP-IDF: see esp_idf_v5_api.h */
