/* Outer optimisers, following torch.optim's single-tensor CPU code path
 * operation for operation, so that trajectories match PyTorch up to the
 * rounding of the gradients fed in.  Scalars are formed in double (Python
 * floats) and rounded to the element type where PyTorch would. */
#include <math.h>

#include "runtime.h"

size_t rt_opt_state_count(const RtOptimizer *o, size_t n)
{
    return o->kind != RT_SGD ? 2 * n : 0;
}

double rt_opt_lr(const RtOptimizer *o, long t)
{
    if (!o->cosine)
        return o->lr;
    const double pi = 3.14159265358979323846;
    double e = (double)(t - 1), tmax = o->t_max > 0 ? (double)o->t_max : 1.0;
    return o->min_lr + (o->lr - o->min_lr) * (1.0 + cos(pi * e / tmax)) / 2.0;
}

double rt_opt_grad_scale(const RtOptimizer *o, RtReal real, size_t n, const void *grad)
{
    if (!(o->clip_norm > 0))
        return 1.0;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = real == RT_F32 ? (double)((const float *)grad)[i] : ((const double *)grad)[i];
        sum += g * g;
    }
    double coef = o->clip_norm / (sqrt(sum) + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

/* Adam (Kingma & Ba) with bias correction, as torch.optim.Adam, and AdamW
 * (Loshchilov & Hutter) as torch.optim.AdamW, on the gradient times sc:
 *   g = sc g (+ wd p, Adam with weight decay)
 *   p = p (1 - lr wd)                      (AdamW; keep = 1 otherwise)
 *   m = lerp(m, g, 1 - b1)                 (= b1 m + (1 - b1) g)
 *   v = b2 v + (1 - b2) g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * with lr the step's (rt_opt_lr).  The body is written once per element
 * type through this macro. */
#define ADAM_LOOP(T, SQRT)                                                        \
    do {                                                                          \
        T *restrict p = params, *restrict m = state, *restrict v = (T *)state + n; \
        const T *restrict g = grad;                                               \
        const T w = (T)(1.0 - o->beta1), b2 = (T)o->beta2;                        \
        const T c2 = (T)(1.0 - o->beta2), eps = (T)o->eps;                        \
        const T bc2_sqrt = (T)sqrt(1.0 - pow(o->beta2, (double)t));              \
        const T neg_step = (T)(-(lr / (1.0 - pow(o->beta1, (double)t))));         \
        const T sc = (T)scale, wd = (T)o->weight_decay;                           \
        const T keep = (T)(o->kind == RT_ADAMW ? 1.0 - lr * o->weight_decay : 1.0); \
        const bool coupled = o->kind == RT_ADAM && o->weight_decay != 0.0;        \
        for (size_t i = from; i < to; i++) {                                      \
            T gi = g[i] * sc;                                                     \
            if (coupled)                                                          \
                gi = gi + wd * p[i];                                              \
            /* at::lerp: the form depends on which side of 1/2 the weight is */   \
            m[i] = w < (T)0.5 ? m[i] + w * (gi - m[i])                            \
                              : gi - (gi - m[i]) * ((T)1 - w);                    \
            v[i] = v[i] * b2 + c2 * gi * gi;                                      \
            T denom = SQRT(v[i]) / bc2_sqrt + eps;                                \
            p[i] = p[i] * keep + neg_step * m[i] / denom;                         \
        }                                                                         \
    } while (0)

/* SGD without momentum: p += (-lr) sc g. */
#define SGD_LOOP(T)                                                               \
    do {                                                                          \
        T *p = params;                                                            \
        const T *g = grad;                                                        \
        const T neg_lr = (T)(-lr), sc = (T)scale;                                 \
        for (size_t i = from; i < to; i++)                                        \
            p[i] = p[i] + neg_lr * (g[i] * sc);                                   \
    } while (0)

void rt_opt_step(const RtOptimizer *o, RtReal real, size_t n, void *params,
                 const void *grad, void *state, long t)
{
    rt_opt_step_range(o, real, n, 0, n, params, grad, state, t, rt_opt_grad_scale(o, real, n, grad));
}

void rt_opt_step_range(const RtOptimizer *o, RtReal real, size_t n, size_t from, size_t to,
                       void *params, const void *grad, void *state, long t, double scale)
{
    double lr = rt_opt_lr(o, t);
    if (o->kind != RT_SGD) {
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

void rt_msl_weights(int steps, long anneal, long it, RtReal real, void *out)
{
    for (int s = 0; s < steps; s++) {
        double w;
        if (it >= anneal) {
            w = s == steps - 1 ? 1.0 : 0.0;
        } else {
            /* MAML++: decay_rate = 1 / steps / N, floor 0.03 / steps */
            double decay = 1.0 / steps / (double)anneal, floor = 0.03 / steps, uniform = 1.0 / steps;
            if (s < steps - 1) {
                w = uniform - (double)it * decay;
                w = w > floor ? w : floor;
            } else {
                w = uniform + (double)it * (steps - 1) * decay;
                double top = 1.0 - (steps - 1) * floor;
                w = w < top ? w : top;
            }
        }
        if (real == RT_F32)
            ((float *)out)[s] = (float)w;
        else
            ((double *)out)[s] = w;
    }
}
