/* libFuzzer target: the argument checks of a generated library's C ABI
 * (runtime/abi.c, docs/abi.md), compiled here with the runtime under the
 * sanitizers, over a stand-in model in plain C instead of LLVM's code.
 *
 * Each input picks an entry point and its arguments: batch sizes, slices,
 * bounds, thread and step counts (small ones backed by data, and sizes the
 * ABI must refuse), NULL pointers, and task data whose labels are mostly in
 * range.  Every call must then do what docs/abi.md says: a refused call
 * returns NaN (or -1, or NULL) and writes nothing, or fills its output with
 * NaN; an accepted one gives finite results (the data is small and finite).
 * The stand-in picks its logits by label from a buffer of the class count,
 * so a label that slipped through would also read out of bounds. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "runtime.h"

enum {
    N = 4,                      /* samples per support and query set */
    F = 2,                      /* features */
    C = 3,                      /* classes */
    NREAL = C * F + C,          /* w [C, F], then b [C] */
    ARENA = 64,                 /* each stand-in's arena: N * C floats */
    MAX_TASKS = 6,              /* the largest batch given data */
    MAX_PARTS = 4
};

/* --- the stand-in model ---
 * z = x w^T + b over N samples, loss = mean_n z[n, y_n]^2 / 2, and its
 * gradient dw[c] = mean_n [c = y_n] z[n, c] x[n], db[c] = mean_n [c = y_n]
 * z[n, c].  The meta-step takes one inner step of 0.1 on the support set
 * and gives the query loss and gradient there (first order). */

static float task_loss(const float *w, const float *b, const float *x, const int32_t *y, float *z, float *dw,
                       float *db) {
    float loss = 0;
    if (dw) {
        memset(dw, 0, C * F * sizeof *dw);
        memset(db, 0, C * sizeof *db);
    }
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++)
            z[n * C + c] = b[c] + w[c * F] * x[n * F] + w[c * F + 1] * x[n * F + 1];
        float picked = z[n * C + y[n]];
        loss += picked * picked / (2 * N);
        if (dw) {
            for (int f = 0; f < F; f++)
                dw[y[n] * F + f] += picked * x[n * F + f] / N;
            db[y[n]] += picked / N;
        }
    }
    return loss;
}

/* in: w, b, x, y   out: w', b', support loss */
static void adapt_step(const void *const *in, void *const *out, void *arena) {
    float dw[C * F], db[C];
    *(float *)out[2] = task_loss(in[0], in[1], in[2], in[3], arena, dw, db);
    for (int i = 0; i < C * F; i++)
        ((float *)out[0])[i] = ((const float *)in[0])[i] - 0.1f * dw[i];
    for (int c = 0; c < C; c++)
        ((float *)out[1])[c] = ((const float *)in[1])[c] - 0.1f * db[c];
}

/* in: w, b, sx, sy, qx, qy   out: query loss, dw, db */
static void meta_step(const void *const *in, void *const *out, void *arena) {
    float w[C * F], b[C], loss;
    adapt_step((const void *const[]){in[0], in[1], in[2], in[3]}, (void *const[]){w, b, &loss}, arena);
    *(float *)out[0] = task_loss(w, b, in[4], in[5], arena, out[1], out[2]);
}

/* in: w, b, qx, qy   out: loss */
static void eval_loss(const void *const *in, void *const *out, void *arena) {
    *(float *)out[0] = task_loss(in[0], in[1], in[2], in[3], arena, NULL, NULL);
}

/* in: w, b, qx   out: z */
static void predict(const void *const *in, void *const *out, void *arena) {
    const float *w = in[0], *b = in[1], *x = in[2];
    float *z = out[0];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            z[n * C + c] = b[c] + w[c * F] * x[n * F] + w[c * F + 1] * x[n * F + 1];
}

static const int dim_w[] = {C, F}, dim_b[] = {C};
static const MamlcTensor tensors[] = {{"w", 0, C * F, RT_INIT_GLOROT, 0, 0, 2, dim_w},
                                      {"b", C * F, C, RT_INIT_ZEROS, 0, 0, 1, dim_b}};

const MamlcModel mamlc__model = {
    .nreal = NREAL, .ntensor = 2, .tensor = tensors,
    .sx_bytes = N * F * sizeof(float), .sy_bytes = N * sizeof(int32_t),
    .qx_bytes = N * F * sizeof(float), .qy_bytes = N * sizeof(int32_t),
    .classes = {0, C, 0, C},
    .predict_count = N * C,
    .meta_step = {meta_step, ARENA}, .adapt_step = {adapt_step, ARENA}, .loss = {eval_loss, ARENA},
    .predict = {predict, ARENA},
    .optimizer = RT_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
    .json = "{}",
};

/* runtime/abi.c's exports, as the generated header declares them (f32) */
typedef struct mamlc_workspace mamlc_workspace;
size_t mamlc_state_count(void);
float mamlc_meta_grad(const float *params, int B, const float *sx, const void *sy, const float *qx,
                      const void *qy, float *grad);
float mamlc_meta_step(float *params, float *state, int B, const float *sx, const void *sy, const float *qx,
                      const void *qy);
void mamlc_adapt(const float *params, int steps, const float *sx, const void *sy, float *adapted);
float mamlc_loss(const float *params, const float *qx, const void *qy);
void mamlc_predict(const float *params, const float *qx, float *out);
mamlc_workspace *mamlc_workspace_new(int max_batch, int threads);
void mamlc_workspace_free(mamlc_workspace *ws);
float mamlc_meta_grad_ws(mamlc_workspace *ws, const float *params, int B, const float *sx, const void *sy,
                         const float *qx, const void *qy, float *grad);
float mamlc_meta_step_ws(mamlc_workspace *ws, float *params, float *state, int B, const float *sx,
                         const void *sy, const float *qx, const void *qy);
void mamlc_apply_grad(float *params, float *state, const float *grad);
int mamlc_partial_count(int B, int first, int n);
int mamlc_meta_grad_tasks(mamlc_workspace *ws, const float *params, int B, int first, int n, const float *sx,
                          const void *sy, const float *qx, const void *qy, double *partial);
float mamlc_meta_grad_reduce(mamlc_workspace *ws, int B, int nparts, const int *bound, const double *partials,
                             float *grad);

#define MUST(cond)                                                                  \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_abi.c:%d: violated: %s\n", __LINE__, #cond);      \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* --- reading the input --- */

typedef struct {
    const uint8_t *p;
    size_t n;
} Input;

static uint8_t byte(Input *in) {
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static int32_t word(Input *in) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | byte(in);
    return (int32_t)v;
}

/* A count for which data can be given (lo .. MAX_TASKS), or one the ABI
 * must refuse without reading any data: INT_MAX, INT_MIN, RT_MAX_BATCH + 1,
 * or any int outside [lo, RT_MAX_BATCH]. */
static int count(Input *in, int lo) {
    uint8_t k = byte(in);
    int32_t w;
    switch (k % 8) {
    case 5: return INT_MAX;
    case 6: return INT_MIN;
    case 7: return RT_MAX_BATCH + 1;
    case 4:
        w = word(in);
        if (w < lo || w > RT_MAX_BATCH)
            return w;
        /* fall through */
    default: return lo + k / 8 % (MAX_TASKS + 1 - lo);
    }
}

/* A thread count: mostly none (<= 1), as the checks come before any
 * thread's work, sometimes 2 or 3, or too many. */
static int threads(Input *in) {
    static const int pick[16] = {-1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, RT_MAX_THREADS + 1, INT_MAX, INT_MIN};
    return pick[byte(in) % 16];
}

/* A label: mostly a class, sometimes one of none. */
static int32_t label(Input *in, bool *bad) {
    uint8_t k = byte(in);
    if (k < 224)
        return k % C;
    static const int32_t wrong[] = {C, -1, INT_MAX, INT_MIN, C + 1, -C};
    *bad = true;
    return k % 8 < 6 ? wrong[k % 8] : (int32_t)(C + (uint32_t)word(in) % (uint32_t)(INT_MAX - C));
}

/* Reals in [-1, 1), finite. */
static void reals(Input *in, float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(int8_t)byte(in) / 128.0f;
}

/* The data of ntasks tasks, each buffer exactly that long; bad_sy and
 * bad_qy say whether sy and qy hold a label of no class. */
typedef struct {
    int ntasks;
    float *sx, *qx;
    int32_t *sy, *qy;
    bool bad_sy, bad_qy;
} Tasks;

static Tasks tasks(Input *in, int ntasks) {
    Tasks t = {.ntasks = ntasks};
    size_t nt = (size_t)(ntasks > 0 ? ntasks : 0);
    t.sx = malloc(nt * N * F * sizeof *t.sx + 1);
    t.qx = malloc(nt * N * F * sizeof *t.qx + 1);
    t.sy = malloc(nt * N * sizeof *t.sy + 1);
    t.qy = malloc(nt * N * sizeof *t.qy + 1);
    if (!t.sx || !t.qx || !t.sy || !t.qy)
        abort();
    reals(in, t.sx, nt * N * F);
    reals(in, t.qx, nt * N * F);
    for (size_t i = 0; i < nt * N; i++)
        t.sy[i] = label(in, &t.bad_sy);
    for (size_t i = 0; i < nt * N; i++)
        t.qy[i] = label(in, &t.bad_qy);
    return t;
}

static void tasks_free(Tasks *t) {
    free(t->sx);
    free(t->qx);
    free(t->sy);
    free(t->qy);
}

/* Which pointers are NULL: bit k for pointer k of the call, in a quarter
 * of the inputs. */
static unsigned nulls(Input *in) {
    uint8_t k = byte(in);
    return k >= 192 ? byte(in) : 0;
}

#define OR_NULL(mask, bit, p) ((mask) >> (bit) & 1 ? NULL : (p))

static bool all_nan(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i]))
            return false;
    return true;
}

static bool all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* Buffers the calls may write: filled with a canary, or copies of the
 * input's parameters, to tell what a refused call touched. */
typedef struct {
    float params[NREAL], keep[NREAL];
    float state[2 * NREAL + 1];
    float out[NREAL], canary[NREAL];
} Buffers;

static void buffers(Input *in, Buffers *b) {
    reals(in, b->params, NREAL);
    memcpy(b->keep, b->params, sizeof b->keep);
    memset(b->state, 0, sizeof b->state);
    memset(b->out, 0x55, sizeof b->out);
    memcpy(b->canary, b->out, sizeof b->canary);
}

static bool untouched(const Buffers *b) {
    static const float zero[2 * NREAL + 1];
    return memcmp(b->params, b->keep, sizeof b->keep) == 0 && memcmp(b->state, zero, sizeof zero) == 0 &&
           memcmp(b->out, b->canary, sizeof b->out) == 0;
}

/* --- the entry points --- */

/* mamlc_meta_grad or mamlc_meta_step, without or with a workspace. */
static void fuzz_meta(Input *in, int kind) {
    mamlc_workspace *ws = NULL;
    int max_batch = 0;
    if (kind >= 2) {
        int th = threads(in);
        max_batch = byte(in) % 4 == 0 ? RT_MAX_BATCH : count(in, -1);
        ws = mamlc_workspace_new(max_batch, th);
        MUST((ws != NULL) == (max_batch >= 1 && max_batch <= RT_MAX_BATCH && th <= RT_MAX_THREADS));
    }
    int B = count(in, -1);
    bool data = B >= 1 && B <= MAX_TASKS;
    Tasks t = tasks(in, data ? B : 1);
    Buffers b;
    buffers(in, &b);
    unsigned nul = nulls(in);
    float *params = OR_NULL(nul, 0, b.params);
    const float *sx = OR_NULL(nul, 1, t.sx), *qx = OR_NULL(nul, 3, t.qx);
    const int32_t *sy = OR_NULL(nul, 2, t.sy), *qy = OR_NULL(nul, 4, t.qy);
    float *out = OR_NULL(nul, 5, b.out), *state = OR_NULL(nul, 6, b.state);
    bool step = kind % 2 == 1;
    bool refuse = !data || (kind >= 2 && (!ws || B > max_batch)) || !params || !sx || !sy || !qx || !qy ||
                  t.bad_sy || t.bad_qy || (step ? !state : !out);
    float loss;
    switch (kind) {
    case 0: loss = mamlc_meta_grad(params, B, sx, sy, qx, qy, out); break;
    case 1: loss = mamlc_meta_step(params, state, B, sx, sy, qx, qy); break;
    case 2: loss = mamlc_meta_grad_ws(ws, params, B, sx, sy, qx, qy, out); break;
    default: loss = mamlc_meta_step_ws(ws, params, state, B, sx, sy, qx, qy); break;
    }
    if (refuse)
        MUST(isnan(loss) && untouched(&b));
    else
        MUST(isfinite(loss) && (step ? all_finite(b.params, NREAL) && b.state[2 * NREAL] == 1
                                     : all_finite(b.out, NREAL)));
    mamlc_workspace_free(ws);
    tasks_free(&t);
}

/* mamlc_partial_count by its definition. */
static int partial_count(int B, int first, int n) {
    if (B < 1 || first < 0 || n < 0 || (long)first + n > B)
        return -1;
    return rt_tree_count(B, first, first + n);
}

/* mamlc_meta_grad_tasks on a fuzzed slice: its count of partial sums, or
 * -1 and nothing written. */
static void fuzz_slice(Input *in, mamlc_workspace *ws) {
    int B = count(in, -1), first = count(in, -1), n = count(in, -1);
    int expect = partial_count(B, first, n);
    MUST(mamlc_partial_count(B, first, n) == expect);
    /* data for n tasks where the slice can be valid (n > MAX_TASKS needs B > max_batch) */
    Tasks t = tasks(in, n >= 0 && n <= MAX_TASKS ? n : 0);
    Buffers b;
    buffers(in, &b);
    unsigned nul = nulls(in);
    size_t vec = NREAL + 1, room = expect > 0 ? (size_t)expect * vec : 1;
    double *partial = malloc(room * sizeof *partial), *fresh = malloc(room * sizeof *fresh);
    if (!partial || !fresh)
        abort();
    memset(partial, 0x55, room * sizeof *partial);
    memcpy(fresh, partial, room * sizeof *fresh);
    const float *params = OR_NULL(nul, 0, b.params);
    double *out = OR_NULL(nul, 5, partial);
    bool null_data = nul & 0x1e;
    bool refuse = expect < 0 || B > MAX_TASKS || (n > 0 && (!params || !out || null_data || t.bad_sy || t.bad_qy));
    int got = mamlc_meta_grad_tasks(ws, params, B, first, n, OR_NULL(nul, 1, t.sx), OR_NULL(nul, 2, t.sy),
                                    OR_NULL(nul, 3, t.qx), OR_NULL(nul, 4, t.qy), out);
    if (refuse)
        MUST(got == -1 && memcmp(partial, fresh, room * sizeof *partial) == 0);
    else
        MUST(got == expect);
    free(partial);
    free(fresh);
    tasks_free(&t);
}

/* mamlc_meta_grad_reduce over a batch of good data, split at fuzzed bounds
 * into parts whose partial sums mamlc_meta_grad_tasks computed: where the
 * bounds cover the batch, the bits of mamlc_meta_grad_ws on it; otherwise
 * NaN and nothing written. */
static void fuzz_reduce(Input *in, mamlc_workspace *ws) {
    int B = 1 + byte(in) % MAX_TASKS;
    int nparts = byte(in) % 8 == 0 ? -(int)byte(in) : 1 + byte(in) % MAX_PARTS;
    int bound[MAX_PARTS + 1] = {0};
    bool cover = byte(in) % 4 != 0;             /* else arbitrary bounds */
    for (int k = 0; k <= nparts; k++) {
        int lo = k ? bound[k - 1] : 0;
        bound[k] = !cover ? (int8_t)byte(in) : k == 0 ? 0 : k == nparts ? B : lo + byte(in) % (B - lo + 1);
    }
    bool good = nparts >= 1 && bound[0] == 0 && bound[nparts] == B;
    for (int k = 0; good && k < nparts; k++)
        good = bound[k] <= bound[k + 1];
    Tasks t = tasks(in, B);
    for (int i = 0; i < B * N; i++) {
        t.sy[i] = (t.sy[i] % C + C) % C;
        t.qy[i] = (t.qy[i] % C + C) % C;
    }
    Buffers b;
    buffers(in, &b);
    float whole[NREAL], grad[NREAL];
    float loss = mamlc_meta_grad_ws(ws, b.params, B, t.sx, t.sy, t.qx, t.qy, whole);
    MUST(isfinite(loss));
    size_t vec = NREAL + 1, nvec = 0;
    for (int k = 0; good && k < nparts; k++)
        nvec += (size_t)partial_count(B, bound[k], bound[k + 1] - bound[k]);
    double *sums = malloc((nvec ? nvec : 1) * vec * sizeof *sums);
    if (!sums)
        abort();
    for (int k = 0, at = 0; good && k < nparts; k++) {
        int f = bound[k];
        at += mamlc_meta_grad_tasks(ws, b.params, B, f, bound[k + 1] - f, t.sx + f * N * F, t.sy + f * N,
                                    t.qx + f * N * F, t.qy + f * N, sums + (size_t)at * vec);
    }
    memcpy(grad, b.canary, sizeof grad);
    unsigned nul = nulls(in);
    float reduced = mamlc_meta_grad_reduce(ws, B, nparts, OR_NULL(nul, 0, bound), OR_NULL(nul, 1, sums),
                                           OR_NULL(nul, 2, grad));
    if (!good || (nul & 7))
        MUST(isnan(reduced) && memcmp(grad, b.canary, sizeof grad) == 0);
    else
        MUST(reduced == loss && memcmp(grad, whole, sizeof grad) == 0);
    free(sums);
    tasks_free(&t);
}

static void fuzz_parts(Input *in) {
    int th = threads(in);
    mamlc_workspace *ws = mamlc_workspace_new(MAX_TASKS, th <= 3 ? th : 1);
    MUST(ws != NULL);
    fuzz_slice(in, ws);
    fuzz_reduce(in, ws);
    mamlc_workspace_free(ws);
}

/* mamlc_adapt, mamlc_loss, mamlc_predict and mamlc_apply_grad on one task. */
static void fuzz_one(Input *in, int kind) {
    Tasks t = tasks(in, 1);
    Buffers b;
    buffers(in, &b);
    unsigned nul = nulls(in);
    float *params = OR_NULL(nul, 0, b.params);
    float *out = OR_NULL(nul, 3, b.out);
    if (kind == 0) {
        int steps = byte(in) % 8 == 0 ? (byte(in) % 2 ? -1 : INT_MIN) : byte(in) % 4;
        const float *sx = OR_NULL(nul, 1, t.sx);
        const int32_t *sy = OR_NULL(nul, 2, t.sy);
        mamlc_adapt(params, steps, sx, sy, out);
        if (out)
            MUST(!params || !sx || !sy || steps < 0 || t.bad_sy ? all_nan(out, NREAL) : all_finite(out, NREAL));
    } else if (kind == 1) {
        const float *qx = OR_NULL(nul, 1, t.qx);
        const int32_t *qy = OR_NULL(nul, 2, t.qy);
        float loss = mamlc_loss(params, qx, qy);
        MUST(!params || !qx || !qy || t.bad_qy ? isnan(loss) : isfinite(loss));
    } else if (kind == 2) {
        const float *qx = OR_NULL(nul, 1, t.qx);
        float z[N * C];
        memset(z, 0x55, sizeof z);
        mamlc_predict(params, qx, nul >> 3 & 1 ? NULL : z);
        if (!(nul >> 3 & 1))
            MUST(!params || !qx ? all_nan(z, N * C) : all_finite(z, N * C));
    } else {
        float grad[NREAL];
        reals(in, grad, NREAL);
        float *state = OR_NULL(nul, 1, b.state);
        mamlc_apply_grad(params, state, OR_NULL(nul, 2, grad));
        if (nul & 7)
            MUST(untouched(&b));
        else
            MUST(all_finite(b.params, NREAL) && b.state[2 * NREAL] == 1);
    }
    tasks_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Input in = {data, size};
    MUST(mamlc_state_count() == 2 * NREAL + 1);
    uint8_t op = byte(&in) % 9;
    if (op < 4)
        fuzz_meta(&in, op);
    else if (op == 4)
        fuzz_parts(&in);
    else
        fuzz_one(&in, op - 5);
    return 0;
}
