/* The stable C ABI of a generated library (MAMLC_ABI; docs/abi.md), over
 * the runtime and the compiled functions that the generated model file
 * describes in `mamlc__model`.  Compiled once per real type: MAMLC_F64
 * selects double.  Every call works only on its arguments and memory it
 * allocates for itself, or on a workspace it is given, so calls on different
 * buffers and workspaces may run concurrently; with a workspace, a meta-step
 * allocates nothing.  Only the mamlc_* functions are exported.
 *
 * Every call checks its arguments before it reads data or writes anything:
 * sizes in range, no NULL where docs/abi.md allows none, and i32 labels
 * within the model's class counts (compiled code would take any other
 * label for a class of none, silently).  A refused call returns NaN or -1
 * and writes nothing, or fills its output with NaN where it returns
 * nothing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "abi_cuda.h"
#include "runtime.h"

#ifdef MAMLC_F64
typedef double mamlc_real;
#else
typedef float mamlc_real;
#endif

#define EXPORT __attribute__((visibility("default")))

extern const MamlcModel mamlc__model;

static RtEntry entry(MamlcEntry e) { return (RtEntry){(RtFn)e.fn, e.arena_bytes}; }

RtOptimizer mamlc__model_optimizer(void) {
    const MamlcModel *m = &mamlc__model;
    return (RtOptimizer){.kind = (RtOptKind)m->optimizer, .lr = m->lr, .beta1 = m->beta1, .beta2 = m->beta2,
                         .eps = m->eps, .weight_decay = m->weight_decay, .clip_norm = m->clip_norm,
                         .cosine = m->cosine != 0, .min_lr = m->min_lr, .t_max = m->t_max};
}

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
        .meta_step_first = entry(m->meta_step_first),
        .first_until = m->first_until,
        .loss_weights = m->loss_weights,
        .msl_iterations = m->msl_iterations,
        .meta_batch = 1,
        .optimizer = mamlc__model_optimizer(),
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

static void fill_nan(mamlc_real *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = NAN;
}

/* A task's fields, as MamlcModel.classes orders them. */
enum { SX, SY, QX, QY };

/* Whether n tasks of field k laid out from data may be read: not NULL
 * (unless n is 0: nothing is read), and an i32 field's labels all in [0,
 * classes) where the model gives it classes. */
static bool field_ok(int k, const void *data, size_t n) {
    const MamlcModel *m = &mamlc__model;
    const size_t bytes[4] = {m->sx_bytes, m->sy_bytes, m->qx_bytes, m->qy_bytes};
    if (n == 0)
        return true;
    if (!data)
        return false;
    const int32_t *label = data;
    int32_t classes = m->classes[k];
    for (size_t i = 0, count = classes > 0 ? n * (bytes[k] / sizeof *label) : 0; i < count; i++)
        if (label[i] < 0 || label[i] >= classes)
            return false;
    return true;
}

/* Whether the data of n tasks may be read (field_ok for each field). */
static bool tasks_ok(size_t n, const void *sx, const void *sy, const void *qx, const void *qy) {
    return field_ok(SX, sx, n) && field_ok(SY, sy, n) && field_ok(QX, qx, n) && field_ok(QY, qy, n);
}

EXPORT int mamlc_abi_version(void) { return MAMLC_ABI; }

EXPORT const char *mamlc_model_json(void) { return mamlc__model.json; }

EXPORT size_t mamlc_param_count(void) { return mamlc__model.nreal; }

/* The optimiser's state, then the step count t as the last real. */
EXPORT size_t mamlc_state_count(void) {
    RtOptimizer o = mamlc__model_optimizer();
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

/* Everything a meta-step needs, allocated once (docs/abi.md). */
typedef struct mamlc_workspace {
    RtProgram p;
    int max_batch;
    RtBatch *batch;
    RtTask *task;               /* max_batch tasks */
    double *root;               /* one node vector */
    mamlc_real *grad;
    mamlc_real *weights;        /* the multi-step loss weights of the call under way */
} mamlc_workspace;

EXPORT void mamlc_workspace_free(mamlc_workspace *ws) {
    if (!ws)
        return;
    rt_batch_free(ws->batch);
    free((void *)ws->p.param);
    free(ws->task);
    free(ws->root);
    free(ws->grad);
    free(ws->weights);
    free(ws);
}

EXPORT mamlc_workspace *mamlc_workspace_new(int max_batch, int threads) {
    if (max_batch < 1 || max_batch > RT_MAX_BATCH || threads > RT_MAX_THREADS)
        return NULL;
    mamlc_workspace *ws = calloc(1, sizeof *ws);
    if (!ws || !program(&ws->p)) {
        free(ws);
        return NULL;
    }
    ws->max_batch = max_batch;
    ws->batch = rt_batch_new(&ws->p, max_batch, threads);
    ws->task = calloc((size_t)max_batch, sizeof *ws->task);
    ws->root = calloc(rt_node_reals(&ws->p), sizeof(double));
    ws->grad = calloc(mamlc__model.nreal + 1, sizeof *ws->grad);
    ws->weights = calloc((size_t)mamlc__model.loss_weights + 1, sizeof *ws->weights);
    if (!ws->batch || !ws->task || !ws->root || !ws->grad || !ws->weights) {
        mamlc_workspace_free(ws);
        return NULL;
    }
    return ws;
}

/* ws->task[0..n) <- n tasks laid out task after task from sx, sy, qx, qy. */
static void point_tasks(mamlc_workspace *ws, int n, const void *sx, const void *sy, const void *qx,
                        const void *qy) {
    const MamlcModel *m = &mamlc__model;
    for (size_t t = 0; t < (size_t)n; t++)
        ws->task[t] = (RtTask){(const char *)sx + t * m->sx_bytes, (const char *)sy + t * m->sy_bytes,
                               (const char *)qx + t * m->qx_bytes, (const char *)qy + t * m->qy_bytes};
}

EXPORT int mamlc_partial_count(int B, int first, int n) {
    if (B < 1 || first < 0 || n < 0 || first > B - n)
        return -1;
    return rt_tree_count(B, first, first + n);
}

/* The iteration the schedules of MAML++ (multi-step loss weights, the
 * derivative order) take for a call: `it` (0-based), or it < 0 for a
 * gradient alone, which takes where they end: the last step's loss alone,
 * second order. */
static void schedule(mamlc_workspace *ws, long it) {
    const MamlcModel *m = &mamlc__model;
    rt_msl_weights(m->loss_weights, m->msl_iterations, it < 0 ? m->msl_iterations : it,
                   m->f64 ? RT_F64 : RT_F32, ws->weights);
}

/* mamlc_meta_grad_tasks with the multi-step loss weights in ws->weights,
 * at first order where first_order says so (the order-annealing step). */
static int grad_tasks(mamlc_workspace *ws, const mamlc_real *params, int B, int first, int n, const void *sx,
                      const void *sy, const void *qx, const void *qy, bool first_order, double *partial) {
    int count = mamlc_partial_count(B, first, n);
    if (!ws || count < 0 || B > ws->max_batch || (n > 0 && (!params || !partial)) ||
        !tasks_ok((size_t)n, sx, sy, qx, qy))
        return -1;
    point_tasks(ws, n, sx, sy, qx, qy);
    RtSlice s = {.B = B, .first = first, .count = n, .task = ws->task,
                 .loss_weights = mamlc__model.loss_weights ? ws->weights : NULL,
                 .first_order = first_order && mamlc__model.meta_step_first.fn};
    rt_batch_nodes(ws->batch, params, &s, partial);
    return count;
}

EXPORT int mamlc_meta_grad_tasks(mamlc_workspace *ws, const mamlc_real *params, int B, int first, int n,
                                 const mamlc_real *sx, const void *sy, const mamlc_real *qx, const void *qy,
                                 double *partial) {
    if (ws)
        schedule(ws, -1);
    return grad_tasks(ws, params, B, first, n, sx, sy, qx, qy, false, partial);
}

EXPORT mamlc_real mamlc_meta_grad_reduce(mamlc_workspace *ws, int B, int nparts, const int *bound,
                                         const double *partials, mamlc_real *grad) {
    bool ok = ws && B >= 1 && B <= ws->max_batch && nparts >= 1 && bound && partials && grad && bound[0] == 0 &&
              bound[nparts] == B;
    for (int k = 0; ok && k < nparts; k++)
        ok = bound[k] <= bound[k + 1];
    return ok ? (mamlc_real)rt_batch_mean(ws->batch, B, nparts, bound, partials, grad) : NAN;
}

/* The mean loss and meta-gradient of B tasks laid out task after task,
 * with ws->weights and at first order where first_order says so; false
 * (grad untouched) when ws is NULL, B is out of its range, or
 * mamlc_meta_grad_tasks refuses the tasks. */
static bool meta_grad(mamlc_workspace *ws, const mamlc_real *params, int B, const void *sx, const void *sy,
                      const void *qx, const void *qy, bool first_order, mamlc_real *grad, mamlc_real *loss) {
    int bound[2] = {0, B};
    if (!grad || grad_tasks(ws, params, B, 0, B, sx, sy, qx, qy, first_order, ws ? ws->root : NULL) < 0)
        return false;
    *loss = mamlc_meta_grad_reduce(ws, B, 1, bound, ws->root, grad);
    return true;
}

EXPORT mamlc_real mamlc_meta_grad_ws(mamlc_workspace *ws, const mamlc_real *params, int B, const mamlc_real *sx,
                                     const void *sy, const mamlc_real *qx, const void *qy, mamlc_real *grad) {
    mamlc_real loss;
    if (ws)
        schedule(ws, -1);
    return meta_grad(ws, params, B, sx, sy, qx, qy, false, grad, &loss) ? loss : NAN;
}

/* The step count kept after the optimiser's state, counted up: this step's. */
static long next_step(mamlc_real *state) {
    mamlc_real *t = &state[mamlc_state_count() - 1];
    *t += 1;
    return (long)*t;
}

EXPORT void mamlc_apply_grad(mamlc_real *params, mamlc_real *state, const mamlc_real *grad) {
    const MamlcModel *m = &mamlc__model;
    if (!params || !state || !grad)
        return;
    RtOptimizer o = mamlc__model_optimizer();
    rt_opt_step(&o, m->f64 ? RT_F64 : RT_F32, m->nreal, params, grad, state, next_step(state));
}

/* The iterations done, as the step count after the optimiser's state says. */
static long steps_done(const mamlc_real *state) { return (long)state[mamlc_state_count() - 1]; }

/* mamlc_meta_step_ws with the weights in ws->weights (own_weights) or
 * those of the iteration state counts. */
static mamlc_real meta_step(mamlc_workspace *ws, mamlc_real *params, mamlc_real *state, int B, const void *sx,
                            const void *sy, const void *qx, const void *qy, bool own_weights) {
    mamlc_real loss = NAN;
    if (!state)
        return NAN;
    long it = steps_done(state);
    if (ws && !own_weights)
        schedule(ws, it);
    if (meta_grad(ws, params, B, sx, sy, qx, qy, it < mamlc__model.first_until, ws ? ws->grad : NULL, &loss)) {
        RtOptimizer o = mamlc__model_optimizer();
        rt_batch_opt_step(ws->batch, &o, params, ws->grad, state, next_step(state));
    }
    return loss;
}

EXPORT mamlc_real mamlc_meta_step_ws(mamlc_workspace *ws, mamlc_real *params, mamlc_real *state, int B,
                                     const mamlc_real *sx, const void *sy, const mamlc_real *qx, const void *qy) {
    return meta_step(ws, params, state, B, sx, sy, qx, qy, false);
}

EXPORT int mamlc_loss_weight_count(void) { return mamlc__model.loss_weights; }

/* Whether weights[0..n) may be the meta-step's multi-step loss weights:
 * n is the model's count, each finite (NULL only for n = 0); if so, copied
 * into ws->weights. */
static bool take_weights(mamlc_workspace *ws, const mamlc_real *weights, int n) {
    if (!ws || n != mamlc__model.loss_weights || (n > 0 && !weights))
        return false;
    for (int s = 0; s < n; s++)
        if (!isfinite(weights[s]))
            return false;
    if (n > 0)
        memcpy(ws->weights, weights, (size_t)n * sizeof *weights);
    return true;
}

EXPORT mamlc_real mamlc_meta_grad_weighted(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,
                                           const mamlc_real *qx, const void *qy, const mamlc_real *weights,
                                           int nweights, mamlc_real *grad) {
    mamlc_workspace *ws = mamlc_workspace_new(B, 1);
    mamlc_real loss = NAN;
    if (take_weights(ws, weights, nweights) && !meta_grad(ws, params, B, sx, sy, qx, qy, false, grad, &loss))
        loss = NAN;
    mamlc_workspace_free(ws);
    return loss;
}

EXPORT mamlc_real mamlc_meta_step_weighted(mamlc_real *params, mamlc_real *state, int B, const mamlc_real *sx,
                                           const void *sy, const mamlc_real *qx, const void *qy,
                                           const mamlc_real *weights, int nweights) {
    mamlc_workspace *ws = mamlc_workspace_new(B, 1);
    mamlc_real loss = take_weights(ws, weights, nweights) ? meta_step(ws, params, state, B, sx, sy, qx, qy, true)
                                                          : NAN;
    mamlc_workspace_free(ws);
    return loss;
}

EXPORT mamlc_real mamlc_meta_grad(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,
                                  const mamlc_real *qx, const void *qy, mamlc_real *grad) {
    if (mamlc__gpu_step)        /* --device cuda: on the GPU, the same checks first */
        return B >= 1 && B <= RT_MAX_BATCH && params && grad && tasks_ok((size_t)B, sx, sy, qx, qy)
                   ? (mamlc_real)mamlc__gpu_step(params, NULL, B, sx, sy, qx, qy, grad) : NAN;
    mamlc_workspace *ws = mamlc_workspace_new(B, 1);
    mamlc_real loss = mamlc_meta_grad_ws(ws, params, B, sx, sy, qx, qy, grad);
    mamlc_workspace_free(ws);
    return loss;
}

EXPORT mamlc_real mamlc_meta_step(mamlc_real *params, mamlc_real *state, int B, const mamlc_real *sx,
                                  const void *sy, const mamlc_real *qx, const void *qy) {
    if (mamlc__gpu_step)
        return B >= 1 && B <= RT_MAX_BATCH && params && state && tasks_ok((size_t)B, sx, sy, qx, qy)
                   ? (mamlc_real)mamlc__gpu_step(params, state, B, sx, sy, qx, qy, NULL) : NAN;
    mamlc_workspace *ws = mamlc_workspace_new(B, 1);
    mamlc_real loss = mamlc_meta_step_ws(ws, params, state, B, sx, sy, qx, qy);
    mamlc_workspace_free(ws);
    return loss;
}

EXPORT void mamlc_adapt(const mamlc_real *params, int steps, const mamlc_real *sx, const void *sy,
                        mamlc_real *adapted) {
    const MamlcModel *m = &mamlc__model;
    size_t bytes = m->nreal * sizeof(mamlc_real);
    if (!adapted)
        return;
    if (!params || steps < 0 || !field_ok(SX, sx, 1) || !field_ok(SY, sy, 1)) {
        fill_nan(adapted, m->nreal);
        return;
    }
    memmove(adapted, params, bytes);
    if (steps == 0)
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
    } else {
        fill_nan(adapted, m->nreal);
    }
    free(next);
    free(in);
    free(out);
    free(work);
}

/* Entry e (loss or metric) at params on one query set; NaN if an argument
 * is refused or memory cannot be had. */
static mamlc_real query_value(MamlcEntry e, const mamlc_real *params, const mamlc_real *qx, const void *qy) {
    const MamlcModel *m = &mamlc__model;
    int n = m->ntensor;
    mamlc_real value = NAN;
    if (!e.fn || !params || !field_ok(QX, qx, 1) || !field_ok(QY, qy, 1))
        return NAN;
    const void **in = calloc((size_t)n + 2, sizeof *in);
    void *work = arena(e.arena_bytes), *out[1] = {&value};
    if (in && work) {
        point_in(m, params, in);
        in[n] = qx;
        in[n + 1] = qy;
        e.fn(in, out, work);
    }
    free(in);
    free(work);
    return value;
}

EXPORT mamlc_real mamlc_loss(const mamlc_real *params, const mamlc_real *qx, const void *qy) {
    return query_value(mamlc__model.loss, params, qx, qy);
}

/* The metric as `mamlc run` evaluates it (runtime/train.c): the same
 * compiled function on the same reals, so the same bits. */
EXPORT mamlc_real mamlc_metric(const mamlc_real *params, const mamlc_real *qx, const void *qy) {
    return query_value(mamlc__model.metric, params, qx, qy);
}

EXPORT void mamlc_predict(const mamlc_real *params, const mamlc_real *qx, mamlc_real *prediction) {
    const MamlcModel *m = &mamlc__model;
    if (!m->predict.fn || !prediction)
        return;
    if (!params || !field_ok(QX, qx, 1)) {
        fill_nan(prediction, m->predict_count);
        return;
    }
    int n = m->ntensor;
    const void **in = calloc((size_t)n + 1, sizeof *in);
    void *work = arena(m->predict.arena_bytes), *out[1] = {prediction};
    if (in && work) {
        point_in(m, params, in);
        in[n] = qx;
        m->predict.fn(in, out, work);
    } else {
        fill_nan(prediction, m->predict_count);
    }
    free(in);
    free(work);
}

/* net(x) for n points laid out point after point: the compiled predict,
 * which takes query_points points, on each chunk of that many (the last one
 * padded with zeros).  Where points are coupled (!any_points) only
 * n = query_points is taken.  0, or -1 with out filled with NaN. */
EXPORT int mamlc_predict_points(const mamlc_real *params, size_t n, const mamlc_real *x, mamlc_real *out) {
    const MamlcModel *m = &mamlc__model;
    size_t q = (size_t)m->query_points, in_point = m->qx_bytes / sizeof(mamlc_real) / q,
           out_point = m->predict_count / q;
    if (!out || !m->predict.fn)
        return -1;
    if (!params || (n > 0 && !x) || (!m->any_points && n != q) || n > SIZE_MAX / sizeof(mamlc_real) / in_point ||
        n > SIZE_MAX / sizeof(mamlc_real) / (out_point ? out_point : 1)) {
        fill_nan(out, n * out_point);
        return -1;
    }
    mamlc_real *pad_in = calloc(q * in_point, sizeof *pad_in), *pad_out = malloc(m->predict_count * sizeof *pad_out);
    bool ok = pad_in && pad_out;
    for (size_t at = 0; ok && at < n; at += q) {
        size_t k = n - at < q ? n - at : q;
        const mamlc_real *chunk = x + at * in_point;
        if (k < q)
            chunk = memcpy(pad_in, chunk, k * in_point * sizeof *pad_in);
        mamlc_predict(params, chunk, k < q ? pad_out : out + at * out_point);
        if (k < q)
            memcpy(out + at * out_point, pad_out, k * out_point * sizeof *out);
    }
    if (!ok)
        fill_nan(out, n * out_point);
    free(pad_in);
    free(pad_out);
    return ok ? 0 : -1;
}

/* Tasks first, ..., first + n - 1 of the model's own source for seed, as
 * `mamlc run --seed` draws them (its training tasks are numbered from 0,
 * its held-out ones from RT_EVAL_TASK).  n, or -1 (nothing written) where
 * the library has no source or an argument is refused. */
EXPORT int mamlc_sample_tasks(uint64_t seed, uint64_t first, int n, mamlc_real *sx, void *sy, mamlc_real *qx,
                              void *qy) {
    const MamlcModel *m = &mamlc__model;
    if (m->sampler == MAMLC_SAMPLE_NONE || n < 0 || n > RT_MAX_BATCH || (n > 0 && (!sx || !sy || !qx || !qy)))
        return -1;
    RtReal real = m->f64 ? RT_F64 : RT_F32;
    const double *r = m->sinusoid;
    RtSinusoidSource sin = {{r[0], r[1], r[2], r[3], r[4], r[5], (int)(m->sx_bytes / sizeof(mamlc_real)),
                             (int)(m->qx_bytes / sizeof(mamlc_real))}, real};
    RtDraw *draw = NULL;
    RtFamilySource *fam = NULL;
    const void *ctx = &sin;
    RtSampleFn sample = rt_sinusoid_sample;
    if (m->sampler == MAMLC_SAMPLE_FAMILY) {
        int total = m->nvar + m->ndraw[0] + m->ndraw[1];
        draw = calloc((size_t)total + 1, sizeof *draw);
        for (int i = 0; draw && i < total; i++)
            draw[i] = (RtDraw){(RtDrawKind)m->draw[i].kind, m->draw[i].a, m->draw[i].b, m->draw[i].n};
        RtFamily f = {.real = real, .var = draw, .nvar = m->nvar};
        for (int s = 0; draw && s < 2; s++)
            f.set[s] = (RtFamilySet){entry(m->family[s]), draw + m->nvar + (s ? m->ndraw[0] : 0), m->ndraw[s]};
        fam = draw ? rt_family_new(&f, 1) : NULL;
        if (!fam) {
            free(draw);
            return -1;
        }
        ctx = fam;
        sample = rt_family_sample;
    }
    for (size_t t = 0; t < (size_t)n; t++)
        sample(ctx, seed, first + t, (char *)sx + t * m->sx_bytes, (char *)sy + t * m->sy_bytes,
               (char *)qx + t * m->qx_bytes, (char *)qy + t * m->qy_bytes);
    rt_family_free(fam);
    free(draw);
    return n;
}
