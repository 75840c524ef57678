/* Meta-train the MAML sinusoid through the shared library that
 *     mamlc examples/sine.mdl -o train.so
 * builds, using nothing but that library and its header: this program
 * samples its own tasks, calls mamlc_meta_step, and evaluates held-out tasks
 * with mamlc_adapt and mamlc_loss.
 *
 * usage: train_sine [ITERATIONS] [SEED]       (defaults 20000, 1) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "train.h"

/* splitmix64: a small, good generator for the example's own sampler */
static uint64_t next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * (double)(next(s) >> 11) / 9007199254740992.0;
}

/* One task of the MAML paper's sinusoid: y = A sin(x - phase). */
static void sample_task(uint64_t *s, mamlc_real *sx, mamlc_real *sy, mamlc_real *qx, mamlc_real *qy) {
    double amplitude = uniform(s, 0.1, 5.0), phase = uniform(s, 0.0, 3.14159265358979);
    for (int i = 0; i < MAMLC_SUPPORT_X_COUNT; i++) {
        sx[i] = (mamlc_real)uniform(s, -5.0, 5.0);
        sy[i] = (mamlc_real)(amplitude * sin(sx[i] - phase));
    }
    for (int i = 0; i < MAMLC_QUERY_X_COUNT; i++) {
        qx[i] = (mamlc_real)uniform(s, -5.0, 5.0);
        qy[i] = (mamlc_real)(amplitude * sin(qx[i] - phase));
    }
}

enum { BATCH = 25, EVAL_TASKS = 500 };

/* Mean query MSE over held-out tasks after `steps` inner steps. */
static double evaluate(const mamlc_real *params, int steps, uint64_t seed) {
    static mamlc_real sx[MAMLC_SUPPORT_X_COUNT], sy[MAMLC_SUPPORT_Y_COUNT];
    static mamlc_real qx[MAMLC_QUERY_X_COUNT], qy[MAMLC_QUERY_Y_COUNT];
    mamlc_real *adapted = malloc(mamlc_param_count() * sizeof *adapted);
    double total = 0;
    for (int t = 0; t < EVAL_TASKS; t++) {
        sample_task(&seed, sx, sy, qx, qy);
        mamlc_adapt(params, steps, sx, sy, adapted);
        total += mamlc_loss(adapted, qx, qy);
    }
    free(adapted);
    return total / EVAL_TASKS;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 20000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1, rng = seed;
    if (mamlc_abi_version() != MAMLC_ABI_VERSION) {
        fprintf(stderr, "train_sine: the library speaks ABI %d, this program %d\n", mamlc_abi_version(),
                MAMLC_ABI_VERSION);
        return 1;
    }
    mamlc_real *params = malloc(mamlc_param_count() * sizeof *params);
    mamlc_real *state = malloc(mamlc_state_count() * sizeof *state);
    mamlc_real *sx = malloc(BATCH * MAMLC_SUPPORT_X_COUNT * sizeof *sx);
    mamlc_real *sy = malloc(BATCH * MAMLC_SUPPORT_Y_COUNT * sizeof *sy);
    mamlc_real *qx = malloc(BATCH * MAMLC_QUERY_X_COUNT * sizeof *qx);
    mamlc_real *qy = malloc(BATCH * MAMLC_QUERY_Y_COUNT * sizeof *qy);
    if (!params || !state || !sx || !sy || !qx || !qy)
        return 1;
    mamlc_init(params, state, seed);
    double before = evaluate(params, 1, 12345);
    double loss = 0;
    for (long it = 0; it < iterations; it++) {
        for (int t = 0; t < BATCH; t++)
            sample_task(&rng, sx + t * MAMLC_SUPPORT_X_COUNT, sy + t * MAMLC_SUPPORT_Y_COUNT,
                        qx + t * MAMLC_QUERY_X_COUNT, qy + t * MAMLC_QUERY_Y_COUNT);
        loss = mamlc_meta_step(params, state, BATCH, sx, sy, qx, qy);
        if (!isfinite(loss)) {
            fprintf(stderr, "train_sine: the meta-loss is not finite at iteration %ld\n", it + 1);
            return 1;
        }
    }
    double after0 = evaluate(params, 0, 12345), after1 = evaluate(params, 1, 12345);
    double after10 = evaluate(params, 10, 12345);
    printf("%ld iterations: last meta-loss %.4f\n", iterations, loss);
    printf("held-out query MSE: before training %.4f (1 step); after: %.4f (0 steps), %.4f (1 step), %.4f (10 steps)\n",
           before, after0, after1, after10);
    free(params);
    free(state);
    free(sx);
    free(sy);
    free(qx);
    free(qy);
    return after1 < after0 ? 0 : 1;     /* adaptation must help once trained */
}
