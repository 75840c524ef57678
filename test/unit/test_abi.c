/* The shared library that `mamlc FILE.mdl -o LIB.so` builds, through its C
 * ABI (dlopen): it must compute exactly what the JIT computes (the same
 * bits), its meta-gradient must match central differences in f64, and its
 * other entry points must agree with the compiler's own functions. */
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "build_model.h"
#include "../../runtime/runtime.h"
#include "alloc_count.h"
#include "check.h"

/* A model's meta_batch fits the runtime's meta-batch (mamlc run's and the ABI's). */
_Static_assert(META_MAX_BATCH == RT_MAX_BATCH, "the frontend's bound on meta_batch is the runtime's");

static const char *const regression =
    "dim K = 6;\n"
    "param W1 : [16, 1] = he;  param b1 : [16] = normal(0.1);\n"
    "param W2 : [1, 16] = he;  param b2 : [1] = zeros;\n"
    "def net(x) = linear(tanh(linear(x, W1, b1)), W2, b2);\n"
    "def loss(x, y) = mean((net(x) - y)^2);\n"
    "task external { support x : [K, 1], y : [K, 1]; query x : [K, 1], y : [K, 1]; }\n"
    "meta { inner_steps = 2; inner_lr = 0.05; }\n";

static const char *const classifier =
    "dim N = 6; dim C = 3;\n"
    "param W : [C, 4] = glorot;  param b : [C] = zeros;\n"
    "def net(x) = linear(x, W, b);\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [N, 4], y : i32[N]; query x : [N, 4], y : i32[N]; }\n"
    "meta { inner_lr = learned(0.3); }\n";

typedef struct {
    void *so;
    int (*abi_version)(void);
    size_t (*param_count)(void), (*state_count)(void);
    void (*init)(void *, void *, uint64_t);
    double (*meta_grad_d)(const void *, int, const void *, const void *, const void *, const void *, void *);
    float (*meta_grad_f)(const void *, int, const void *, const void *, const void *, const void *, void *);
    void (*adapt)(const void *, int, const void *, const void *, void *);
    void (*predict)(const void *, const void *, void *);
    double (*loss_d)(const void *, const void *, const void *);
    float (*loss_f)(const void *, const void *, const void *);
    void (*apply_grad)(void *, void *, const void *);
    const char *(*model_json)(void);
    void *(*workspace_new)(int, int);
    void (*workspace_free)(void *);
    double (*meta_grad_ws_d)(void *, const void *, int, const void *, const void *, const void *, const void *, void *);
    float (*meta_grad_ws_f)(void *, const void *, int, const void *, const void *, const void *, const void *, void *);
    double (*meta_step_d)(void *, void *, int, const void *, const void *, const void *, const void *);
    float (*meta_step_f)(void *, void *, int, const void *, const void *, const void *, const void *);
    double (*meta_step_ws_d)(void *, void *, void *, int, const void *, const void *, const void *, const void *);
    float (*meta_step_ws_f)(void *, void *, void *, int, const void *, const void *, const void *, const void *);
    int (*partial_count)(int, int, int);
    int (*meta_grad_tasks)(void *, const void *, int, int, int, const void *, const void *, const void *,
                           const void *, double *);
    double (*meta_grad_reduce_d)(void *, int, int, const int *, const double *, void *);
    float (*meta_grad_reduce_f)(void *, int, int, const int *, const double *, void *);
} Lib;

/* mamlc TEXT -o DIR/NAME.so (with --dtype), then dlopen it. */
static bool build_library(const char *text, bool f64, Lib *lib) {
    char dir[] = "/tmp/mamlc-abi-XXXXXX", mdl[64], so[64];
    if (!mkdtemp(dir))
        return false;
    snprintf(mdl, sizeof mdl, "%s/model.mdl", dir);
    snprintf(so, sizeof so, "%s/model.so", dir);
    FILE *f = fopen(mdl, "w");
    fputs(text, f);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        execl(MAMLC_BINARY_DIR "/mamlc", "mamlc", mdl, "--dtype", f64 ? "f64" : "f32", "-o", so, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    lib->so = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? dlopen(so, RTLD_NOW | RTLD_LOCAL) : NULL;
    char h[64];
    snprintf(h, sizeof h, "%s/model.h", dir);
    unlink(mdl);
    unlink(so);
    unlink(h);
    rmdir(dir);
    if (!lib->so)
        return false;
    *(void **)&lib->abi_version = dlsym(lib->so, "mamlc_abi_version");
    *(void **)&lib->param_count = dlsym(lib->so, "mamlc_param_count");
    *(void **)&lib->state_count = dlsym(lib->so, "mamlc_state_count");
    *(void **)&lib->init = dlsym(lib->so, "mamlc_init");
    *(void **)&lib->meta_grad_d = dlsym(lib->so, "mamlc_meta_grad");
    *(void **)&lib->meta_grad_f = dlsym(lib->so, "mamlc_meta_grad");
    *(void **)&lib->adapt = dlsym(lib->so, "mamlc_adapt");
    *(void **)&lib->predict = dlsym(lib->so, "mamlc_predict");
    *(void **)&lib->loss_d = dlsym(lib->so, "mamlc_loss");
    *(void **)&lib->loss_f = dlsym(lib->so, "mamlc_loss");
    *(void **)&lib->apply_grad = dlsym(lib->so, "mamlc_apply_grad");
    *(void **)&lib->model_json = dlsym(lib->so, "mamlc_model_json");
    *(void **)&lib->workspace_new = dlsym(lib->so, "mamlc_workspace_new");
    *(void **)&lib->workspace_free = dlsym(lib->so, "mamlc_workspace_free");
    *(void **)&lib->meta_grad_ws_d = dlsym(lib->so, "mamlc_meta_grad_ws");
    *(void **)&lib->meta_grad_ws_f = dlsym(lib->so, "mamlc_meta_grad_ws");
    *(void **)&lib->meta_step_d = dlsym(lib->so, "mamlc_meta_step");
    *(void **)&lib->meta_step_f = dlsym(lib->so, "mamlc_meta_step");
    *(void **)&lib->meta_step_ws_d = dlsym(lib->so, "mamlc_meta_step_ws");
    *(void **)&lib->meta_step_ws_f = dlsym(lib->so, "mamlc_meta_step_ws");
    *(void **)&lib->partial_count = dlsym(lib->so, "mamlc_partial_count");
    *(void **)&lib->meta_grad_tasks = dlsym(lib->so, "mamlc_meta_grad_tasks");
    *(void **)&lib->meta_grad_reduce_d = dlsym(lib->so, "mamlc_meta_grad_reduce");
    *(void **)&lib->meta_grad_reduce_f = dlsym(lib->so, "mamlc_meta_grad_reduce");
    return lib->abi_version && lib->param_count && lib->init && lib->meta_grad_d && lib->adapt && lib->predict &&
           lib->loss_d && lib->apply_grad &&
           lib->workspace_new && lib->workspace_free && lib->meta_grad_ws_d && lib->meta_step_d &&
           lib->meta_step_ws_d && lib->partial_count && lib->meta_grad_tasks && lib->meta_grad_reduce_d;
}

/* The same model compiled in this process, as `mamlc run` does. */
typedef struct {
    Model *md;
    IrModule *m;
    BeJit *jit;
    RtProgram prog;
    RtParam param[16];
} Jit;

static bool build_jit(const char *text, bool f64, Jit *j) {
    Diag d;
    diag_init(&d, stderr);
    ModelOptions mo = {.real = f64 ? DT_F64 : DT_F32};
    j->md = model_load_text("model.mdl", text, strlen(text), &mo, &d);
    j->m = ir_module_new(mo.real);
    bool ok = j->md && build_model(j->md, j->m, NULL, &d);
    for (int i = 0; ok && i < j->m->nfunc; i++)
        ok = pass_optimize(j->m->func[i], NULL, &d);
    j->jit = ok ? be_jit_compile(j->m, NULL, &d) : NULL;
    diag_free(&d);
    if (!j->jit)
        return false;
    const Model *md = j->md;
    RtProgram *p = &j->prog;
    *p = (RtProgram){.real = f64 ? RT_F64 : RT_F32, .nparam = md->ntensor, .param = j->param, .meta_batch = 1};
    for (int i = 0; i < md->ntensor; i++) {
        const ModelParam *mp = &md->param[i];
        RtInit init = {(RtInitKind)mp->init.kind, mp->init.a, mp->init.b, mp->type.rank, mp->type.dim};
        j->param[i] = (RtParam){mp->name, p->nreal, (size_t)ir_numel(mp->type), init};
        p->nreal += j->param[i].count;
    }
    IrFunc *step = ir_module_find(j->m, "meta_step");
    p->meta_step = (RtEntry){(RtFn)be_jit_lookup(j->jit, "meta_step"), be_arena_bytes(step)};
    const ModelTask *t = &md->task;
    p->sx_bytes = (size_t)ir_numel(t->support_x) * ir_dtype_size(t->support_x.dtype);
    p->sy_bytes = (size_t)ir_numel(t->support_y) * ir_dtype_size(t->support_y.dtype);
    p->qx_bytes = (size_t)ir_numel(t->query_x) * ir_dtype_size(t->query_x.dtype);
    p->qy_bytes = (size_t)ir_numel(t->query_y) * ir_dtype_size(t->query_y.dtype);
    return true;
}

static void free_jit(Jit *j) {
    be_jit_free(j->jit);
    ir_module_free(j->m);
    model_free(j->md);
}

/* B tasks of random data, laid out task after task; labels below 3. */
static void *random_tensor(size_t bytes, bool labels, bool f64) {
    char *p = malloc(bytes);
    size_t n = bytes / 4 / (f64 && !labels ? 2 : 1);
    for (size_t i = 0; i < n; i++) {
        if (labels)
            ((int32_t *)p)[i] = rand() % 3;
        else if (f64)
            ((double *)p)[i] = 2.0 * rand() / RAND_MAX - 1;
        else
            ((float *)p)[i] = (float)(2.0 * rand() / RAND_MAX - 1);
    }
    return p;
}

/* Whether all n bytes at p are `byte`: what a refused call left alone. */
static bool all_bytes(const void *p, size_t n, unsigned char byte) {
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != byte)
            return false;
    return true;
}

/* A workspace with 1 or 3 threads, and the tasks split into 1-7 parts
 * (mamlc_meta_grad_tasks, then mamlc_meta_grad_reduce), give the JIT's
 * meta-gradient bit for bit; mamlc_meta_step_ws is mamlc_meta_step. */
static void check_workspace(const char *label, const Lib *lib, bool f64, size_t n, const void *params,
                            const char *sx, const char *sy, const char *qx, const char *qy, const char *g_jit,
                            double loss_jit, const RtProgram *p) {
    enum { B = 5 };
    size_t rb = f64 ? 8 : 4;
    char *g = malloc(n * rb);
    double *partials = malloc(2 * B * (n + 1) * sizeof(double));
    bool same = true;
    for (int threads = 1; threads <= 3; threads += 2) {
        void *ws = lib->workspace_new(B, threads);
        CHECK(ws != NULL, "%s: mamlc_workspace_new(%d, %d)", label, B, threads);
        if (!ws)
            continue;
        double loss = f64 ? lib->meta_grad_ws_d(ws, params, B, sx, sy, qx, qy, g)
                          : lib->meta_grad_ws_f(ws, params, B, sx, sy, qx, qy, g);
        same &= memcmp(g, g_jit, n * rb) == 0 && loss == (f64 ? loss_jit : (float)loss_jit);
        for (int nparts = 1; nparts <= 7; nparts++) {        /* 6 and 7 have empty parts */
            int bound[8], at = 0;
            for (int k = 0; k <= nparts; k++)
                bound[k] = k * B / nparts;
            for (int k = 0; k < nparts; k++) {
                int first = bound[k], count = bound[k + 1] - first;
                int got = lib->meta_grad_tasks(ws, params, B, first, count, sx + first * p->sx_bytes,
                                               sy + first * p->sy_bytes, qx + first * p->qx_bytes,
                                               qy + first * p->qy_bytes, partials + at * (n + 1));
                same &= got == lib->partial_count(B, first, count) && got >= 0;
                at += got;
            }
            memset(g, 0, n * rb);
            loss = f64 ? lib->meta_grad_reduce_d(ws, B, nparts, bound, partials, g)
                       : lib->meta_grad_reduce_f(ws, B, nparts, bound, partials, g);
            same &= memcmp(g, g_jit, n * rb) == 0 && loss == (f64 ? loss_jit : (float)loss_jit);
        }
        lib->workspace_free(ws);
    }
    CHECK(same, "%s: workspaces, threads and parts give mamlc_meta_grad's bits", label);

    /* two steps with and without a workspace */
    size_t ns = lib->state_count();
    char *p1 = malloc(n * rb), *p2 = malloc(n * rb), *s1 = calloc(ns, rb), *s2 = calloc(ns, rb);
    memcpy(p1, params, n * rb);
    memcpy(p2, params, n * rb);
    void *ws = lib->workspace_new(B, 2);
    for (int step = 0; step < 2; step++) {
        if (f64) {
            lib->meta_step_d(p1, s1, B, sx, sy, qx, qy);
            lib->meta_step_ws_d(ws, p2, s2, B, sx, sy, qx, qy);
        } else {
            lib->meta_step_f(p1, s1, B, sx, sy, qx, qy);
            lib->meta_step_ws_f(ws, p2, s2, B, sx, sy, qx, qy);
        }
    }
    CHECK(memcmp(p1, p2, n * rb) == 0 && memcmp(s1, s2, ns * rb) == 0 && memcmp(p1, params, n * rb) != 0,
          "%s: mamlc_meta_step_ws is mamlc_meta_step", label);

    /* with a workspace, steps and partial sums allocate nothing, on 2 threads too */
    long before = alloc_count();
    for (int step = 0; step < 5; step++) {
        if (f64)
            lib->meta_step_ws_d(ws, p2, s2, B, sx, sy, qx, qy);
        else
            lib->meta_step_ws_f(ws, p2, s2, B, sx, sy, qx, qy);
        int bound[] = {0, 2, B};
        int at = lib->meta_grad_tasks(ws, p2, B, 0, 2, sx, sy, qx, qy, partials);
        lib->meta_grad_tasks(ws, p2, B, 2, B - 2, sx + 2 * p->sx_bytes, sy + 2 * p->sy_bytes,
                             qx + 2 * p->qx_bytes, qy + 2 * p->qy_bytes, partials + at * (n + 1));
        if (f64)
            lib->meta_grad_reduce_d(ws, B, 2, bound, partials, g);
        else
            lib->meta_grad_reduce_f(ws, B, 2, bound, partials, g);
    }
    long during = alloc_count() - before;
    void *counted = lib->workspace_new(B, 2);
    CHECK(during == 0 && alloc_count() > before, "%s: %ld allocations in 5 steps with a workspace (and "
          "some in mamlc_workspace_new, so they are counted)", label, during);
    lib->workspace_free(counted);

    /* refused: a slice past B, B past the workspace, bounds that do not cover B */
    int bad[] = {0, 2, 4};
    CHECK(lib->partial_count(B, 3, 3) == -1 && lib->partial_count(B, -1, 1) == -1 &&
              lib->partial_count(B, 2, 0) == 0 &&
              lib->meta_grad_tasks(ws, params, B, 2, 0, sx, sy, qx, qy, NULL) == 0,
          "%s: slices past B are refused, empty ones have no partial sums", label);
    CHECK(lib->meta_grad_tasks(ws, params, B + 1, 0, 1, sx, sy, qx, qy, partials) == -1 &&
              lib->meta_grad_tasks(NULL, params, B, 0, 1, sx, sy, qx, qy, partials) == -1,
          "%s: mamlc_meta_grad_tasks refuses B past the workspace and no workspace", label);
    CHECK(isnan(f64 ? lib->meta_grad_reduce_d(ws, B, 2, bad, partials, g)
                    : lib->meta_grad_reduce_f(ws, B, 2, bad, partials, g)),
          "%s: mamlc_meta_grad_reduce refuses bounds that end before B", label);
    lib->workspace_free(ws);

    /* refused before anything is allocated: sizes past the runtime's limits
     * (max_batch + threads - 1 overflowed int for max_batch = INT_MAX) */
    CHECK(!lib->workspace_new(INT_MAX, 1) && !lib->workspace_new(RT_MAX_BATCH + 1, 1) &&
              !lib->workspace_new(0, 1) && !lib->workspace_new(INT_MIN, 1) &&
              !lib->workspace_new(1, RT_MAX_THREADS + 1) && !lib->workspace_new(1, INT_MAX),
          "%s: mamlc_workspace_new refuses max_batch outside [1, RT_MAX_BATCH] and threads above "
          "RT_MAX_THREADS", label);
    memset(g, 0x55, n * rb);
    double big = f64 ? lib->meta_grad_d(params, INT_MAX, sx, sy, qx, qy, g)
                     : lib->meta_grad_f(params, INT_MAX, sx, sy, qx, qy, g);
    CHECK(isnan(big) && all_bytes(g, n * rb, 0x55), "%s: mamlc_meta_grad refuses B = INT_MAX, writing nothing",
          label);
    free(p1);
    free(p2);
    free(s1);
    free(s2);
    free(g);
    free(partials);
}

/* What the refusal checks call the library with: B tasks of valid data. */
typedef struct {
    const Lib *lib;
    bool f64;
    int B;
    size_t n, rb, predict_count;
    const void *params;
    const char *sx, *sy, *qx, *qy;
    const RtProgram *p;
} Calls;

/* Whether all n reals at p are NaN: what a refused mamlc_adapt or
 * mamlc_predict leaves in its output. */
static bool all_nan(const void *p, size_t n, bool f64) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(f64 ? ((const double *)p)[i] : ((const float *)p)[i]))
            return false;
    return true;
}

/* The buffers a call may write: an output of n reals, a copy of the
 * parameters, zeroed optimiser state, and room for partial sums. */
typedef struct {
    char *out, *params, *state;
    double *partial;
    size_t npartial, nstate;
} Writes;

static void fresh(Writes *w, const Calls *c) {
    memset(w->out, 0x55, c->n * c->rb);
    memcpy(w->params, c->params, c->n * c->rb);
    memset(w->state, 0, w->nstate * c->rb);
    memset(w->partial, 0x55, w->npartial * sizeof(double));
}

static bool untouched(const Writes *w, const Calls *c) {
    return all_bytes(w->out, c->n * c->rb, 0x55) && memcmp(w->params, c->params, c->n * c->rb) == 0 &&
           all_bytes(w->state, w->nstate * c->rb, 0) && all_bytes(w->partial, w->npartial * sizeof(double), 0x55);
}

/* Every meta-batch entry point on (sx, sy, qx, qy): whether each refused
 * (NaN or -1) and wrote nothing; with `adapt`, whether mamlc_adapt filled
 * its output with NaN, and with `loss` whether mamlc_loss gave NaN (both on
 * task 0's data). */
static bool all_refused(const Calls *c, const void *sx, const void *sy, const void *qx, const void *qy,
                        bool adapt, bool loss) {
    const Lib *l = c->lib;
    size_t n = c->n, rb = c->rb;
    Writes w = {malloc(n * rb), malloc(n * rb), NULL, NULL, 2 * (size_t)c->B * (n + 1), l->state_count()};
    w.state = malloc(w.nstate * rb);
    w.partial = malloc(w.npartial * sizeof(double));
    void *ws = l->workspace_new(c->B, 2);
    bool ok = ws != NULL, f64 = c->f64;
    fresh(&w, c);
    ok &= isnan(f64 ? l->meta_grad_d(w.params, c->B, sx, sy, qx, qy, w.out)
                    : l->meta_grad_f(w.params, c->B, sx, sy, qx, qy, w.out)) && untouched(&w, c);
    ok &= isnan(f64 ? l->meta_step_d(w.params, w.state, c->B, sx, sy, qx, qy)
                    : l->meta_step_f(w.params, w.state, c->B, sx, sy, qx, qy)) && untouched(&w, c);
    ok &= isnan(f64 ? l->meta_grad_ws_d(ws, w.params, c->B, sx, sy, qx, qy, w.out)
                    : l->meta_grad_ws_f(ws, w.params, c->B, sx, sy, qx, qy, w.out)) && untouched(&w, c);
    ok &= isnan(f64 ? l->meta_step_ws_d(ws, w.params, w.state, c->B, sx, sy, qx, qy)
                    : l->meta_step_ws_f(ws, w.params, w.state, c->B, sx, sy, qx, qy)) && untouched(&w, c);
    ok &= l->meta_grad_tasks(ws, w.params, c->B, 0, c->B, sx, sy, qx, qy, w.partial) == -1 && untouched(&w, c);
    if (loss)
        ok &= isnan(f64 ? l->loss_d(w.params, qx, qy) : l->loss_f(w.params, qx, qy));
    if (adapt) {
        l->adapt(w.params, 1, sx, sy, w.out);
        ok &= all_nan(w.out, n, f64);
    }
    l->workspace_free(ws);
    free(w.out);
    free(w.params);
    free(w.state);
    free(w.partial);
    return ok;
}

/* Labels outside [0, 3) anywhere in a batch's sy or qy, and NULL pointers
 * where docs/abi.md allows none, are refused by every entry point: a NaN (or
 * -1) and nothing written, or outputs filled with NaN. */
static void check_refusals(const char *label, const Calls *c, bool labels) {
    const Lib *l = c->lib;
    size_t n = c->n, rb = c->rb;
    bool f64 = c->f64, ok = true;
    char *out = malloc(n * rb);
    if (labels) {
        const int32_t bad[] = {3, -1, INT_MAX, INT_MIN};
        size_t count = c->p->sy_bytes / sizeof(int32_t), total = (size_t)c->B * count;
        const size_t at[] = {0, count - 1, total - 1};          /* task 0's first and last, the batch's last */
        int32_t *y = malloc(total * sizeof *y);
        for (size_t b = 0; b < sizeof bad / sizeof *bad; b++)
            for (size_t k = 0; k < sizeof at / sizeof *at; k++) {
                bool task0 = at[k] < count;
                memcpy(y, c->sy, total * sizeof *y);
                y[at[k]] = bad[b];
                ok &= all_refused(c, c->sx, y, c->qx, c->qy, task0, false);
                memset(out, 0x55, n * rb);
                l->adapt(c->params, 0, c->sx, y, task0 ? out : NULL);   /* refused with no step to take too */
                ok &= !task0 || all_nan(out, n, f64);
                memcpy(y, c->qy, total * sizeof *y);
                y[at[k]] = bad[b];
                ok &= all_refused(c, c->sx, c->sy, c->qx, y, false, task0);
            }
        free(y);
        CHECK(ok, "%s: labels 3, -1, INT_MAX and INT_MIN in sy or qy are refused by every entry point", label);
    }

    ok = all_refused(c, NULL, c->sy, c->qx, c->qy, true, false) &&
         all_refused(c, c->sx, NULL, c->qx, c->qy, true, false) &&
         all_refused(c, c->sx, c->sy, NULL, c->qy, false, true) &&
         all_refused(c, c->sx, c->sy, c->qx, NULL, false, true);
    CHECK(ok, "%s: NULL task data is refused by every entry point", label);

    /* NULL parameters, state, outputs and bounds; negative inner steps */
    size_t ns = l->state_count(), npartial = 2 * (size_t)c->B * (n + 1);
    char *params = malloc(n * rb), *state = calloc(ns, rb), *pred = malloc(c->predict_count * rb);
    double *partial = malloc(npartial * sizeof(double));
    const char *sx = c->sx, *sy = c->sy, *qx = c->qx, *qy = c->qy;
    int B = c->B, bound[] = {0, B};
    void *ws = l->workspace_new(B, 1);
    memcpy(params, c->params, n * rb);
    memset(out, 0x55, n * rb);
    memset(partial, 0x55, npartial * sizeof(double));
    ok = ws != NULL;
    ok &= isnan(f64 ? l->meta_grad_d(NULL, B, sx, sy, qx, qy, out) : l->meta_grad_f(NULL, B, sx, sy, qx, qy, out));
    ok &= isnan(f64 ? l->meta_grad_d(params, B, sx, sy, qx, qy, NULL)
                    : l->meta_grad_f(params, B, sx, sy, qx, qy, NULL));
    ok &= isnan(f64 ? l->meta_grad_ws_d(ws, params, B, sx, sy, qx, qy, NULL)
                    : l->meta_grad_ws_f(ws, params, B, sx, sy, qx, qy, NULL));
    ok &= isnan(f64 ? l->meta_step_d(NULL, state, B, sx, sy, qx, qy) : l->meta_step_f(NULL, state, B, sx, sy, qx, qy));
    ok &= isnan(f64 ? l->meta_step_d(params, NULL, B, sx, sy, qx, qy) : l->meta_step_f(params, NULL, B, sx, sy, qx, qy));
    ok &= isnan(f64 ? l->meta_step_ws_d(ws, params, NULL, B, sx, sy, qx, qy)
                    : l->meta_step_ws_f(ws, params, NULL, B, sx, sy, qx, qy));
    ok &= l->meta_grad_tasks(ws, NULL, B, 0, 1, sx, sy, qx, qy, partial) == -1 &&
          l->meta_grad_tasks(ws, params, B, 0, 1, sx, sy, qx, qy, NULL) == -1;
    ok &= isnan(f64 ? l->meta_grad_reduce_d(ws, B, 1, NULL, partial, out)
                    : l->meta_grad_reduce_f(ws, B, 1, NULL, partial, out)) &&
          isnan(f64 ? l->meta_grad_reduce_d(ws, B, 1, bound, NULL, out)
                    : l->meta_grad_reduce_f(ws, B, 1, bound, NULL, out)) &&
          isnan(f64 ? l->meta_grad_reduce_d(ws, B, 1, bound, partial, NULL)
                    : l->meta_grad_reduce_f(ws, B, 1, bound, partial, NULL));
    ok &= isnan(f64 ? l->loss_d(NULL, qx, qy) : l->loss_f(NULL, qx, qy));
    l->apply_grad(params, state, NULL);
    l->apply_grad(params, NULL, out);
    l->apply_grad(NULL, state, out);
    ok &= all_bytes(out, n * rb, 0x55) && memcmp(params, c->params, n * rb) == 0 && all_bytes(state, ns * rb, 0) &&
          all_bytes(partial, npartial * sizeof(double), 0x55);
    l->adapt(NULL, 1, sx, sy, out);
    ok &= all_nan(out, n, f64);
    memset(out, 0x55, n * rb);
    l->adapt(params, -1, sx, sy, out);
    ok &= all_nan(out, n, f64);
    l->adapt(params, 1, sx, sy, NULL);
    l->predict(params, qx, NULL);
    memset(pred, 0x55, c->predict_count * rb);
    l->predict(NULL, qx, pred);
    ok &= all_nan(pred, c->predict_count, f64);
    memset(pred, 0x55, c->predict_count * rb);
    l->predict(params, NULL, pred);
    ok &= all_nan(pred, c->predict_count, f64);
    CHECK(ok, "%s: NULL parameters, state, outputs and bounds, and negative inner steps, are refused", label);
    l->workspace_free(ws);
    free(out);
    free(params);
    free(state);
    free(pred);
    free(partial);
}

static void check_model(const char *label, const char *text, bool f64, bool labels) {
    Lib lib;
    Jit jit;
    if (!build_library(text, f64, &lib) || !build_jit(text, f64, &jit)) {
        CHECK(false, "%s: library and JIT build", label);
        return;
    }
    RtProgram *p = &jit.prog;
    size_t rb = f64 ? 8 : 4, n = p->nreal;
    CHECK(lib.abi_version() == 3, "%s: ABI version", label);
    CHECK(lib.param_count() == n, "%s: param count %zu vs %zu", label, lib.param_count(), n);
    CHECK(lib.state_count() == 2 * n + 1, "%s: Adam state is m, v and the step count", label);
    CHECK(strstr(lib.model_json(), "\"abi\": 3") != NULL, "%s: model JSON", label);

    /* mamlc_init is the driver's initialisation */
    char *params = malloc(n * rb), *mine = malloc(n * rb), *state = malloc(lib.state_count() * rb);
    lib.init(params, state, 42);
    rt_init_params(p, 42, mine);
    CHECK(memcmp(params, mine, n * rb) == 0, "%s: mamlc_init equals the JIT driver's initialisation", label);

    /* meta-gradient: library vs JIT, bit for bit */
    enum { B = 5 };
    void *sx = random_tensor(B * p->sx_bytes, false, f64), *sy = random_tensor(B * p->sy_bytes, labels, f64);
    void *qx = random_tensor(B * p->qx_bytes, false, f64), *qy = random_tensor(B * p->qy_bytes, labels, f64);
    RtTask tasks[B];
    for (size_t t = 0; t < B; t++)
        tasks[t] = (RtTask){(char *)sx + t * p->sx_bytes, (char *)sy + t * p->sy_bytes,
                            (char *)qx + t * p->qx_bytes, (char *)qy + t * p->qy_bytes};
    char *g_lib = malloc(n * rb), *g_jit = malloc(n * rb);
    RtStepWork w;
    rt_step_work_alloc(p, B, &w);
    double loss_jit = rt_meta_grad(p, &w, params, B, tasks, g_jit);
    double loss_lib = f64 ? lib.meta_grad_d(params, B, sx, sy, qx, qy, g_lib)
                          : lib.meta_grad_f(params, B, sx, sy, qx, qy, g_lib);
    CHECK(memcmp(g_lib, g_jit, n * rb) == 0 && loss_lib == (f64 ? loss_jit : (float)loss_jit),
          "%s: mamlc_meta_grad equals the JIT's meta-gradient bit for bit", label);
    check_workspace(label, &lib, f64, n, params, sx, sy, qx, qy, g_jit, loss_jit, p);

    /* mamlc_meta_step: the meta-gradient, then a step of the model's own
     * optimiser as `mamlc run` takes it; twice, so that the optimiser's
     * state and step count carry over */
    const OptimizerConfig *oc = &jit.md->meta.optimizer;
    RtOptimizer opt = {.kind = oc->kind == OPT_ADAM ? RT_ADAM : RT_SGD, .lr = oc->lr, .beta1 = oc->beta1,
                      .beta2 = oc->beta2, .eps = oc->eps};
    size_t ns = lib.state_count();
    char *p_lib = malloc(n * rb), *p_jit = malloc(n * rb), *g_step = malloc(n * rb);
    char *s_lib = calloc(ns, rb), *s_jit = calloc(ns, rb);
    memcpy(p_lib, params, n * rb);
    memcpy(p_jit, params, n * rb);
    bool same = true;
    for (long t = 1; t <= 2; t++) {
        double l_lib = f64 ? lib.meta_step_d(p_lib, s_lib, B, sx, sy, qx, qy)
                           : lib.meta_step_f(p_lib, s_lib, B, sx, sy, qx, qy);
        double l_jit = rt_meta_grad(p, &w, p_jit, B, tasks, g_step);
        rt_opt_step(&opt, p->real, n, p_jit, g_step, s_jit, t);
        same &= l_lib == (f64 ? l_jit : (float)l_jit);
    }
    same &= memcmp(p_lib, p_jit, n * rb) == 0 && memcmp(s_lib, s_jit, (ns - 1) * rb) == 0;
    CHECK(same, "%s: mamlc_meta_step is the meta-gradient and a step of the model's optimiser", label);
    free(p_lib);
    free(p_jit);
    free(g_step);
    free(s_lib);
    free(s_jit);
    IrFunc *predict = ir_module_find(jit.m, "predict");
    Calls calls = {&lib, f64, B, n, rb, (size_t)ir_numel(predict->node[predict->output[0]].type), params,
                   sx, sy, qx, qy, p};
    check_refusals(label, &calls, labels);
    CHECK(!labels || strstr(lib.model_json(), "\"y\": {\"shape\": [6], \"dtype\": \"i32\", \"classes\": 3}"),
          "%s: the model JSON gives the labels' class count", label);

    /* f64: the library's meta-gradient against central differences */
    if (f64) {
        double *x = (double *)params, *g = (double *)g_lib, *scratch = malloc(n * rb);
        double num = 0, den = 0, h = 1e-6;
        for (size_t i = 0; i < n; i++) {
            double keep = x[i];
            x[i] = keep + h;
            double up = lib.meta_grad_d(x, B, sx, sy, qx, qy, scratch);
            x[i] = keep - h;
            double down = lib.meta_grad_d(x, B, sx, sy, qx, qy, scratch);
            x[i] = keep;
            double fd = (up - down) / (2 * h);
            num += (fd - g[i]) * (fd - g[i]);
            den += g[i] * g[i];
        }
        double err = sqrt(num / den);
        printf("%-32s meta-gradient through the ABI vs finite differences: %.2e\n", label, err);
        CHECK(err <= 1e-6, "%s: ABI meta-gradient vs finite differences: %.3g", label, err);
        free(scratch);
    }
    rt_step_work_free(&w);
    free(params);
    free(mine);
    free(state);
    free(g_lib);
    free(g_jit);
    free(sx);
    free(sy);
    free(qx);
    free(qy);
    dlclose(lib.so);
    free_jit(&jit);
}

int main(void) {
    alloc_count_start();
    srand(7);
    check_model("regression f32", regression, false, false);
    check_model("regression f64", regression, true, false);
    check_model("Meta-SGD classifier f32", classifier, false, true);
    check_model("Meta-SGD classifier f64", classifier, true, true);
    return check_summary();
}
