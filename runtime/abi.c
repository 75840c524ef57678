/* The stable C ABI of a generated library (version 1; docs/abi.md), over
 * the runtime and the compiled functions that the generated model file
 * describes in `mamlc__model`.  Compiled once per real type: MAMLC_F64
 * selects double.  Every call works only on its arguments and memory it
 * allocates for itself, so calls on different buffers may run concurrently.
 * Only the mamlc_* functions are exported. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "runtime.h"

#ifdef MAMLC_F64
typedef double mamlc_real;
#else
typedef float mamlc_real;
#endif

#define EXPORT __attribute__((visibility("default")))

extern const MamlcModel mamlc__model;

static RtEntry entry(MamlcEntry e) { return (RtEntry){(RtFn)e.fn, e.arena_bytes}; }

/* The runtime's view of the model; p->param is malloc'd (free it). */
static bool program(RtProgram *p) {
    const MamlcModel *m = &mamlc__model;
    RtParam *param = calloc((size_t)m->ntensor + 1, sizeof *param);
    if (!param)
        return false;
    for (int i = 0; i < m->ntensor; i++) {
        const MamlcTensor *t = &m->tensor[i];
        RtInit init = {(RtInitKind)t->init_kind, t->init_a, t->init_b, t->rank, t->dim};
        param[i] = (RtParam){t->name, t->offset, t->count, init};
    }
    *p = (RtProgram){
        .real = m->f64 ? RT_F64 : RT_F32,
        .nreal = m->nreal,
        .param = param,
        .nparam = m->ntensor,
        .sx_bytes = m->sx_bytes, .sy_bytes = m->sy_bytes, .qx_bytes = m->qx_bytes, .qy_bytes = m->qy_bytes,
        .meta_step = entry(m->meta_step),
        .adapt_step = entry(m->adapt_step),
        .loss = entry(m->loss),
        .meta_batch = 1,
        .optimizer = {(RtOptKind)m->optimizer, m->lr, m->beta1, m->beta2, m->eps},
    };
    return true;
}

/* Arena memory for one compiled function (64-byte aligned), or NULL. */
static void *arena(size_t bytes) { return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64); }

/* slot[0..ntensor) <- the tensors of the flat vector at base. */
static void point_in(const MamlcModel *m, const mamlc_real *base, const void **slot) {
    for (int i = 0; i < m->ntensor; i++)
        slot[i] = base + m->tensor[i].offset;
}

static void point_out(const MamlcModel *m, mamlc_real *base, void **slot) {
    for (int i = 0; i < m->ntensor; i++)
        slot[i] = base + m->tensor[i].offset;
}

EXPORT int mamlc_abi_version(void) { return 1; }

EXPORT const char *mamlc_model_json(void) { return mamlc__model.json; }

EXPORT size_t mamlc_param_count(void) { return mamlc__model.nreal; }

/* The optimiser's state, then the step count t as the last real. */
EXPORT size_t mamlc_state_count(void) {
    RtOptimizer o = {(RtOptKind)mamlc__model.optimizer, 0, 0, 0, 0};
    return rt_opt_state_count(&o, mamlc__model.nreal) + 1;
}

EXPORT void mamlc_init(mamlc_real *params, mamlc_real *state, uint64_t seed) {
    RtProgram p;
    if (params && program(&p)) {
        rt_init_params(&p, seed, params);
        free((void *)p.param);
    }
    if (state)
        memset(state, 0, mamlc_state_count() * sizeof *state);
}

/* The mean loss and meta-gradient of B tasks laid out task after task;
 * false (grad untouched) when B < 1 or memory cannot be had. */
static bool meta_grad(const mamlc_real *params, int B, const void *sx, const void *sy, const void *qx,
                      const void *qy, mamlc_real *grad, mamlc_real *loss) {
    const MamlcModel *m = &mamlc__model;
    RtProgram p;
    if (B < 1 || !program(&p))
        return false;
    RtStepWork w;
    RtTask *tasks = malloc((size_t)B * sizeof *tasks);
    bool ok = tasks && rt_step_work_alloc(&p, &w);
    if (ok) {
        for (size_t t = 0; t < (size_t)B; t++)
            tasks[t] = (RtTask){(const char *)sx + t * m->sx_bytes, (const char *)sy + t * m->sy_bytes,
                                (const char *)qx + t * m->qx_bytes, (const char *)qy + t * m->qy_bytes};
        *loss = (mamlc_real)rt_meta_grad(&p, &w, params, B, tasks, grad);
        rt_step_work_free(&w);
    }
    free(tasks);
    free((void *)p.param);
    return ok;
}

EXPORT mamlc_real mamlc_meta_grad(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,
                                  const mamlc_real *qx, const void *qy, mamlc_real *grad) {
    mamlc_real loss;
    return meta_grad(params, B, sx, sy, qx, qy, grad, &loss) ? loss : NAN;
}

EXPORT mamlc_real mamlc_meta_step(mamlc_real *params, mamlc_real *state, int B, const mamlc_real *sx,
                                  const void *sy, const mamlc_real *qx, const void *qy) {
    const MamlcModel *m = &mamlc__model;
    mamlc_real *grad = malloc((m->nreal ? m->nreal : 1) * sizeof *grad), loss = NAN;
    if (grad && meta_grad(params, B, sx, sy, qx, qy, grad, &loss)) {
        RtOptimizer o = {(RtOptKind)m->optimizer, m->lr, m->beta1, m->beta2, m->eps};
        mamlc_real *t = &state[mamlc_state_count() - 1];
        *t += 1;
        rt_opt_step(&o, m->f64 ? RT_F64 : RT_F32, m->nreal, params, grad, state, (long)*t);
    }
    free(grad);
    return loss;
}

EXPORT void mamlc_adapt(const mamlc_real *params, int steps, const mamlc_real *sx, const void *sy,
                        mamlc_real *adapted) {
    const MamlcModel *m = &mamlc__model;
    size_t bytes = m->nreal * sizeof(mamlc_real);
    memmove(adapted, params, bytes);
    if (steps < 1)
        return;
    int n = m->ntensor;
    mamlc_real *next = malloc(bytes ? bytes : 1), loss;
    const void **in = calloc((size_t)n + 2, sizeof *in);
    void **out = calloc((size_t)n + 1, sizeof *out);
    void *work = arena(m->adapt_step.arena_bytes);
    if (next && in && out && work) {
        in[n] = sx;
        in[n + 1] = sy;
        point_out(m, next, out);
        out[n] = &loss;
        for (int s = 0; s < steps; s++) {
            point_in(m, adapted, in);
            m->adapt_step.fn(in, out, work);
            memcpy(adapted, next, bytes);
        }
    }
    free(next);
    free(in);
    free(out);
    free(work);
}

EXPORT mamlc_real mamlc_loss(const mamlc_real *params, const mamlc_real *qx, const void *qy) {
    const MamlcModel *m = &mamlc__model;
    int n = m->ntensor;
    mamlc_real loss = NAN;
    const void **in = calloc((size_t)n + 2, sizeof *in);
    void *work = arena(m->loss.arena_bytes), *out[1] = {&loss};
    if (in && work) {
        point_in(m, params, in);
        in[n] = qx;
        in[n + 1] = qy;
        m->loss.fn(in, out, work);
    }
    free(in);
    free(work);
    return loss;
}

EXPORT void mamlc_predict(const mamlc_real *params, const mamlc_real *qx, mamlc_real *prediction) {
    const MamlcModel *m = &mamlc__model;
    if (!m->predict.fn)
        return;
    int n = m->ntensor;
    const void **in = calloc((size_t)n + 1, sizeof *in);
    void *work = arena(m->predict.arena_bytes), *out[1] = {prediction};
    if (in && work) {
        point_in(m, params, in);
        in[n] = qx;
        m->predict.fn(in, out, work);
    }
    free(in);
    free(work);
}
