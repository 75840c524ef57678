/* The functions ABI version 3 added (docs/abi.md) for MAML++'s multi-step
 * loss: mamlc_loss_weight_count, mamlc_meta_grad_weighted and
 * mamlc_meta_step_weighted, through f64 libraries built by `mamlc -o`: the
 * weighted meta-loss is the weighted sum of the per-step ones, the plain
 * calls take the weights of the schedule (mamlc_meta_grad where it ends,
 * mamlc_meta_step at the iteration its state counts), and every bad weight
 * argument is refused writing nothing. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "build_library.h"
#include "check.h"

/* A small regression MLP; MAML++ meta entries are added per test. */
static const char *const model =
    "param W1 : [6, 1] = he; param b1 : [6] = zeros; param W2 : [1, 6] = he; param b2 : [1] = zeros;\n"
    "def loss(x, y) = mean((linear(tanh(linear(x, W1, b1)), W2, b2) - y)^2);\n"
    "task external { support x : [5, 1], y : [5, 1]; query x : [4, 1], y : [4, 1]; }\n"
    "meta { inner_steps = 2; inner_lr = learned_per_step(0.1); %s }\n";

enum { B = 3, SX = 5, QX = 4, MAXN = 64 };

typedef struct {
    void *so;
    size_t (*param_count)(void);
    size_t (*state_count)(void);
    int (*weight_count)(void);
    void (*init)(double *, double *, uint64_t);
    double (*meta_grad)(const double *, int, const double *, const void *, const double *, const void *, double *);
    double (*meta_step)(double *, double *, int, const double *, const void *, const double *, const void *);
    double (*grad_w)(const double *, int, const double *, const void *, const double *, const void *,
                     const double *, int, double *);
    double (*step_w)(double *, double *, int, const double *, const void *, const double *, const void *,
                     const double *, int);
} Lib;

static bool open_lib(const char *meta, Lib *l) {
    char text[2048];
    snprintf(text, sizeof text, model, meta);
    *l = (Lib){.so = build_library_so(text, "--dtype=f64")};
    if (!l->so)
        return false;
    *(void **)&l->param_count = dlsym(l->so, "mamlc_param_count");
    *(void **)&l->state_count = dlsym(l->so, "mamlc_state_count");
    *(void **)&l->weight_count = dlsym(l->so, "mamlc_loss_weight_count");
    *(void **)&l->init = dlsym(l->so, "mamlc_init");
    *(void **)&l->meta_grad = dlsym(l->so, "mamlc_meta_grad");
    *(void **)&l->meta_step = dlsym(l->so, "mamlc_meta_step");
    *(void **)&l->grad_w = dlsym(l->so, "mamlc_meta_grad_weighted");
    *(void **)&l->step_w = dlsym(l->so, "mamlc_meta_step_weighted");
    return l->param_count && l->state_count && l->weight_count && l->init && l->meta_grad && l->meta_step &&
           l->grad_w && l->step_w && l->param_count() <= MAXN && l->state_count() <= 3 * MAXN;
}

static double sx[B * SX], sy[B * SX], qx[B * QX], qy[B * QX];

static void tasks(void) {
    for (int i = 0; i < B * SX; i++) {
        sx[i] = -2 + 4.0 * i / (B * SX);
        sy[i] = sin(sx[i] + i % B);
    }
    for (int i = 0; i < B * QX; i++) {
        qx[i] = -1.9 + 3.7 * i / (B * QX);
        qy[i] = sin(qx[i] + i % B);
    }
}

/* The multi-step loss: linear in its weights, the plain call at the
 * schedule's end, and each bad weight argument refused. */
static void test_weighted(void) {
    Lib l;
    if (!open_lib("multi_step_loss = anneal(10);", &l)) {
        CHECK(false, "the MSL library builds");
        return;
    }
    size_t n = l.param_count();
    CHECK(l.weight_count() == 2, "one weight per inner step");
    double params[MAXN], g1[MAXN], g2[MAXN], g[MAXN], want[MAXN], plain[MAXN];
    l.init(params, NULL, 7);
    double l1 = l.grad_w(params, B, sx, sy, qx, qy, (double[]){1, 0}, 2, g1);
    double l2 = l.grad_w(params, B, sx, sy, qx, qy, (double[]){0, 1}, 2, g2);
    double lw = l.grad_w(params, B, sx, sy, qx, qy, (double[]){0.3, 0.7}, 2, g);
    double err = fabs(lw - (0.3 * l1 + 0.7 * l2));
    for (size_t i = 0; i < n; i++)
        err = fmax(err, fabs(g[i] - (0.3 * g1[i] + 0.7 * g2[i])));
    CHECK(err <= 1e-12, "the weighted loss and gradient are the weighted sums: %.3g", err);
    CHECK(l1 != l2, "the two steps' losses differ");
    double lp = l.meta_grad(params, B, sx, sy, qx, qy, plain);
    CHECK(lp == l2 && memcmp(plain, g2, n * sizeof *plain) == 0,
          "mamlc_meta_grad takes the schedule's end: the last step's loss alone");

    /* refused: the wrong count, NULL, a weight not finite; nothing written */
    struct {
        const char *what;
        const double *w;
        int nw;
    } bad[] = {{"one weight", (double[]){1}, 1},          {"three weights", (double[]){1, 0, 0}, 3},
               {"a negative count", (double[]){1, 0}, -1}, {"NULL weights", NULL, 2},
               {"a NaN weight", (double[]){NAN, 1}, 2},    {"an infinite weight", (double[]){0, INFINITY}, 2}};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        double state[3 * MAXN] = {0}, p[MAXN];
        memcpy(p, params, n * sizeof *p);
        for (size_t i = 0; i < n; i++)
            want[i] = g[i] = -7;
        CHECK(isnan(l.grad_w(params, B, sx, sy, qx, qy, bad[k].w, bad[k].nw, g)) &&
                  memcmp(g, want, n * sizeof *g) == 0,
              "mamlc_meta_grad_weighted refuses %s, writing nothing", bad[k].what);
        CHECK(isnan(l.step_w(p, state, B, sx, sy, qx, qy, bad[k].w, bad[k].nw)) &&
                  memcmp(p, params, n * sizeof *p) == 0 && state[l.state_count() - 1] == 0,
              "mamlc_meta_step_weighted refuses %s, writing nothing", bad[k].what);
    }
    dlclose(l.so);
}

/* mamlc_meta_step takes the weights of the iteration its state counts
 * (the same bits as mamlc_meta_step_weighted with rt_msl_weights of that
 * iteration) and the first-order step below first_until; past it, second
 * order; the outer optimiser's options apply. */
static void test_schedule(void) {
    Lib l;
    if (!open_lib("multi_step_loss = anneal(4); order = anneal(first_until = 2); clip_norm = 0.5;"
                  "optimizer = adamw(lr = 0.01, weight_decay = 0.1, schedule = cosine(min_lr = 0.001));"
                  "iterations = 6;", &l)) {
        CHECK(false, "the MAML++ library builds");
        return;
    }
    size_t n = l.param_count(), ns = l.state_count();
    double a[MAXN], b[MAXN], sa[3 * MAXN], sb[3 * MAXN];
    l.init(a, sa, 3);
    l.init(b, sb, 3);
    bool same = true;
    for (long it = 0; it < 6; it++) {
        double w[2];
        rt_msl_weights(2, 4, it, RT_F64, w);
        double la = l.meta_step(a, sa, B, sx, sy, qx, qy), lb = l.step_w(b, sb, B, sx, sy, qx, qy, w, 2);
        same &= la == lb && memcmp(a, b, n * sizeof *a) == 0 && memcmp(sa, sb, ns * sizeof *sa) == 0;
    }
    CHECK(same, "mamlc_meta_step is mamlc_meta_step_weighted at the weights of each iteration");
    CHECK(sa[ns - 1] == 6, "the state counts the steps");
    dlclose(l.so);
}

/* A model without the multi-step loss takes no weights: (NULL, 0) is the
 * plain call, anything else refused. */
static void test_no_weights(void) {
    Lib l;
    if (!open_lib("", &l)) {
        CHECK(false, "the plain library builds");
        return;
    }
    size_t n = l.param_count();
    double params[MAXN], g[MAXN], plain[MAXN];
    l.init(params, NULL, 5);
    CHECK(l.weight_count() == 0, "no weights without multi_step_loss");
    double lw = l.grad_w(params, B, sx, sy, qx, qy, NULL, 0, g), lp = l.meta_grad(params, B, sx, sy, qx, qy, plain);
    CHECK(lw == lp && memcmp(g, plain, n * sizeof *g) == 0, "no weights: the plain meta-gradient");
    CHECK(isnan(l.grad_w(params, B, sx, sy, qx, qy, (double[]){1}, 1, g)), "a weight it does not take is refused");
    dlclose(l.so);
}

int main(void) {
    tasks();
    test_weighted();
    test_schedule();
    test_no_weights();
    return check_summary();
}
