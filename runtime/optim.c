/* Outer optimisers, following torch.optim's single-tensor CPU code path
 * operation for operation, so that trajectories match PyTorch up to the
 * rounding of the gradients fed in.  Scalars are formed in double (Python
 * floats) and rounded to the element type where PyTorch would. */
#include <math.h>

#include "runtime.h"

size_t rt_opt_state_count(const RtOptimizer *o, size_t n)
{
    return o->kind == RT_ADAM ? 2 * n : 0;
}

/* Adam (Kingma & Ba) with bias correction, as torch.optim.Adam:
 *   m = lerp(m, g, 1 - b1)                 (= b1 m + (1 - b1) g)
 *   v = b2 v + (1 - b2) g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The body is written once per element type through this macro. */
#define ADAM_LOOP(T, SQRT)                                                        \
    do {                                                                          \
        T *restrict p = params, *restrict m = state, *restrict v = (T *)state + n; \
        const T *restrict g = grad;                                               \
        const T w = (T)(1.0 - o->beta1), b2 = (T)o->beta2;                        \
        const T c2 = (T)(1.0 - o->beta2), eps = (T)o->eps;                        \
        const T bc2_sqrt = (T)sqrt(1.0 - pow(o->beta2, (double)t));              \
        const T neg_step = (T)(-(o->lr / (1.0 - pow(o->beta1, (double)t))));      \
        for (size_t i = from; i < to; i++) {                                      \
            /* at::lerp: the form depends on which side of 1/2 the weight is */   \
            m[i] = w < (T)0.5 ? m[i] + w * (g[i] - m[i])                          \
                              : g[i] - (g[i] - m[i]) * ((T)1 - w);                \
            v[i] = v[i] * b2 + c2 * g[i] * g[i];                                  \
            T denom = SQRT(v[i]) / bc2_sqrt + eps;                                \
            p[i] = p[i] + neg_step * m[i] / denom;                                \
        }                                                                         \
    } while (0)

/* SGD without momentum: p += (-lr) g. */
#define SGD_LOOP(T)                                                               \
    do {                                                                          \
        T *p = params;                                                            \
        const T *g = grad;                                                        \
        const T neg_lr = (T)(-o->lr);                                             \
        for (size_t i = from; i < to; i++)                                        \
            p[i] = p[i] + neg_lr * g[i];                                          \
    } while (0)

void rt_opt_step(const RtOptimizer *o, RtReal real, size_t n, void *params,
                 const void *grad, void *state, long t)
{
    rt_opt_step_range(o, real, n, 0, n, params, grad, state, t);
}

void rt_opt_step_range(const RtOptimizer *o, RtReal real, size_t n, size_t from, size_t to,
                       void *params, const void *grad, void *state, long t)
{
    if (o->kind == RT_ADAM) {
        if (real == RT_F32)
            ADAM_LOOP(float, sqrtf);
        else
            ADAM_LOOP(double, sqrt);
    } else {
        if (real == RT_F32)
            SGD_LOOP(float);
        else
            SGD_LOOP(double);
    }
}
