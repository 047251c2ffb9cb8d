/* A minimal test harness: CHECK records a failure with its line and goes on; main returns the
 * failure count so that CTest sees it. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
            check_failures++;                                                         \
        }                                                                             \
    } while (0)

#define RUN(test)                                  \
    do {                                           \
        int before_ = check_failures;              \
        test();                                    \
        fprintf(stderr, "%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #test); \
    } while (0)

#endif
