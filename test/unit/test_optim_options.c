/* MAML++'s runtime parts against formulas written out here and values
 * recorded from PyTorch: the outer optimiser's options (Adam's coupled and
 * AdamW's decoupled weight decay, the cosine schedule, gradient-norm
 * clipping; runtime/optim.c) and the multi-step loss weights
 * (rt_msl_weights) against MAML++'s get_per_step_loss_importance_vector. */
#include <math.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "check.h"

/* The inputs of test_optim.c (and gen_optim_options_reference.py): N
 * params from P0, T steps with gradients G. */
enum { N = 8, T = 10 };
static const double SCALE[N] = {0.5, 1.0, 2.0, 0x1p-10, 4.0, 0.25, 0x1p-20, 1.0};
static const double PI = 3.14159265358979323846;

static double p0(int i) { return (i - 3.5) / 4; }

static double grad(int t, int i) { return ((5 * i + 3 * t) % 9 - 4) / 8.0 * SCALE[i]; }

/* The optimiser as the papers and torch's documentation write it, in
 * double: at step t, lr_t = min_lr + (lr - min_lr)(1 + cos(pi (t-1)/T_max))/2
 * under the cosine schedule; g clipped to norm c (g c / (|g| + 1e-6));
 * Adam: g += wd p, then Kingma & Ba's update; AdamW: p *= 1 - lr_t wd, then
 * the update; SGD: p -= lr_t g. */
static void textbook(const RtOptimizer *o, int steps, double *p) {
    double m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++)
        p[i] = p0(i);
    for (int t = 1; t <= steps; t++) {
        double lr = o->cosine ? o->min_lr + (o->lr - o->min_lr) * (1 + cos(PI * (t - 1) / o->t_max)) / 2 : o->lr;
        double g[N], sq = 0;
        for (int i = 0; i < N; i++) {
            g[i] = grad(t, i);
            sq += g[i] * g[i];
        }
        double coef = o->clip_norm > 0 ? o->clip_norm / (sqrt(sq) + 1e-6) : 1;
        for (int i = 0; i < N; i++) {
            double gi = g[i] * (coef < 1 ? coef : 1);
            if (o->kind == RT_SGD) {
                p[i] -= lr * gi;
                continue;
            }
            if (o->kind == RT_ADAM)
                gi += o->weight_decay * p[i];
            else
                p[i] *= 1 - lr * o->weight_decay;
            m[i] = o->beta1 * m[i] + (1 - o->beta1) * gi;
            v[i] = o->beta2 * v[i] + (1 - o->beta2) * gi * gi;
            double mh = m[i] / (1 - pow(o->beta1, t)), vh = v[i] / (1 - pow(o->beta2, t));
            p[i] -= lr * mh / (sqrt(vh) + o->eps);
        }
    }
}

/* steps steps of rt_opt_step from P0 in f64 into p, and in f32 into pf. */
static void run(const RtOptimizer *o, int steps, double *p, float *pf) {
    double state[2 * N] = {0};
    float statef[2 * N] = {0};
    for (int i = 0; i < N; i++) {
        p[i] = p0(i);
        pf[i] = (float)p0(i);
    }
    for (int t = 1; t <= steps; t++) {
        double g[N];
        float gf[N];
        for (int i = 0; i < N; i++) {
            g[i] = grad(t, i);
            gf[i] = (float)g[i];
        }
        rt_opt_step(o, RT_F64, N, p, g, state, t);
        rt_opt_step(o, RT_F32, N, pf, gf, statef, t);
    }
}

/* The largest |a - b| / (1 + |b|). */
static double worst(const double *a, const double *b) {
    double w = 0;
    for (int i = 0; i < N; i++)
        w = fmax(w, fabs(a[i] - b[i]) / (1 + fabs(b[i])));
    return w;
}

typedef struct {
    RtOptimizer o;
    double pT[N];               /* torch's params after T steps, in float64 */
} Recorded;

/* recorded: the output of gen_optim_options_reference.py, */
static const Recorded recorded[] = {
/* recorded with PyTorch 1.13.0a0 by test/unit/gen_optim_options_reference.py */
    {{.kind = RT_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-08, .weight_decay = 0.1, .clip_norm = 0,
      .cosine = false, .min_lr = 0, .t_max = 10},
     {-0.80387753029995523, -0.65516206301220692, -0.36934930286740064, -0.030233909162351677,
      0.072933072544472163, 0.35590789684802676, 0.52558810308403414, 0.84102464039357572}},
    {{.kind = RT_ADAMW, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-08, .weight_decay = 0.1, .clip_norm = 0,
      .cosine = false, .min_lr = 0, .t_max = 10},
     {-0.83051815909175586, -0.66365804032301434, -0.38092234780279649, -0.071138903530838807,
      0.072500243658956465, 0.39448938023048302, 0.63754091220038078, 0.85426989909409146}},
    {{.kind = RT_ADAMW, .lr = 0.2, .beta1 = 0.7, .beta2 = 0.5, .eps = 0.001, .weight_decay = 0.5, .clip_norm = 0,
      .cosine = false, .min_lr = 0, .t_max = 10},
     {0.17275156376242129, -0.77130331379009909, -0.16116996702803396, 0.109788730640212,
      -0.52309654937783079, 0.30107644264095529, 0.21804134380909362, 0.016223754571257347}},
    {{.kind = RT_SGD, .lr = 0.1, .beta1 = 0, .beta2 = 0, .eps = 0, .weight_decay = 0, .clip_norm = 0,
      .cosine = true, .min_lr = 0.001, .t_max = 10},
     {-0.84658342539806741, -0.70685379840773066, -0.39995870159226943, -0.12490787778398059,
      -0.20216740318453894, 0.38125516230096634, 0.62500005414123683, 0.83070814920386526}},
    {{.kind = RT_ADAM, .lr = 0.05, .beta1 = 0.5, .beta2 = 0.99, .eps = 1e-06, .weight_decay = 0, .clip_norm = 0,
      .cosine = true, .min_lr = 0.0, .t_max = 10},
     {-0.77541215955411191, -0.73938344249083465, -0.40840608200840783, 0.011323917869941042,
      -0.030172009735256147, 0.43903697014712884, 0.63871814293160101, 0.84966412503304967}},
    {{.kind = RT_SGD, .lr = 0.1, .beta1 = 0, .beta2 = 0, .eps = 0, .weight_decay = 0, .clip_norm = 0.5,
      .cosine = false, .min_lr = 0, .t_max = 10},
     {-0.83999803984853538, -0.75307974400161803, -0.34550697067289698, -0.12488932301822453,
      -0.037043563903304044, 0.38951895592467217, 0.62499998324877515, 0.87781841805931182}},
    {{.kind = RT_ADAMW, .lr = 0.03, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-08, .weight_decay = 0.01, .clip_norm = 1.0,
      .cosine = true, .min_lr = 0.0001, .t_max = 10},
     {-0.78687831812767395, -0.72582609114032504, -0.38150223383626397, -0.024270367321702093,
      0.026426315494473031, 0.4465674375649904, 0.59971380617146575, 0.90407414636422834}},
};
/* end of recorded */

/* Each option against the textbook formulas and PyTorch (whose cosine
 * schedule is recursive and whose Adam forms m as b1 m + (1 - b1) g: the
 * same values up to rounding), in f64, and f32 near f64; and the schedule
 * and the clipping coefficient alone. */
static void test_options(void) {
    for (size_t r = 0; r < sizeof recorded / sizeof *recorded; r++) {
        const RtOptimizer *o = &recorded[r].o;
        double p[N], want[N];
        float pf[N];
        run(o, T, p, pf);
        textbook(o, T, want);
        double wf = 0;
        for (int i = 0; i < N; i++)
            wf = fmax(wf, fabs(pf[i] - p[i]) / (1 + fabs(p[i])));
        CHECK(worst(p, want) <= 1e-14, "config %zu: f64 against the formulas: %.3g", r, worst(p, want));
        CHECK(worst(p, recorded[r].pT) <= 1e-14, "config %zu: f64 against PyTorch: %.3g", r,
              worst(p, recorded[r].pT));
        CHECK(wf <= 1e-5, "config %zu: f32 near f64: %.3g", r, wf);
        CHECK(rt_opt_state_count(o, N) == (o->kind == RT_SGD ? 0 : 2 * N), "config %zu: state count", r);
    }
    RtOptimizer c = {.kind = RT_SGD, .lr = 0.5, .cosine = true, .min_lr = 0.125, .t_max = 4};
    CHECK(rt_opt_lr(&c, 1) == 0.5, "cosine: the first step takes lr");
    CHECK_NEAR(rt_opt_lr(&c, 3), 0.3125, 1e-16);   /* half way: (lr + min_lr) / 2 */
    CHECK_NEAR(rt_opt_lr(&c, 5), 0.125, 1e-16);    /* T_max steps later: min_lr */
    c.cosine = false;
    CHECK(rt_opt_lr(&c, 3) == 0.5, "no schedule: lr at every step");
    double g[3] = {3, 0, 4};                        /* norm 5 */
    RtOptimizer clip = {.kind = RT_SGD, .lr = 1, .clip_norm = 2.5};
    CHECK_NEAR(rt_opt_grad_scale(&clip, RT_F64, 3, g), 2.5 / (5 + 1e-6), 1e-16);
    clip.clip_norm = 10;
    CHECK(rt_opt_grad_scale(&clip, RT_F64, 3, g) == 1, "a norm under clip_norm is left alone");
    clip.clip_norm = 0;
    CHECK(rt_opt_grad_scale(&clip, RT_F64, 3, g) == 1, "no clipping without clip_norm");
    /* the options left at zero change nothing, bit for bit */
    RtOptimizer plain = {.kind = RT_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    RtOptimizer decoupled = plain;
    decoupled.kind = RT_ADAMW;
    double a[N], b[N];
    float af[N], bf[N];
    run(&plain, T, a, af);
    run(&decoupled, T, b, bf);
    CHECK(memcmp(a, b, sizeof a) == 0 && memcmp(af, bf, sizeof af) == 0, "AdamW without weight decay is Adam");
}

/* MAML++'s get_per_step_loss_importance_vector, as its code writes it
 * (numpy, float64): loss_weights = ones(S) / S; decay_rate = 1 / S / N;
 * min_value = 0.03 / S; the first S - 1 are max(w - it decay_rate,
 * min_value), the last min(w + it (S - 1) decay_rate, 1 - (S - 1)
 * min_value).  MAML++ uses them while it < N and the last step's loss alone
 * from then on. */
static void maml_pp(int S, long n, long it, double *w) {
    double decay_rate = 1.0 / S / n, min_value = 0.03 / S;
    for (int i = 0; i < S; i++)
        w[i] = 1.0 / S;
    for (int i = 0; i < S - 1; i++)
        w[i] = fmax(w[i] - it * decay_rate, min_value);
    w[S - 1] = fmin(w[S - 1] + it * (S - 1) * decay_rate, 1.0 - (S - 1) * min_value);
    if (it >= n)
        for (int i = 0; i < S; i++)
            w[i] = i == S - 1;
}

static void test_msl_weights(void) {
    const long its[] = {0, 1, 50, 96, 97, 98, 99, 100, 150};
    const int steps[] = {1, 2, 5};
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++)
        for (size_t j = 0; j < sizeof its / sizeof *its; j++) {
            int S = steps[k];
            double got[8], want[8], sum = 0;
            float gotf[8];
            rt_msl_weights(S, 100, its[j], RT_F64, got);
            rt_msl_weights(S, 100, its[j], RT_F32, gotf);
            maml_pp(S, 100, its[j], want);
            for (int s = 0; s < S; s++) {
                CHECK_NEAR(got[s], want[s], 1e-15);
                CHECK(gotf[s] == (float)got[s], "S %d, iteration %ld: f32 weight %d rounds the f64 one", S, its[j], s);
                sum += got[s];
            }
            CHECK_NEAR(sum, 1.0, 1e-14);
        }
    /* by hand, S = 5 over N = 100: half way, at the floor, and after */
    double w[5];
    rt_msl_weights(5, 100, 50, RT_F64, w);
    CHECK_NEAR(w[0], 0.1, 1e-15);
    CHECK_NEAR(w[4], 0.6, 1e-15);
    rt_msl_weights(5, 100, 99, RT_F64, w);
    CHECK_NEAR(w[3], 0.006, 1e-15);
    CHECK_NEAR(w[4], 0.976, 1e-15);
    rt_msl_weights(5, 100, 0, RT_F64, w);
    CHECK(w[0] == 0.2 && w[4] == 0.2, "uniform at iteration 0");
    rt_msl_weights(5, 100, 100, RT_F64, w);
    CHECK(w[0] == 0 && w[3] == 0 && w[4] == 1, "the last step's loss alone from N on");
}

int main(void) {
    test_options();
    test_msl_weights();
    return check_summary();
}
