/* Task families end to end: a family in a model, compiled as mamlc run
 * compiles it (tools/family.c), sampled by the runtime (runtime/family.c).
 * Every element is checked against the documented definition, replayed
 * here from the generator: the variables in order, then the support set's
 * draws, then the query set's, each rounded to the real type, and x and y
 * computed as the lines say.  Sampling is the same from any thread, with
 * fewer buffers than callers, and allocates nothing. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/family.c"

#include "alloc_count.h"
#include "check.h"

enum { K = 5, Q = 7, TASKS = 64, CALLERS = 4 };

static const char regression[] =
    "dim K = 5;\n"
    "dim Q = 7;\n"
    "param w : [2, 1] = zeros;\n"
    "def loss(x, y) = mean((x @ w - y)^2);\n"
    "task family(a = uniform(1.0, 2.0), b = normal(0.5, 2.0, [2, 1])) {\n"
    "  x = uniform(-3.0, 3.0);\n"
    "  y = a * (x @ b) + normal(0.0, 0.1);\n"
    "  support x : [K, 2], y : [K, 1];\n"
    "  query   x : [Q, 2], y : [Q, 1];\n"
    "}\n";

static const char classes[] =
    "dim K = 5;\n"
    "dim Q = 7;\n"
    "param w : [2, 3] = zeros;\n"
    "def loss(x, y) = cross_entropy(x @ w, y);\n"
    "task family(v = normal(0.0, 1.0, [2, 3])) {\n"
    "  x = uniform(-1.0, 1.0);\n"
    "  y = argmax(x @ v, 1);\n"
    "  support x : [K, 2], y : i32[K];\n"
    "  query   x : [Q, 2], y : i32[Q];\n"
    "}\n";

typedef struct {
    Model *md;
    RunFamily fam;
    RtReal real;
} Family;

static bool family_open(Family *f, const char *text, DType real, int callers) {
    Diag d;
    diag_init(&d, stderr);
    ModelOptions opt = {.real = real};
    f->md = model_load_text("family.mdl", text, strlen(text), &opt, &d);
    BeOptions be = {.target_cpu = "x86-64-v3", .opt_level = 3, .compile_threads = 1};
    bool ok = f->md && run_family_open(&f->fam, f->md, &be, callers, &d);
    diag_free(&d);
    f->real = real == DT_F64 ? RT_F64 : RT_F32;
    return ok;
}

static void family_close(Family *f) {
    run_family_close(&f->fam);
    model_free(f->md);
}

/* One draw as rt_family_sample makes it: in double, then rounded. */
static double replay(RtRng *r, RtReal real, bool uniform, double a, double b) {
    double v = uniform ? rt_rng_uniform(r, a, b) : a + b * rt_rng_normal(r);
    if (real == RT_F64)
        return v;
    float x = (float)v;
    if (uniform && (double)x >= b)
        x = nextafterf(x, -INFINITY);
    return x;
}

static double get(RtReal real, const void *p, int i) {
    return real == RT_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
}

typedef struct {
    _Alignas(64) char sx[K * 2 * 8];
    _Alignas(64) char sy[K * 8];
    _Alignas(64) char qx[Q * 2 * 8];
    _Alignas(64) char qy[Q * 8];
} Task;

static void sample(const Family *f, uint64_t seed, uint64_t task, Task *t) {
    rt_family_sample(f->fam.source, seed, task, t->sx, t->sy, t->qx, t->qy);
}

/* y = a * (x @ b) + normal(0, 0.1): x exactly as drawn, y as computed in
 * the real type (to its rounding), every x in [-3, 3). */
static void test_regression(DType dt) {
    Family f;
    if (!family_open(&f, regression, dt, 1)) {
        CHECK(false, "the regression family does not compile");
        return;
    }
    double tol = dt == DT_F32 ? 1e-5 : 1e-12;
    int bad_x = 0, bad_y = 0, outside = 0;
    for (uint64_t task = 0; task < 20; task++) {
        uint64_t id = task < 10 ? task : RT_EVAL_TASK | task;
        Task t;
        sample(&f, 7, id, &t);
        RtRng r;
        rt_rng_stream(&r, 7, id);
        double a = replay(&r, f.real, true, 1.0, 2.0);
        double b[2] = {replay(&r, f.real, false, 0.5, 2.0), replay(&r, f.real, false, 0.5, 2.0)};
        const void *xs[2] = {t.sx, t.qx}, *ys[2] = {t.sy, t.qy};
        int n[2] = {K, Q};
        for (int s = 0; s < 2; s++) {
            double x[Q * 2];
            for (int i = 0; i < 2 * n[s]; i++) {
                x[i] = replay(&r, f.real, true, -3.0, 3.0);
                bad_x += get(f.real, xs[s], i) != x[i];
                outside += !(x[i] >= -3.0 && x[i] < 3.0);
            }
            for (int i = 0; i < n[s]; i++) {
                double noise = replay(&r, f.real, false, 0.0, 0.1);
                double y = a * (x[2 * i] * b[0] + x[2 * i + 1] * b[1]) + noise;
                bad_y += !(fabs(get(f.real, ys[s], i) - y) <= tol * (1 + fabs(y)));
            }
        }
    }
    CHECK(bad_x == 0, "%s: %d x differ from their replayed draws", ir_dtype_name(dt), bad_x);
    CHECK(outside == 0, "%s: %d x outside [-3, 3)", ir_dtype_name(dt), outside);
    CHECK(bad_y == 0, "%s: %d y differ from a * (x @ b) + noise", ir_dtype_name(dt), bad_y);
    family_close(&f);
}

/* y = argmax(x @ v, 1): i32 labels of the column with the largest score
 * (where the scores are not within rounding of a tie). */
static void test_classes(void) {
    Family f;
    if (!family_open(&f, classes, DT_F32, 1)) {
        CHECK(false, "the classification family does not compile");
        return;
    }
    int bad = 0, checked = 0, seen[3] = {0};
    for (uint64_t task = 0; task < 50; task++) {
        Task t;
        sample(&f, 3, task, &t);
        RtRng r;
        rt_rng_stream(&r, 3, task);
        double v[6];
        for (int i = 0; i < 6; i++)
            v[i] = replay(&r, f.real, false, 0.0, 1.0);
        const void *xs[2] = {t.sx, t.qx};
        const int32_t *ys[2] = {(const int32_t *)t.sy, (const int32_t *)t.qy};
        int n[2] = {K, Q};
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < n[s]; i++) {
                double x0 = get(f.real, xs[s], 2 * i), x1 = get(f.real, xs[s], 2 * i + 1), best = -INFINITY;
                double second = -INFINITY;
                int label = 0;
                for (int c = 0; c < 3; c++) {
                    double z = x0 * v[c] + x1 * v[3 + c];
                    if (z > best) {
                        second = best;
                        best = z;
                        label = c;
                    } else if (z > second) {
                        second = z;
                    }
                }
                bad += x0 != replay(&r, f.real, true, -1.0, 1.0) || x1 != replay(&r, f.real, true, -1.0, 1.0);
                if (best - second > 1e-5) {
                    checked++;
                    bad += ys[s][i] != label;
                    seen[label]++;
                }
            }
    }
    CHECK(bad == 0, "%d labels or points differ from argmax(x @ v, 1) (of %d checked)", bad, checked);
    EXPECT(checked > 500 && seen[0] && seen[1] && seen[2]);
    family_close(&f);
}

typedef struct {
    const Family *f;
    int first;
    Task *out;
} Caller;

static void *caller(void *arg) {
    Caller *c = arg;
    for (int i = 0; i < TASKS; i++) {
        int task = (c->first + 7 * i) % TASKS;      /* each caller its own order */
        sample(c->f, 11, (uint64_t)task, &c->out[task]);
    }
    return NULL;
}

/* CALLERS threads at once on a source with two buffers give the tasks one
 * thread gives, bit for bit; a call allocates nothing. */
static void test_threads(void) {
    Family f;
    if (!family_open(&f, regression, DT_F32, 2)) {
        CHECK(false, "the regression family does not compile");
        return;
    }
    Task *alone = calloc(TASKS, sizeof *alone), *together = calloc((size_t)CALLERS * TASKS, sizeof *together);
    alloc_count_start();
    long before = alloc_count();
    for (int i = 0; i < TASKS; i++)
        sample(&f, 11, (uint64_t)i, &alone[i]);
    CHECK(alloc_count() == before, "sampling %d tasks allocated %ld times", TASKS, alloc_count() - before);
    pthread_t thread[CALLERS];
    Caller c[CALLERS];
    for (int k = 0; k < CALLERS; k++) {
        c[k] = (Caller){&f, k, together + (size_t)k * TASKS};
        EXPECT(pthread_create(&thread[k], NULL, caller, &c[k]) == 0);
    }
    for (int k = 0; k < CALLERS; k++)
        pthread_join(thread[k], NULL);
    for (int k = 0; k < CALLERS; k++)
        CHECK(memcmp(alone, together + (size_t)k * TASKS, TASKS * sizeof *alone) == 0,
              "caller %d drew other tasks than one thread alone", k);
    free(alone);
    free(together);
    family_close(&f);
}

int main(void) {
    test_regression(DT_F32);
    test_regression(DT_F64);
    test_classes();
    test_threads();
    return check_summary();
}
