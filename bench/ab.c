/* Two libraries of one model (built by `mamlc -o` from two compilers, or
 * one library twice), timed against each other in one process:
 * meta-gradient calls alternate, A then B, so that whatever else the
 * machine does falls on both alike.  Driven by bench/ab, which passes the
 * sizes from the model's JSON:
 *
 *   ab A.so B.so BATCH SX SY QX QY LABELS STEPS [THREADS_A THREADS_B]
 *
 * SX .. QY: reals (or labels) per task of each input; LABELS: 1 if the
 * targets are i32 labels below 5, 0 if reals; THREADS_A, THREADS_B: each
 * workspace's threads (default one).  Prints one line: each library's median
 * and lower quartile in seconds, the ratio of the medians B/A, and whether
 * the two gradients are the same bits. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float real;             /* the libraries' mamlc_real (f32) */
typedef void *(*WorkspaceNew)(int, int);
typedef real (*MetaGrad)(void *, const real *, int, const real *, const void *, const real *, const void *,
                         real *);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bytes of memory aligned like mamlc run's buffers (64 bytes), so that
 * timings here and there match; NULL when out of memory. */
static void *buffer(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* n reals in [0, 1), or labels 0..4, from a fixed sequence. */
static void *fill(size_t n, int labels, unsigned *seed)
{
    uint32_t *v = buffer(n * 4 + 4);
    for (size_t i = 0; v && i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        if (labels)
            v[i] = (uint32_t)(i % 5);
        else
            ((real *)v)[i] = (real)((*seed >> 8) & 0xffff) / 65536.0f;
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 10 && argc != 12) {
        fprintf(stderr, "usage: ab A.so B.so BATCH SX SY QX QY LABELS STEPS [THREADS_A THREADS_B]\n");
        return 2;
    }
    int batch = atoi(argv[3]), labels = atoi(argv[8]), steps = atoi(argv[9]);
    int threads[2] = {argc == 12 ? atoi(argv[10]) : 1, argc == 12 ? atoi(argv[11]) : 1};
    size_t sx = strtoul(argv[4], NULL, 10), sy = strtoul(argv[5], NULL, 10);
    size_t qx = strtoul(argv[6], NULL, 10), qy = strtoul(argv[7], NULL, 10);
    unsigned seed = 1;
    real *sxv = fill(batch * sx, 0, &seed), *qxv = fill(batch * qx, 0, &seed);
    void *syv = fill(batch * sy, labels, &seed), *qyv = fill(batch * qy, labels, &seed);
    MetaGrad grad[2];
    void *ws[2];
    real *params[2], *g[2];
    double *t[2];
    size_t np = 0;
    for (int k = 0; k < 2; k++) {
        void *h = dlopen(argv[1 + k], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "ab: %s\n", dlerror());
            return 1;
        }
        size_t (*count)(void) = (size_t (*)(void))dlsym(h, "mamlc_param_count");
        size_t (*state)(void) = (size_t (*)(void))dlsym(h, "mamlc_state_count");
        void (*init)(real *, real *, uint64_t) = (void (*)(real *, real *, uint64_t))dlsym(h, "mamlc_init");
        WorkspaceNew wnew = (WorkspaceNew)dlsym(h, "mamlc_workspace_new");
        grad[k] = (MetaGrad)dlsym(h, "mamlc_meta_grad_ws");
        if (!count || !state || !init || !wnew || !grad[k]) {
            fprintf(stderr, "ab: %s is not a mamlc library with workspaces\n", argv[1 + k]);
            return 1;
        }
        np = count();
        params[k] = buffer(np * sizeof(real));
        g[k] = buffer(np * sizeof(real));
        real *st = buffer(state() * sizeof(real) + sizeof(real));
        t[k] = malloc((size_t)steps * sizeof(double));
        ws[k] = wnew(batch, threads[k]);
        if (!params[k] || !g[k] || !st || !t[k] || !ws[k] || !sxv || !qxv || !syv || !qyv) {
            fprintf(stderr, "ab: out of memory\n");
            return 1;
        }
        init(params[k], st, 1);
        free(st);
    }
    for (int i = -2; i < steps; i++)            /* two of warm-up */
        for (int k = 0; k < 2; k++) {
            double t0 = now();
            grad[k](ws[k], params[k], batch, sxv, syv, qxv, qyv, g[k]);
            if (i >= 0)
                t[k][i] = now() - t0;
        }
    for (int k = 0; k < 2; k++)
        qsort(t[k], (size_t)steps, sizeof(double), by_value);
    printf("A %.6g s (q1 %.6g) B %.6g s (q1 %.6g) B/A %.3f gradients %s\n", t[0][steps / 2], t[0][steps / 4],
           t[1][steps / 2], t[1][steps / 4], t[1][steps / 2] / t[0][steps / 2],
           memcmp(g[0], g[1], np * sizeof(real)) ? "differ" : "the same bits");
    return 0;
}
