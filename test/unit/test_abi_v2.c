/* The functions ABI version 2 added (docs/abi.md): mamlc_metric,
 * mamlc_predict_points and mamlc_sample_tasks, through libraries built by
 * `mamlc -o` and loaded with dlopen: what they compute, and that each
 * refuses bad arguments writing nothing (or NaN).  Their agreement with
 * `mamlc run` and `mamlc eval`, bit for bit, is checked by the Python
 * package's tests against the command line. */
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_library.h"

static int failures, checks;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);                                                    \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* 3-way classification of 4-D points, with a metric; rows independent. */
static const char *const classifier =
    "param W : [3, 4] = glorot; param b : [3] = zeros;\n"
    "def net(x) = linear(x, W, b);\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "def metric(x, y) = mean(argmax(net(x), 1) == y);\n"
    "task external { support x : [6, 4], y : i32[6]; query x : [5, 4], y : i32[5]; }\n";

/* The same net after a batch statistic: its points are coupled. */
static const char *const coupled =
    "param W : [3, 4] = glorot; param b : [3] = zeros;\n"
    "def net(x) = linear(x - mean(x, 0), W, b);\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [6, 4], y : i32[6]; query x : [5, 4], y : i32[5]; }\n";

static const char *const family =
    "param W : [1, 1] = he;\n"
    "def loss(x, y) = mean((x @ transpose(W) - y)^2);\n"
    "task family(a = uniform(1.0, 2.0)) { x = uniform(-1.0, 1.0); y = a * x;\n"
    "  support x : [3, 1], y : [3, 1]; query x : [4, 1], y : [4, 1]; }\n";

typedef struct {
    void *so;
    void (*init)(void *, void *, uint64_t);
    float (*loss)(const void *, const void *, const void *);
    float (*metric)(const void *, const void *, const void *);
    void (*predict)(const void *, const void *, void *);
    int (*predict_points)(const void *, size_t, const void *, void *);
    int (*sample_tasks)(uint64_t, uint64_t, int, void *, void *, void *, void *);
} Lib;

/* mamlc TEXT -o a temporary library, then dlopen it. */
static bool build(const char *text, Lib *lib) {
    lib->so = build_library_so(text, NULL);
    if (!lib->so)
        return false;
    *(void **)&lib->init = dlsym(lib->so, "mamlc_init");
    *(void **)&lib->loss = dlsym(lib->so, "mamlc_loss");
    *(void **)&lib->metric = dlsym(lib->so, "mamlc_metric");
    *(void **)&lib->predict = dlsym(lib->so, "mamlc_predict");
    *(void **)&lib->predict_points = dlsym(lib->so, "mamlc_predict_points");
    *(void **)&lib->sample_tasks = dlsym(lib->so, "mamlc_sample_tasks");
    return lib->init && lib->loss && lib->metric && lib->predict && lib->predict_points && lib->sample_tasks;
}

static bool all_nan(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i]))
            return false;
    return true;
}

static void test_classifier(void) {
    Lib lib;
    if (!build(classifier, &lib)) {
        CHECK(false, "classifier library");
        return;
    }
    float params[15], x[13 * 4], out[13 * 3], chunk[5 * 3];
    lib.init(params, NULL, 3);
    for (int i = 0; i < 13 * 4; i++)
        x[i] = (float)sin(0.7 * i);
    int32_t y[5] = {0, 1, 2, 1, 0};

    /* the metric is the fraction of argmax hits, computed by hand here */
    lib.predict(params, x, chunk);
    int hits = 0;
    for (int p = 0; p < 5; p++) {
        int best = 0;
        for (int c = 1; c < 3; c++)
            best = chunk[p * 3 + c] > chunk[p * 3 + best] ? c : best;
        hits += best == y[p];
    }
    CHECK(lib.metric(params, x, y) == (float)hits / 5, "metric %g, %d hits of 5", lib.metric(params, x, y), hits);
    int32_t bad[5] = {0, 1, 3, 1, 0}, negative[5] = {0, -1, 2, 1, 0};
    CHECK(isnan(lib.metric(params, x, bad)), "a label of 3 in a 3-way task refuses the metric");
    CHECK(isnan(lib.metric(params, x, negative)), "a label of -1 refuses the metric");
    CHECK(isnan(lib.metric(NULL, x, y)) && isnan(lib.metric(params, NULL, y)), "NULL refuses the metric");

    /* 13 points in chunks of 5: each point's prediction is the same bits
     * whichever chunk it is in, the padded last one included */
    CHECK(lib.predict_points(params, 13, x, out) == 0, "13 points");
    for (int at = 0; at < 13; at++) {
        float one[3];
        CHECK(lib.predict_points(params, 1, x + at * 4, one) == 0 && memcmp(one, out + at * 3, sizeof one) == 0,
              "point %d alone", at);
    }
    lib.predict(params, x + 5 * 4, chunk);
    CHECK(memcmp(chunk, out + 5 * 3, sizeof chunk) == 0, "the second chunk is mamlc_predict's");
    CHECK(lib.predict_points(params, 0, NULL, out) == 0, "no points");
    CHECK(lib.predict_points(NULL, 13, x, out) == -1 && all_nan(out, 13 * 3), "NULL params: -1 and NaN");
    CHECK(lib.predict_points(params, 2, NULL, out) == -1 && all_nan(out, 2 * 3), "NULL x: -1 and NaN");
    CHECK(lib.predict_points(params, SIZE_MAX / 2, x, NULL) == -1, "NULL out");

    float sx[6 * 4];
    int32_t sy[6];
    CHECK(lib.sample_tasks(1, 0, 1, sx, sy, x, y) == -1, "an external task has no source");
    dlclose(lib.so);
}

static void test_coupled(void) {
    Lib lib;
    if (!build(coupled, &lib)) {
        CHECK(false, "coupled library");
        return;
    }
    float params[15], x[6 * 4] = {0}, out[6 * 3], chunk[5 * 3];
    lib.init(params, NULL, 3);
    for (int i = 0; i < 6 * 4; i++)
        x[i] = (float)cos(0.3 * i);
    CHECK(lib.predict_points(params, 5, x, out) == 0, "the compiled number of points");
    lib.predict(params, x, chunk);
    CHECK(memcmp(chunk, out, sizeof chunk) == 0, "which is mamlc_predict");
    CHECK(lib.predict_points(params, 6, x, out) == -1 && all_nan(out, 6 * 3), "6 coupled points: -1 and NaN");
    CHECK(lib.predict_points(params, 1, x, out) == -1 && all_nan(out, 3), "1 coupled point: -1 and NaN");
    dlclose(lib.so);
}

static void test_family(void) {
    Lib lib;
    if (!build(family, &lib)) {
        CHECK(false, "family library");
        return;
    }
    enum { B = 4 };
    float sx[B][3], sy[B][3], qx[B][4], qy[B][4], again[B][3];
    CHECK(lib.sample_tasks(5, 10, B, sx, sy, qx, qy) == B, "four tasks");
    for (int t = 0; t < B; t++) {
        float a = sy[t][0] / sx[t][0];
        CHECK(a >= 0.999f && a < 2.001f, "task %d: y = a x with a in [1, 2), a = %g", t, a);
        for (int i = 0; i < 3; i++)
            CHECK(sx[t][i] >= -1 && sx[t][i] < 1 && fabsf(sy[t][i] - a * sx[t][i]) < 1e-5f, "task %d point %d", t, i);
        for (int i = 0; i < 4; i++)
            CHECK(fabsf(qy[t][i] - a * qx[t][i]) < 1e-5f, "task %d query %d: the same a", t, i);
    }
    float one_x[3], one_y[3], one_qx[4], one_qy[4];
    CHECK(lib.sample_tasks(5, 12, 1, one_x, one_y, one_qx, one_qy) == 1 && memcmp(one_x, sx[2], sizeof one_x) == 0,
          "task 12 alone is the third of 10..13");
    memset(again, 0, sizeof again);
    CHECK(lib.sample_tasks(5, 10, -1, again, sy, qx, qy) == -1, "n < 0");
    CHECK(lib.sample_tasks(5, 10, 1 << 21, again, sy, qx, qy) == -1, "n past 2^20");
    CHECK(lib.sample_tasks(5, 10, 2, again, NULL, qx, qy) == -1, "NULL sy");
    float zero[B][3] = {{0}};
    CHECK(memcmp(again, zero, sizeof again) == 0, "a refused call writes nothing");
    CHECK(lib.sample_tasks(5, 10, 0, NULL, NULL, NULL, NULL) == 0, "no tasks, nothing read");
    dlclose(lib.so);
}

int main(void) {
    test_classifier();
    test_coupled();
    test_family();
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
