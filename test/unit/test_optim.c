/* The outer optimisers (runtime/optim.c) against their formulas, written
 * out here in double, over a grid of lr, beta1 (on both sides of 1/2, where
 * Adam's lerp changes form), beta2 and eps, in f64 and f32; and against
 * torch.optim.Adam and torch.optim.SGD on values recorded from PyTorch by
 * test/unit/gen_optim_reference.py. */
#include <math.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "check.h"

/* The inputs, the same in gen_optim_reference.py: N params from P0, T
 * steps with gradients G, every value exact in binary.  The scales reach
 * down to where eps matters; some gradients are zero. */
enum { N = 8, T = 10 };
static const double SCALE[N] = {0.5, 1.0, 2.0, 0x1p-10, 4.0, 0.25, 0x1p-20, 1.0};

static double p0(int i) { return (i - 3.5) / 4; }

/* The gradient of element i at step t (1-based). */
static double grad(int t, int i) { return ((5 * i + 3 * t) % 9 - 4) / 8.0 * SCALE[i]; }

/* Adam as Kingma & Ba write it (Algorithm 1), in double:
 *   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g²,
 *   m̂ = m / (1 - b1^t),  v̂ = v / (1 - b2^t),  p -= lr m̂ / (√v̂ + eps).
 * steps steps from P0 into p, with the moments into m and v.  scale is
 * what rounding errors are relative to: 1 + |p| + the sum of the steps
 * with m's terms taken in absolute value (gradients of alternating sign
 * cancel in m, and the rounding of the terms does not). */
static void adam_textbook(const RtOptimizer *o, int steps, double *p, double *m, double *v, double *scale) {
    double mabs[N] = {0};
    for (int i = 0; i < N; i++) {
        p[i] = p0(i);
        m[i] = v[i] = 0;
        scale[i] = 1;
    }
    for (int t = 1; t <= steps; t++)
        for (int i = 0; i < N; i++) {
            double g = grad(t, i);
            m[i] = o->beta1 * m[i] + (1 - o->beta1) * g;
            mabs[i] = o->beta1 * mabs[i] + (1 - o->beta1) * fabs(g);
            v[i] = o->beta2 * v[i] + (1 - o->beta2) * g * g;
            double mhat = m[i] / (1 - pow(o->beta1, t)), vhat = v[i] / (1 - pow(o->beta2, t));
            double denom = sqrt(vhat) + o->eps;
            p[i] -= o->lr * mhat / denom;
            scale[i] += o->lr * mabs[i] / (1 - pow(o->beta1, t)) / denom;
        }
    for (int i = 0; i < N; i++)
        scale[i] += fabs(p[i]);
}

/* steps steps of rt_opt_step from P0, in f64 and f32 (state: [m; v]). */
static void run(const RtOptimizer *o, int steps, double *p, double *state, float *pf, float *statef) {
    double g[N];
    float gf[N];
    for (int i = 0; i < N; i++) {
        p[i] = p0(i);
        pf[i] = (float)p0(i);
    }
    memset(state, 0, 2 * N * sizeof *state);
    memset(statef, 0, 2 * N * sizeof *statef);
    for (int t = 1; t <= steps; t++) {
        for (int i = 0; i < N; i++)
            gf[i] = (float)(g[i] = grad(t, i));
        rt_opt_step(o, RT_F64, N, p, g, state, t);
        rt_opt_step(o, RT_F32, N, pf, gf, statef, t);
    }
}

/* Adam over the grid, every step, against the textbook: to rounding, in
 * f64 within 1e-14 of the scale and in f32 within 1e-6 (about 45 and 17
 * units in the last place). */
static void test_adam_formula(void) {
    static const double lrs[] = {1e-3, 0.1, 1.5}, beta1s[] = {0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999};
    static const double beta2s[] = {0, 0.5, 0.9, 0.999}, epss[] = {1e-8, 1e-3, 0.5};
    int bad = 0, bad_state = 0, bad_f32 = 0, cases = 0;
    double worst = 0, worst_f32 = 0;
    for (size_t a = 0; a < sizeof lrs / sizeof *lrs; a++)
        for (size_t b = 0; b < sizeof beta1s / sizeof *beta1s; b++)
            for (size_t c = 0; c < sizeof beta2s / sizeof *beta2s; c++)
                for (size_t e = 0; e < sizeof epss / sizeof *epss; e++) {
                    RtOptimizer o = {.kind = RT_ADAM, .lr = lrs[a], .beta1 = beta1s[b], .beta2 = beta2s[c], .eps = epss[e]};
                    EXPECT(rt_opt_state_count(&o, N) == 2 * N);
                    for (int steps = 1; steps <= T; steps++) {
                        double p[N], m[N], v[N], scale[N], got[N], state[2 * N];
                        float gotf[N], statef[2 * N];
                        adam_textbook(&o, steps, p, m, v, scale);
                        run(&o, steps, got, state, gotf, statef);
                        cases++;
                        for (int i = 0; i < N; i++) {
                            double err = fabs(got[i] - p[i]) / scale[i], err32 = fabs(gotf[i] - p[i]) / scale[i];
                            worst = fmax(worst, err);
                            worst_f32 = fmax(worst_f32, err32);
                            bad += !(err <= 1e-14);
                            bad_f32 += !(err32 <= 1e-6);
                            bad_state += !(fabs(state[i] - m[i]) <= 1e-15 * SCALE[i] &&
                                           fabs(state[N + i] - v[i]) <= 1e-15 * SCALE[i] * SCALE[i]);
                            if (!(err <= 1e-14 && err32 <= 1e-6) && bad + bad_f32 <= 5)
                                fprintf(stderr, "adam lr %g beta1 %g beta2 %g eps %g, step %d, p[%d]: %.17g, f32 %.9g, "
                                        "textbook %.17g\n", o.lr, o.beta1, o.beta2, o.eps, steps, i, got[i], gotf[i],
                                        p[i]);
                        }
                    }
                }
    CHECK(bad == 0, "Adam against the textbook, f64: %d params of %d differ", bad, cases * N);
    CHECK(bad_state == 0, "Adam's moments against the textbook: %d differ", bad_state);
    CHECK(bad_f32 == 0, "Adam against the textbook, f32: %d params of %d differ", bad_f32, cases * N);
    printf("Adam, %d runs against the textbook: worst error f64 %.1e, f32 %.1e\n", cases, worst, worst_f32);
}

/* SGD: p -= lr g, the same bits in f64, and in f32 with lr rounded to f32. */
static void test_sgd_formula(void) {
    static const double lrs[] = {1e-3, 0.1, 0.7, 2.5};
    for (size_t a = 0; a < sizeof lrs / sizeof *lrs; a++) {
        RtOptimizer o = {.kind = RT_SGD, .lr = lrs[a]};
        EXPECT(rt_opt_state_count(&o, N) == 0);
        double p[N], want[N], state[2 * N];
        float pf[N], wantf[N], statef[2 * N];
        run(&o, T, p, state, pf, statef);
        for (int i = 0; i < N; i++) {
            want[i] = p0(i);
            wantf[i] = (float)p0(i);
            for (int t = 1; t <= T; t++) {
                want[i] -= o.lr * grad(t, i);
                wantf[i] -= (float)o.lr * (float)grad(t, i);
            }
        }
        CHECK(memcmp(p, want, sizeof p) == 0, "SGD lr %g, f64: p -= lr g", o.lr);
        CHECK(memcmp(pf, wantf, sizeof pf) == 0, "SGD lr %g, f32: p -= lr g", o.lr);
    }
}

/* torch.optim's results for P0 and G: the params after step 1 and step T,
 * Adam's moments (exp_avg, exp_avg_sq) after step T, in float64; the
 * params after step T in float32. */
typedef struct {
    RtOptimizer o;
    double p1[N], pT[N], m[N], v[N];
    float pT32[N];
} Recorded;

/* recorded: the output of gen_optim_reference.py, */
/* recorded with PyTorch 1.13.0a0 by test/unit/gen_optim_reference.py */
static const Recorded recorded[] = {
    {{.kind = RT_ADAM, .lr = 0.001, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-08},
     {-0.87400000016000001, -0.62599999998, -0.375, -0.12400002047958057,
      0.12400000002, 0.37599999989333333, 0.62404025463810386, 0.87599999996},
     {-0.87140658350627698, -0.62951041868863433, -0.37597243053001361, -0.11971053408469831,
      0.11984687430310198, 0.37733913261578711, 0.6268790686831115, 0.87380077484622254},
     {-0.044522091681249994, 0.11204910544999999, -0.015257976749999989, -0.00010197277058105467,
      0.29514482644999995, -0.0057512305218749993, -4.8428806805610655e-08, 0.05841027289999999},
     {0.00024894781643756389, 0.001228766328431089, 0.0033598495659998965, 1.1719764635037306e-09,
      0.01592369617112098, 6.1260476274991877e-05, 9.4753524829796168e-16, 0.001042526342050221},
     {-0.87140655517578125, -0.62951034307479858, -0.3759724497795105, -0.1197105273604393,
      0.1198468804359436, 0.37733915448188782, 0.62687903642654419, 0.87380075454711914}},
    {{.kind = RT_ADAM, .lr = 0.1, .beta1 = 0.3, .beta2 = 0.9, .eps = 1e-08},
     {-0.77500001599999746, -0.72499999800000003, -0.375, -0.025002047958057827,
      0.025000001999999966, 0.47499998933333448, 0.52902546381038262, 0.9749999960000002},
     {-0.4885070369368133, -1.0390509742726759, -0.40508074365938745, 0.28877428191432208,
      -0.30942020404311044, 0.48478691552367786, 0.82687722303055067, 0.64268577830319273},
     {-0.090826411506249982, 0.37050319355, -0.11330712224999999, -0.00030649378166503903,
      0.27338280304999996, -0.047212592634374995, 1.1492220857143402e-07, -0.063851108650000002},
     {0.01661017215976562, 0.080818764943749996, 0.21742616868749998, 7.7984226694703089e-08,
      1.0020191112249999, 0.0041152661622070302, 5.957354889005728e-14, 0.070269927446874991},
     {-0.48850703239440918, -1.0390510559082031, -0.40508073568344116, 0.2887742817401886,
      -0.30942019820213318, 0.48478686809539795, 0.82687723636627197, 0.64268583059310913}},
    {{.kind = RT_ADAM, .lr = 0.05, .beta1 = 0.5, .beta2 = 0.99, .eps = 1e-06},
     {-0.82500079998720022, -0.67499990000020005, -0.375, -0.07510219071341892,
      0.075000099999800007, 0.4249994666723555, 0.61537407129039812, 0.92499980000079995},
     {-0.67879580070561552, -0.83241899139227538, -0.39799306346484209, 0.094466725014898653,
      -0.10495191441000111, 0.4430602337348562, 0.65556392629979299, 0.76763720019105797},
     {-0.08917236328125, 0.28564453125, -0.10693359375, -0.00022673606872558594,
      0.28564453125, -0.026824951171875, 3.4226104617118835e-08, 0.017578125},
     {0.0023970006679964145, 0.011797303544589528, 0.032267790575071391, 1.1263671893791884e-08,
      0.15254324434439845, 0.0005895665995422337, 9.0729490203063291e-15, 0.010043375321621622},
     {-0.67879587411880493, -0.83241909742355347, -0.39799308776855469, 0.094466723501682281,
      -0.10495191067457199, 0.44306018948554993, 0.65556395053863525, 0.76763719320297241}},
    {{.kind = RT_ADAM, .lr = 0.2, .beta1 = 0.7, .beta2 = 0.5, .eps = 0.001},
     {-0.67814960629921262, -0.82460079840319356, -0.375, -0.059383202099737534,
      -0.074600798403193613, 0.57288918205804751, 0.62495232765015363, 1.0742031872509961},
     {-0.15666894828114747, -1.5024222234527236, -0.48023673328323213, 0.13598161959962515,
      -0.82826304536421524, 0.75569521395997685, 0.62516020771463543, 0.57114732259589407},
     {-0.077988446006250003, 0.20981357654999999, -0.069015665250000011, -0.00017119701555175782,
      0.34784490705000004, -0.013459171134375001, -3.1590025162696823e-08, 0.067632374849999982},
     {0.022281646728515625, 0.15618896484375, 0.2406005859375, 1.5532714314758778e-07,
      0.998291015625, 0.0075273513793945312, 6.8944849829222221e-14, 0.109222412109375},
     {-0.15666887164115906, -1.5024222135543823, -0.48023667931556702, 0.13598161935806274,
      -0.8282630443572998, 0.7556951642036438, 0.62516021728515625, 0.57114732265472412}},
    {{.kind = RT_ADAM, .lr = 0.01, .beta1 = 0.0, .beta2 = 0.0, .eps = 0.1},
     {-0.87115384615384617, -0.6333333333333333, -0.375, -0.12495140913508261,
      0.11666666666666667, 0.37983870967741934, 0.62499997615819891, 0.88214285714285712},
     {-0.85485347985347993, -0.65357142857142847, -0.375, -0.12484212390462078,
      0.090367965367965403, 0.37983870967741934, 0.62500008344600522, 0.86190476190476195},
     {-0.0625, 0.5, 0, -0.00048828125,
      0.5, -0.09375, 2.384185791015625e-07, -0.25},
     {0.00390625, 0.25, 0, 2.384185791015625e-07,
      0.25, 0.0087890625, 5.6843418860808015e-14, 0.0625},
     {-0.85485351085662842, -0.6535714864730835, -0.375, -0.12484212964773178,
      0.090367965400218964, 0.37983870506286621, 0.62500017881393433, 0.86190468072891235}},
    {{.kind = RT_ADAM, .lr = 1.0, .beta1 = 0.95, .beta2 = 0.9999, .eps = 0.0001},
     {0.12340255591054305, -1.6248000399920017, -0.375, 0.70501328021248333,
      -0.87480003999200162, 1.3739344698987748, 0.62262148503057824, 1.8746001599360256},
     {2.6572473010823843, -5.220739330884399, -1.4229803265957768, 4.1473362417796125,
      -5.1032743392591566, 2.8869678424313818, 0.63187554166998516, -0.15144922561641272},
     {-0.026233399209832781, 0.066714412561962935, -0.0046178316489257883, -6.2895992907714896e-05,
      0.19139586708295908, -0.0035619035355743426, -3.2044746998255167e-08, 0.035910268452905292},
     {2.4989455632421899e-05, 0.00012338126635626337, 0.00033734816211905728, 1.1766688541783328e-10,
      0.0015992351964669027, 6.1497077430368387e-06, 9.5166695741224053e-17, 0.00010464391698262929},
     {2.6572473049163818, -5.2207393646240234, -1.4229804277420044, 4.147336483001709,
      -5.1032748222351074, 2.8869674205780029, 0.63187545537948608, -0.15144959092140198}},
    {{.kind = RT_ADAM, .lr = 0.03, .beta1 = 0.1, .beta2 = 0.6, .eps = 0.01},
     {-0.84913793103448276, -0.65441176470588236, -0.375, -0.12360335195530726,
      0.095588235294117641, 0.40210843373493976, 0.62499928476131528, 0.90384615384615385},
     {-0.78070607271237646, -0.74396642489536324, -0.38239820004063468, -0.12042625880673626,
      0.0054804262453456241, 0.39851527129728642, 0.62500251109201888, 0.80998317897659311},
     {-0.077702702681249999, 0.45945945945, -0.060810810749999999, -0.00041899809968261721,
      0.37837837845, -0.076013513521875006, 1.9975610682964325e-07, -0.1790540541},
     {0.023769462400000003, 0.14337223360000001, 0.27273369600000003, 1.4214914855957031e-07,
      1.1576006656, 0.0071378694000000017, 7.45866767829284e-14, 0.11041867840000003},
     {-0.78070604801177979, -0.74396640062332153, -0.38239821791648865, -0.12042625248432159,
      0.0054804272949695587, 0.39851531386375427, 0.62500250339508057, 0.80998313426971436}},
    {{.kind = RT_SGD, .lr = 0.1, .beta1 = 0, .beta2 = 0, .eps = 0},
     {-0.86875000000000002, -0.67500000000000004, -0.375, -0.124951171875,
      0.074999999999999997, 0.38437500000000002, 0.62499997615814207, 0.90000000000000002},
     {-0.81249999999999989, -0.78749999999999998, -0.375, -0.12484130859375002,
      -0.37500000000000006, 0.38437500000000002, 0.6250000834465026, 0.78750000000000009},
     {0, 0, 0, 0,
      0, 0, 0, 0},
     {0, 0, 0, 0,
      0, 0, 0, 0},
     {-0.81249994039535522, -0.78750008344650269, -0.375, -0.12484131008386612,
      -0.37500002980232239, 0.38437500596046448, 0.62500017881393433, 0.78749990463256836}},
    {{.kind = RT_SGD, .lr = 2.5, .beta1 = 0, .beta2 = 0, .eps = 0},
     {-0.71875, -1.875, -0.375, -0.123779296875,
      -1.125, 0.609375, 0.62499940395355225, 1.5},
     {0.6875, -4.6875, -0.375, -0.12103271484375,
      -12.375, 0.609375, 0.62500208616256714, -1.3125},
     {0, 0, 0, 0,
      0, 0, 0, 0},
     {0, 0, 0, 0,
      0, 0, 0, 0},
     {0.6875, -4.6875, -0.375, -0.12103271484375,
      -12.375, 0.609375, 0.62500208616256714, -1.3125}},
};
/* end of recorded */

/* PyTorch 1.13 forms Adam's first moment as b1 m + (1 - b1) g where the
 * runtime uses lerp (as later versions do), so the two agree to rounding,
 * not bit for bit: within 1e-14 of (1 + |x|) in f64, and 1e-6 of
 * (1 + |p| + lr T) in f32. */
static void test_torch(void) {
    for (size_t r = 0; r < sizeof recorded / sizeof *recorded; r++) {
        const Recorded *w = &recorded[r];
        const RtOptimizer *o = &w->o;
        double p1[N], p[N], state[2 * N];
        float pf[N], statef[2 * N];
        run(o, 1, p1, state, pf, statef);
        run(o, T, p, state, pf, statef);
        double worst = 0, worst_state = 0, worst_f32 = 0;
        for (int i = 0; i < N; i++) {
            worst = fmax(worst, fabs(p1[i] - w->p1[i]) / (1 + fabs(w->p1[i])));
            worst = fmax(worst, fabs(p[i] - w->pT[i]) / (1 + fabs(w->pT[i])));
            worst_f32 = fmax(worst_f32, fabs(pf[i] - w->pT32[i]) / (1 + fabs(w->pT[i]) + o->lr * T));
            if (o->kind == RT_ADAM) {
                worst_state = fmax(worst_state, fabs(state[i] - w->m[i]) / (fabs(w->m[i]) + SCALE[i]));
                worst_state = fmax(worst_state, fabs(state[N + i] - w->v[i]) / (fabs(w->v[i]) + SCALE[i] * SCALE[i]));
            }
        }
        const char *name = o->kind == RT_ADAM ? "Adam" : "SGD";
        CHECK(worst <= 1e-14, "torch.optim.%s lr %g beta1 %g beta2 %g eps %g, f64: error %.3g", name, o->lr, o->beta1,
              o->beta2, o->eps, worst);
        CHECK(worst_state <= 1e-14, "torch.optim.%s lr %g beta1 %g beta2 %g eps %g: moments differ by %.3g", name,
              o->lr, o->beta1, o->beta2, o->eps, worst_state);
        CHECK(worst_f32 <= 1e-6, "torch.optim.%s lr %g beta1 %g beta2 %g eps %g, f32: error %.3g", name, o->lr,
              o->beta1, o->beta2, o->eps, worst_f32);
        printf("torch.optim.%-4s lr %-5g beta1 %-4g beta2 %-6g eps %-6g error f64 %.1e, moments %.1e, f32 %.1e\n",
               name, o->lr, o->beta1, o->beta2, o->eps, worst, worst_state, worst_f32);
    }
}

int main(void) {
    test_adam_formula();
    test_sgd_formula();
    test_torch();
    return check_summary();
}
