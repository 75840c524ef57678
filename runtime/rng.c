/* Random numbers: xoshiro256** (Blackman & Vigna) seeded through splitmix64.
 * Every draw is a pure function of the generator state, so a stream's values
 * depend only on how it was seeded and how many numbers it has given. */
#include <math.h>

#include "runtime.h"

/* splitmix64: advances *x by the golden gamma and returns the mixed value. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* The mix is a bijection and the four counters differ, so at most one word
 * is zero: the state is never the all-zero one xoshiro cannot leave. */
void rt_rng_seed(RtRng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

/* The state seeds from h = mix(mix(seed) ^ stream): for a fixed seed, distinct
 * streams give distinct h (both steps are bijections), and no stream shares
 * numbers with another's beyond chance. */
void rt_rng_stream(RtRng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed;
    uint64_t y = splitmix64(&x) ^ stream;
    rt_rng_seed(r, splitmix64(&y));
}

uint64_t rt_rng_u64(RtRng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The top 53 bits as a double in [0, 1). */
static double unit(RtRng *r)
{
    return (double)(rt_rng_u64(r) >> 11) * 0x1.0p-53;
}

double rt_rng_uniform(RtRng *r, double lo, double hi)
{
    double x = lo + (hi - lo) * unit(r);
    /* lo + (hi - lo) * u can round up to hi when u is near 1. */
    if (x >= hi && hi > lo)
        x = nextafter(hi, lo);
    return x;
}

/* Box-Muller with the cosine branch only: the sine partner is dropped rather
 * than cached, so the generator state is the whole story. */
double rt_rng_normal(RtRng *r)
{
    double u1 = (double)((rt_rng_u64(r) >> 11) + 1) * 0x1.0p-53;   /* (0, 1] */
    double u2 = unit(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* Lemire's multiply-and-reject: the high word of x * n is uniform on [0, n)
 * once the low words below 2^32 mod n are rejected. */
uint32_t rt_rng_below(RtRng *r, uint32_t n)
{
    if (n == 0)
        return 0;
    uint64_t m = (rt_rng_u64(r) >> 32) * (uint64_t)n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (rt_rng_u64(r) >> 32) * (uint64_t)n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}
