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

/* A scalar function of a point that the caller owns; check_central_diff
 * moves one coordinate of that point and calls f(ctx). */
typedef double CheckScalarFn(void *ctx);

/* The derivative of f along *x by central differences, for f smooth but
 * for kinks (relu, max, abs: a jump in the derivative) and the jumps of
 * their derivatives.  A step h that straddles a kink gives a value between
 * the two one-sided derivatives, however small h is.  So when the
 * difference at h misses `want` (the derivative under test) by more than
 * tol, the step is cut by 8, up to three times, until two successive
 * differences agree within tol: then no kink lies within the smaller step,
 * and that difference is returned.  `want` only decides whether to refine;
 * the value returned is always a central difference, the converged one
 * whenever the first misses.  A wrong `want` at a smooth point is caught,
 * since there every step gives the true derivative; only a point within
 * h/512 of a kink can still give a false failure.  *x is restored. */
static inline double check_central_diff(CheckScalarFn *f, void *ctx, double *x, double h, double want,
                                        double tol) {
    double keep = *x, d = 0;
    for (int i = 0; i < 4; i++, h /= 8) {
        *x = keep + h;
        double up = f(ctx);
        *x = keep - h;
        double down = f(ctx);
        *x = keep;
        double next = (up - down) / (2 * h);
        if (i == 0 ? fabs(next - want) <= tol : fabs(next - d) <= tol)
            return next;
        d = next;
    }
    return d;
}

static inline int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
