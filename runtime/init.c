/* Parameter initialisation.  Elements are drawn in row-major order, one
 * generator draw (two for normals) per element. */
#include <math.h>

#include "runtime.h"

/* fan_in and fan_out of a weight shaped [out, in, k...]: receptive field
 * = prod(k...); fan_in = in * receptive, fan_out = out * receptive.  A
 * rank-1 tensor has fan_in = fan_out = dim[0]; a scalar has 1. */
static void fans(const RtInit *init, double *fan_in, double *fan_out)
{
    if (init->rank <= 0) {
        *fan_in = *fan_out = 1.0;
        return;
    }
    if (init->rank == 1) {
        *fan_in = *fan_out = init->dim[0];
        return;
    }
    double receptive = 1.0;
    for (int i = 2; i < init->rank; i++)
        receptive *= init->dim[i];
    *fan_in = init->dim[1] * receptive;
    *fan_out = init->dim[0] * receptive;
}

static size_t element_count(const RtInit *init)
{
    size_t n = 1;
    for (int i = 0; i < init->rank; i++)
        n *= (size_t)init->dim[i];
    return n;
}

static void store(RtReal real, void *out, size_t i, double x)
{
    if (real == RT_F32)
        ((float *)out)[i] = (float)x;
    else
        ((double *)out)[i] = x;
}

void rt_init(const RtInit *init, RtRng *r, RtReal real, void *out)
{
    size_t n = element_count(init);
    double fan_in, fan_out;
    fans(init, &fan_in, &fan_out);
    double std = 0.0, limit = 0.0;
    if (init->kind == RT_INIT_HE)
        std = fan_in > 0 ? sqrt(2.0 / fan_in) : 0.0;
    else if (init->kind == RT_INIT_NORMAL)
        std = init->a;
    else if (init->kind == RT_INIT_GLOROT)
        limit = fan_in + fan_out > 0 ? sqrt(6.0 / (fan_in + fan_out)) : 0.0;

    for (size_t i = 0; i < n; i++) {
        double x = 0.0;
        switch (init->kind) {
        case RT_INIT_ZEROS: x = 0.0; break;
        case RT_INIT_ONES: x = 1.0; break;
        case RT_INIT_CONST: x = init->a; break;
        case RT_INIT_HE:
        case RT_INIT_NORMAL: x = std * rt_rng_normal(r); break;
        case RT_INIT_GLOROT: x = rt_rng_uniform(r, -limit, limit); break;
        case RT_INIT_UNIFORM: x = rt_rng_uniform(r, init->a, init->b); break;
        }
        store(real, out, i, x);
    }
}

void rt_init_params(const RtProgram *p, uint64_t seed, void *params)
{
    size_t size = rt_real_bytes(p->real);
    for (int i = 0; i < p->nparam; i++) {
        RtRng rng;
        rt_rng_stream(&rng, seed, (uint64_t)i);
        rt_init(&p->param[i].init, &rng, p->real, (char *)params + p->param[i].offset * size);
    }
}
