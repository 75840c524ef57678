/* Sinusoid regression (Finn et al. 2017, section 5.1): y = A sin(x - phi).
 * Draw order from rt_rng_stream(seed, task): A, phi, the k support x, then
 * the q query x.  Labels are computed from the x as stored, so an f32 task
 * is exactly consistent with its own inputs. */
#include <math.h>

#include "runtime.h"

static void fill(RtRng *r, const RtSinusoid *s, double amp, double phase, RtReal real,
                 int n, void *x, void *y)
{
    for (int i = 0; i < n; i++) {
        double xi = rt_rng_uniform(r, s->x_lo, s->x_hi);
        if (real == RT_F32) {
            float xf = (float)xi;
            ((float *)x)[i] = xf;
            ((float *)y)[i] = (float)(amp * sin((double)xf - phase));
        } else {
            ((double *)x)[i] = xi;
            ((double *)y)[i] = amp * sin(xi - phase);
        }
    }
}

/* A and phi: the first two draws of the task's stream r. */
static void draw_params(RtRng *r, const RtSinusoid *s, uint64_t seed, uint64_t task, double *amp, double *phase)
{
    rt_rng_stream(r, seed, task);
    *amp = rt_rng_uniform(r, s->amp_lo, s->amp_hi);
    *phase = rt_rng_uniform(r, s->phase_lo, s->phase_hi);
}

void rt_sinusoid_params(const RtSinusoid *s, uint64_t seed, uint64_t task, double *amp, double *phase)
{
    RtRng r;
    draw_params(&r, s, seed, task, amp, phase);
}

void rt_sinusoid_task(const RtSinusoid *s, uint64_t seed, uint64_t task, RtReal real,
                      void *sx, void *sy, void *qx, void *qy)
{
    RtRng r;
    double amp, phase;
    draw_params(&r, s, seed, task, &amp, &phase);
    fill(&r, s, amp, phase, real, s->k, sx, sy);
    fill(&r, s, amp, phase, real, s->q, qx, qy);
}

void rt_sinusoid_sample(const void *ctx, uint64_t seed, uint64_t task,
                        void *sx, void *sy, void *qx, void *qy)
{
    const RtSinusoidSource *src = ctx;
    rt_sinusoid_task(&src->sinusoid, seed, task, src->real, sx, sy, qx, qy);
}
