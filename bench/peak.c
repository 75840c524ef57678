/* The single-core peak of f32 multiply-adds on this CPU, measured: a loop
 * of register-resident fused multiply-adds at the widest vector width the
 * compiler targets (-march=native), on enough independent accumulators to
 * keep every FMA pipe busy through its latency.  Prints GFLOP/s (a
 * multiply-add counts two).  bench/run builds it with `cc -O2
 * -march=native`. */
#include <stdio.h>
#include <time.h>

#include <immintrin.h>

#define ACC 12          /* independent chains: >= pipes x latency (2 x 4 on Zen 3) */
#define ITERS 10000000L

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SPLAT(x) _mm512_set1_ps(x)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
static float first(vec v) { return _mm512_cvtss_f32(v); }
#elif defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define SPLAT(x) _mm256_set1_ps(x)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float first(vec v) { return _mm256_cvtss_f32(v); }
#else
#error "bench/peak.c needs a CPU with FMA (build with -march=native)"
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ITERS rounds of ACC multiply-adds, the accumulators named one by one so
 * that they stay in registers; returns something of every chain so that
 * none can be left out. */
static float run(float seed)
{
    vec a = SPLAT(0.999999f), b = SPLAT(1e-7f);
    vec c0 = SPLAT(seed), c1 = SPLAT(seed + 1), c2 = SPLAT(seed + 2), c3 = SPLAT(seed + 3);
    vec c4 = SPLAT(seed + 4), c5 = SPLAT(seed + 5), c6 = SPLAT(seed + 6), c7 = SPLAT(seed + 7);
    vec c8 = SPLAT(seed + 8), c9 = SPLAT(seed + 9), c10 = SPLAT(seed + 10), c11 = SPLAT(seed + 11);
    for (long n = 0; n < ITERS; n++) {
        c0 = FMA(c0, a, b), c1 = FMA(c1, a, b), c2 = FMA(c2, a, b), c3 = FMA(c3, a, b);
        c4 = FMA(c4, a, b), c5 = FMA(c5, a, b), c6 = FMA(c6, a, b), c7 = FMA(c7, a, b);
        c8 = FMA(c8, a, b), c9 = FMA(c9, a, b), c10 = FMA(c10, a, b), c11 = FMA(c11, a, b);
        __asm__ volatile("" : "+x"(a));     /* keep the loop a loop */
    }
    return first(c0) + first(c1) + first(c2) + first(c3) + first(c4) + first(c5) + first(c6) +
           first(c7) + first(c8) + first(c9) + first(c10) + first(c11);
}

int main(void)
{
    double best = 0;
    float sink = 0;
    for (int r = 0; r < 10; r++) {
        double t0 = now();
        sink += run((float)r);
        double gflops = 2.0 * LANES * ACC * (double)ITERS / (now() - t0) * 1e-9;
        if (gflops > best)
            best = gflops;
    }
    printf("%.1f GFLOP/s f32, %d-bit vectors, %d accumulators (checksum %g)\n", best, 32 * LANES, ACC,
           (double)sink);
    return 0;
}
