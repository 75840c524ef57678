/* A minimal test harness for the C tests: CHECK records a pass or a
 * failure (with a message), check_summary prints "N passed, M failed" and
 * gives the exit status. */
#ifndef MAMLC_CHECK_H
#define MAMLC_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond)                                                          \
            check_passed++;                                                \
        else {                                                             \
            check_failed++;                                                \
            fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);        \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

static inline int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
