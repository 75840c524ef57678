/* Runtime tests, part 1: random numbers, initialisation, optimisers and the
 * sinusoid task source.  Statistical checks use fixed seeds, so they are
 * deterministic; their tolerances sit near five standard errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"

#include "check.h"

enum { DRAWS = 1000000 };

/* ------------------------------------------------------------------------
 * Random numbers */

/* Golden values computed once with an independent Python transcription of
 * splitmix64.c and xoshiro256starstar.c from prng.di.unimi.it (rt_rng_stream
 * as h = sm(sm(seed) ^ stream)).  The splitmix64 outputs for seed 0 are the
 * published ones. */
static void test_rng_golden(void)
{
    static const uint64_t seed0[] = {
        UINT64_C(0x99ec5f36cb75f2b4), UINT64_C(0xbf6e1f784956452a), UINT64_C(0x1a5f849d4933e6e0)};
    static const uint64_t seed42[] = {
        UINT64_C(0x15780b2e0c2ec716), UINT64_C(0x6104d9866d113a7e), UINT64_C(0xae17533239e499a1)};
    static const uint64_t stream42_7[] = {
        UINT64_C(0x0719e15cf3d4342f), UINT64_C(0x40efa5d3e1980cd0), UINT64_C(0x91756e0af06688e2)};
    static const uint64_t stream42_0[] = {
        UINT64_C(0xc986fd807e5b8ab5), UINT64_C(0xe071ea15f19664d1), UINT64_C(0x728624137f1e7291)};
    RtRng r;
    rt_rng_seed(&r, 0);
    EXPECT(r.s[0] == UINT64_C(0xe220a8397b1dcdaf) && r.s[1] == UINT64_C(0x6e789e6aa1b965f4) &&
          r.s[2] == UINT64_C(0x06c45d188009454f) && r.s[3] == UINT64_C(0xf88bb8a8724c81ec));
    for (int i = 0; i < 3; i++)
        EXPECT(rt_rng_u64(&r) == seed0[i]);
    rt_rng_seed(&r, 42);
    for (int i = 0; i < 3; i++)
        EXPECT(rt_rng_u64(&r) == seed42[i]);
    rt_rng_stream(&r, 42, 7);
    for (int i = 0; i < 3; i++)
        EXPECT(rt_rng_u64(&r) == stream42_7[i]);
    rt_rng_stream(&r, 42, 0);
    for (int i = 0; i < 3; i++)
        EXPECT(rt_rng_u64(&r) == stream42_0[i]);
}

static bool same_sequence(RtRng a, RtRng b, int n)
{
    for (int i = 0; i < n; i++)
        if (rt_rng_u64(&a) != rt_rng_u64(&b))
            return false;
    return true;
}

static bool shares_any(RtRng a, RtRng b, int n)
{
    for (int i = 0; i < n; i++)
        if (rt_rng_u64(&a) == rt_rng_u64(&b))
            return true;
    return false;
}

static void test_rng_determinism(void)
{
    RtRng a, b;
    rt_rng_seed(&a, 123);
    rt_rng_seed(&b, 123);
    EXPECT(same_sequence(a, b, 1000));
    rt_rng_seed(&b, 124);
    EXPECT(!shares_any(a, b, 1000));

    /* A stream is a function of (seed, stream) alone. */
    rt_rng_stream(&a, 9, 1000);
    RtRng other;
    rt_rng_stream(&other, 9, 999);
    for (int i = 0; i < 12345; i++)
        rt_rng_u64(&other);
    rt_rng_stream(&b, 9, 1000);
    EXPECT(same_sequence(a, b, 1000));

    /* Neighbouring streams, and the same stream of neighbouring seeds, differ. */
    int distinct = 1;
    for (uint64_t s = 0; s < 64; s++) {
        rt_rng_stream(&a, 5, s);
        rt_rng_stream(&b, 5, s + 1);
        distinct &= !shares_any(a, b, 64);
        rt_rng_stream(&b, 6, s);
        distinct &= !shares_any(a, b, 64);
        rt_rng_seed(&b, 5);
        distinct &= !shares_any(a, b, 64);
    }
    EXPECT(distinct);

    /* Normals and uniforms keep no state outside the generator. */
    rt_rng_seed(&a, 77);
    b = a;
    double n1 = rt_rng_normal(&a);
    double n2 = rt_rng_normal(&b);
    EXPECT(n1 == n2);
    EXPECT(memcmp(&a, &b, sizeof a) == 0);
}

static void test_rng_uniform(void)
{
    RtRng r;
    rt_rng_seed(&r, 2024);
    double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < DRAWS; i++) {
        double u = rt_rng_uniform(&r, -2.0, 3.0);
        double z = (u + 2.0) / 5.0 - 0.5;  /* U[-1/2, 1/2) */
        sum += z;
        sq += z * z;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    EXPECT(lo >= -2.0 && hi < 3.0);
    EXPECT(lo < -2.0 + 1e-4 && hi > 3.0 - 1e-4);
    /* mean 0 (se 2.9e-4), variance 1/12 (se 7.5e-5) */
    CHECK_NEAR(sum / DRAWS, 0.0, 1.5e-3);
    CHECK_NEAR(sq / DRAWS, 1.0 / 12.0, 4e-4);

    /* The top of the range is excluded even where rounding would give it. */
    double top = nextafter(1.0, 2.0);
    int ok = 1;
    for (int i = 0; i < 1000; i++)
        ok &= rt_rng_uniform(&r, 1.0, top) == 1.0;
    EXPECT(ok);
    EXPECT(rt_rng_uniform(&r, 4.0, 4.0) == 4.0);
}

static void test_rng_normal(void)
{
    RtRng r;
    rt_rng_seed(&r, 31337);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    long inside = 0;
    for (int i = 0; i < DRAWS; i++) {
        double z = rt_rng_normal(&r);
        m1 += z;
        m2 += z * z;
        m3 += z * z * z;
        m4 += z * z * z * z;
        inside += fabs(z) < 1.0;
    }
    m1 /= DRAWS, m2 /= DRAWS, m3 /= DRAWS, m4 /= DRAWS;
    CHECK_NEAR(m1, 0.0, 5e-3);                  /* se 1e-3 */
    CHECK_NEAR(m2, 1.0, 7e-3);                  /* se 1.4e-3 */
    CHECK_NEAR(m3, 0.0, 1.2e-2);                /* se 2.4e-3 */
    CHECK_NEAR(m4, 3.0, 5e-2);                  /* se 9.8e-3 */
    CHECK_NEAR((double)inside / DRAWS, 0.682689492137086, 2.5e-3);
}

static void test_rng_below(void)
{
    RtRng r;
    rt_rng_seed(&r, 99);
    EXPECT(rt_rng_below(&r, 0) == 0);
    EXPECT(rt_rng_below(&r, 1) == 0);

    /* Chi-square over 7 bins, 700000 draws: 6 degrees of freedom, the
     * 99.99% quantile is 27.9. */
    long count[7] = {0};
    int in_range = 1;
    for (int i = 0; i < 700000; i++) {
        uint32_t x = rt_rng_below(&r, 7);
        in_range &= x < 7;
        if (x < 7)
            count[x]++;
    }
    EXPECT(in_range);
    double chi2 = 0;
    for (int k = 0; k < 7; k++)
        chi2 += (count[k] - 100000.0) * (count[k] - 100000.0) / 100000.0;
    EXPECT(chi2 < 27.9);

    /* n = 3 * 2^30: a plain x % n would put half the draws below n / 3,
     * since 2^32 mod n = n / 3.  An unbiased draw puts a third there. */
    uint32_t n = UINT32_C(3) << 30;
    long below = 0;
    in_range = 1;
    for (int i = 0; i < DRAWS; i++) {
        uint32_t x = rt_rng_below(&r, n);
        in_range &= x < n;
        below += x < n / 3;
    }
    EXPECT(in_range);
    CHECK_NEAR((double)below / DRAWS, 1.0 / 3.0, 2.5e-3);   /* se 4.7e-4 */

    uint32_t big = UINT32_MAX;
    in_range = 1;
    for (int i = 0; i < 1000; i++)
        in_range &= rt_rng_below(&r, big) < big;
    EXPECT(in_range);
}

/* ------------------------------------------------------------------------
 * Initialisation */

static void moments(const double *x, size_t n, double *mean, double *std, double *absmax)
{
    double s = 0, sq = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        if (fabs(x[i]) > mx) mx = fabs(x[i]);
    }
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++)
        sq += (x[i] - *mean) * (x[i] - *mean);
    *std = sqrt(sq / (double)n);
    *absmax = mx;
}

static double buf[1 << 18];
static float fbuf[1 << 18];

static void test_init_he(void)
{
    static const struct { int rank; int dim[4]; double fan_in; } cases[] = {
        {2, {256, 512}, 512},
        {4, {64, 32, 3, 3}, 288},
        {1, {100000}, 100000},
        {2, {40, 1}, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        RtInit init = {.kind = RT_INIT_HE, .rank = cases[c].rank, .dim = cases[c].dim};
        size_t n = 1;
        for (int i = 0; i < init.rank; i++)
            n *= (size_t)init.dim[i];
        RtRng r;
        rt_rng_seed(&r, 5 + c);
        rt_init(&init, &r, RT_F64, buf);
        double mean, std, mx, want = sqrt(2.0 / cases[c].fan_in);
        moments(buf, n, &mean, &std, &mx);
        /* relative se of a sample std is 1/sqrt(2n) */
        CHECK_NEAR(std / want, 1.0, 5.0 / sqrt(2.0 * (double)n));
        CHECK_NEAR(mean / want, 0.0, 5.0 / sqrt((double)n));
    }
}

static void test_init_glorot(void)
{
    static const struct { int rank; int dim[4]; double fan_in, fan_out; } cases[] = {
        {2, {300, 200}, 200, 300},
        {4, {16, 8, 3, 3}, 72, 144},
        {1, {50000}, 50000, 50000},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        RtInit init = {.kind = RT_INIT_GLOROT, .rank = cases[c].rank, .dim = cases[c].dim};
        size_t n = 1;
        for (int i = 0; i < init.rank; i++)
            n *= (size_t)init.dim[i];
        RtRng r;
        rt_rng_seed(&r, 50 + c);
        rt_init(&init, &r, RT_F64, buf);
        double limit = sqrt(6.0 / (cases[c].fan_in + cases[c].fan_out));
        double mean, std, mx;
        moments(buf, n, &mean, &std, &mx);
        EXPECT(mx < limit);
        EXPECT(mx > limit * (1.0 - 20.0 / (double)n));
        /* U(-l, l) has std l / sqrt(3); relative se of the std ~ 0.75/sqrt(n) */
        CHECK_NEAR(std / (limit / sqrt(3.0)), 1.0, 4.0 / sqrt((double)n));
    }
}

static void test_init_simple(void)
{
    int dim[] = {3, 4};
    RtRng r, r2;
    RtInit init = {.kind = RT_INIT_ZEROS, .rank = 2, .dim = dim};
    int ok = 1;
    for (int i = 0; i < 13; i++) buf[i] = 9.0;
    rt_rng_seed(&r, 1);
    rt_init(&init, &r, RT_F64, buf);
    for (int i = 0; i < 12; i++) ok &= buf[i] == 0.0;
    EXPECT(ok && buf[12] == 9.0);

    init.kind = RT_INIT_ONES;
    rt_init(&init, &r, RT_F32, fbuf);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= fbuf[i] == 1.0f;
    EXPECT(ok);

    init.kind = RT_INIT_CONST;
    init.a = -0.25;
    rt_init(&init, &r, RT_F64, buf);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= buf[i] == -0.25;
    EXPECT(ok);

    /* A scalar (rank 0) is one element. */
    fbuf[1] = 7.0f;
    init.rank = 0;
    init.a = 3.5;
    rt_init(&init, &r, RT_F32, fbuf);
    EXPECT(fbuf[0] == 3.5f && fbuf[1] == 7.0f);

    int big[] = {400, 500};
    init = (RtInit){.kind = RT_INIT_UNIFORM, .a = 2.0, .b = 2.5, .rank = 2, .dim = big};
    rt_init(&init, &r, RT_F64, buf);
    double mean, std, mx, lo = INFINITY;
    moments(buf, 200000, &mean, &std, &mx);
    for (int i = 0; i < 200000; i++) if (buf[i] < lo) lo = buf[i];
    EXPECT(lo >= 2.0 && mx < 2.5);
    CHECK_NEAR(mean, 2.25, 5 * 0.5 / sqrt(12.0 * 200000));

    init = (RtInit){.kind = RT_INIT_NORMAL, .a = 0.01, .rank = 2, .dim = big};
    rt_init(&init, &r, RT_F64, buf);
    moments(buf, 200000, &mean, &std, &mx);
    CHECK_NEAR(std, 0.01, 0.01 * 5 / sqrt(2.0 * 200000));

    /* f32 draws are the f64 draws rounded: the element type does not
     * change the stream. */
    init = (RtInit){.kind = RT_INIT_HE, .rank = 2, .dim = dim};
    rt_rng_seed(&r, 8);
    rt_rng_seed(&r2, 8);
    rt_init(&init, &r, RT_F64, buf);
    rt_init(&init, &r2, RT_F32, fbuf);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= fbuf[i] == (float)buf[i];
    EXPECT(ok);
    EXPECT(memcmp(&r, &r2, sizeof r) == 0);
}

/* ------------------------------------------------------------------------
 * Optimisers */

enum { NP = 4 };
static const double P0[NP] = {0.5, -1.0, 2.0, 0.0};
static const double G[3][NP] = {
    {0.1, -2.0, 0.0, 1e-3},
    {-0.3, -1.0, 0.5, 1e-3},
    {0.2, 4.0, -0.5, -2e-3},
};

/* Three Adam steps written out by hand from the update rule
 *   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
 *   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
static void adam_reference(const RtOptimizer *o, int i, double *p, double *m, double *v)
{
    double b1 = o->beta1, b2 = o->beta2, lr = o->lr, eps = o->eps;
    double x = P0[i];
    /* t = 1 */
    double m1 = (1 - b1) * G[0][i];
    double v1 = (1 - b2) * G[0][i] * G[0][i];
    x -= lr * (m1 / (1 - b1)) / (sqrt(v1 / (1 - b2)) + eps);
    /* t = 2 */
    double m2 = b1 * m1 + (1 - b1) * G[1][i];
    double v2 = b2 * v1 + (1 - b2) * G[1][i] * G[1][i];
    x -= lr * (m2 / (1 - b1 * b1)) / (sqrt(v2 / (1 - b2 * b2)) + eps);
    /* t = 3 */
    double m3 = b1 * m2 + (1 - b1) * G[2][i];
    double v3 = b2 * v2 + (1 - b2) * G[2][i] * G[2][i];
    x -= lr * (m3 / (1 - b1 * b1 * b1)) / (sqrt(v3 / (1 - b2 * b2 * b2)) + eps);
    *p = x, *m = m3, *v = v3;
}

static void test_adam(void)
{
    RtOptimizer o = {.kind = RT_ADAM, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    EXPECT(rt_opt_state_count(&o, NP) == 2 * NP);

    double p[NP], state[2 * NP] = {0};
    float pf[NP], gf[NP], statef[2 * NP] = {0};
    memcpy(p, P0, sizeof p);
    for (int i = 0; i < NP; i++)
        pf[i] = (float)P0[i];
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < NP; i++)
            gf[i] = (float)G[t - 1][i];
        rt_opt_step(&o, RT_F64, NP, p, G[t - 1], state, t);
        rt_opt_step(&o, RT_F32, NP, pf, gf, statef, t);
        if (t == 1) {
            /* Adam's first step moves every parameter with a gradient by
             * lr against its sign (up to eps). */
            CHECK_NEAR(p[0], P0[0] - o.lr, 1e-9);
            CHECK_NEAR(p[1], P0[1] + o.lr, 1e-9);
            EXPECT(p[2] == P0[2]);
        }
    }
    for (int i = 0; i < NP; i++) {
        double rp, rm, rv;
        adam_reference(&o, i, &rp, &rm, &rv);
        CHECK_NEAR(p[i], rp, 1e-14);
        CHECK_NEAR(state[i], rm, 1e-15);                    /* [m..., */
        CHECK_NEAR(state[NP + i], rv, 1e-17);               /*  v...] */
        CHECK_NEAR(pf[i], rp, 3e-7);
        /* m and v are sums of rounded gradients: f32 error scales with |g| */
        double gmax = fmax(fabs(G[0][i]), fmax(fabs(G[1][i]), fabs(G[2][i])));
        CHECK_NEAR(statef[i], rm, 1e-6 * (fabs(rm) + gmax));
        CHECK_NEAR(statef[NP + i], rv, 1e-6 * (fabs(rv) + gmax * gmax));
    }

    /* A different lr and betas, checked the same way. */
    RtOptimizer o2 = {.kind = RT_ADAM, .lr = 0.3, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-3};
    double state2[2 * NP] = {0};
    memcpy(p, P0, sizeof p);
    for (int t = 1; t <= 3; t++)
        rt_opt_step(&o2, RT_F64, NP, p, G[t - 1], state2, t);
    for (int i = 0; i < NP; i++) {
        double rp, rm, rv;
        adam_reference(&o2, i, &rp, &rm, &rv);
        CHECK_NEAR(p[i], rp, 1e-14);
    }
}

static void test_sgd(void)
{
    RtOptimizer o = {.kind = RT_SGD, .lr = 0.125};
    EXPECT(rt_opt_state_count(&o, 1000) == 0);
    double p[NP];
    float pf[NP], gf[NP];
    memcpy(p, P0, sizeof p);
    for (int i = 0; i < NP; i++)
        pf[i] = (float)P0[i], gf[i] = (float)G[0][i];
    rt_opt_step(&o, RT_F64, NP, p, G[0], NULL, 1);
    rt_opt_step(&o, RT_F32, NP, pf, gf, NULL, 1);
    int ok = 1;
    for (int i = 0; i < NP; i++) {
        ok &= p[i] == P0[i] - 0.125 * G[0][i];
        ok &= pf[i] == (float)P0[i] - 0.125f * gf[i];
    }
    EXPECT(ok);
}

/* ------------------------------------------------------------------------
 * Sinusoid tasks */

static const RtSinusoid SINE = {
    .amp_lo = 0.1, .amp_hi = 5.0, .phase_lo = 0.0, .phase_hi = 3.141592653589793,
    .x_lo = -5.0, .x_hi = 5.0, .k = 10, .q = 15,
};

static void test_sinusoid_values(void)
{
    double sx[10], sy[10], qx[15], qy[15];
    float fsx[10], fsy[10], fqx[15], fqy[15];
    double amp_min = INFINITY, amp_max = -INFINITY, ph_min = INFINITY, ph_max = -INFINITY;
    int in_range = 1, exact = 1, exact32 = 1;
    for (uint64_t task = 0; task < 2000; task++) {
        rt_sinusoid_task(&SINE, 17, task, RT_F64, sx, sy, qx, qy);
        rt_sinusoid_task(&SINE, 17, task, RT_F32, fsx, fsy, fqx, fqy);
        /* The documented draw order: amplitude, phase, then the inputs. */
        RtRng r;
        rt_rng_stream(&r, 17, task);
        double amp = rt_rng_uniform(&r, SINE.amp_lo, SINE.amp_hi);
        double phase = rt_rng_uniform(&r, SINE.phase_lo, SINE.phase_hi);
        if (amp < amp_min) amp_min = amp;
        if (amp > amp_max) amp_max = amp;
        if (phase < ph_min) ph_min = phase;
        if (phase > ph_max) ph_max = phase;
        for (int i = 0; i < 25; i++) {
            double x = i < 10 ? sx[i] : qx[i - 10], y = i < 10 ? sy[i] : qy[i - 10];
            float xf = i < 10 ? fsx[i] : fqx[i - 10], yf = i < 10 ? fsy[i] : fqy[i - 10];
            in_range &= x >= -5.0 && x < 5.0 && fabs(y) <= amp;
            exact &= y == amp * sin(x - phase);
            exact32 &= xf == (float)x && yf == (float)(amp * sin((double)xf - phase));
        }
    }
    EXPECT(in_range);
    EXPECT(exact);
    EXPECT(exact32);
    EXPECT(amp_min >= 0.1 && amp_min < 0.2 && amp_max < 5.0 && amp_max > 4.9);
    EXPECT(ph_min >= 0.0 && ph_min < 0.05 && ph_max < 3.141592653589793 && ph_max > 3.09);
}

static void test_sinusoid_reproducible(void)
{
    double a[4][15] = {{0}}, b[4][15] = {{0}};
    rt_sinusoid_task(&SINE, 3, 5, RT_F64, a[0], a[1], a[2], a[3]);
    rt_sinusoid_task(&SINE, 3, 4, RT_F64, b[0], b[1], b[2], b[3]);   /* another task between */
    rt_sinusoid_task(&SINE, 3, 5, RT_F64, b[0], b[1], b[2], b[3]);
    EXPECT(memcmp(a, b, sizeof a) == 0);

    rt_sinusoid_task(&SINE, 3, 6, RT_F64, b[0], b[1], b[2], b[3]);
    EXPECT(memcmp(a[0], b[0], 10 * sizeof(double)) != 0);
    rt_sinusoid_task(&SINE, 4, 5, RT_F64, b[0], b[1], b[2], b[3]);
    EXPECT(memcmp(a[0], b[0], 10 * sizeof(double)) != 0);

    /* The RtSampleFn adapter gives the same bytes. */
    RtSinusoidSource src = {.sinusoid = SINE, .real = RT_F64};
    rt_sinusoid_sample(&src, 3, 5, b[0], b[1], b[2], b[3]);
    EXPECT(memcmp(a, b, sizeof a) == 0);
    float fa[4][15] = {{0}}, fb[4][15] = {{0}};
    src.real = RT_F32;
    rt_sinusoid_sample(&src, 3, RT_EVAL_TASK | 2, fa[0], fa[1], fa[2], fa[3]);
    rt_sinusoid_task(&SINE, 3, RT_EVAL_TASK | 2, RT_F32, fb[0], fb[1], fb[2], fb[3]);
    EXPECT(memcmp(fa, fb, sizeof fa) == 0);
}

int main(void)
{
    test_rng_golden();
    test_rng_determinism();
    test_rng_uniform();
    test_rng_normal();
    test_rng_below();
    test_init_he();
    test_init_glorot();
    test_init_simple();
    test_adam();
    test_sgd();
    test_sinusoid_values();
    test_sinusoid_reproducible();
    return check_summary();
}
