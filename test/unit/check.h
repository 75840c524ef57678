/* A minimal test harness for the C tests: CHECK records a pass or a
 * failure (with a message), check_summary prints "N passed, M failed" and
 * gives the exit status. */
#ifndef MAMLC_CHECK_H
#define MAMLC_CHECK_H

#include <math.h>
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

/* CHECK with the condition's own text as the message. */
#define EXPECT(cond) CHECK(cond, "%s", #cond)

/* |a - b| <= tol, both values in the message. */
#define CHECK_NEAR(a, b, tol)                                                        \
    do {                                                                             \
        double a_ = (a), b_ = (b);                                                   \
        CHECK(fabs(a_ - b_) <= (tol), "%s = %.17g, %s = %.17g (tol %g)", #a, a_, #b, \
              b_, (double)(tol));                                                    \
    } while (0)

static inline int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
