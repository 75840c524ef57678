/* Batch norm's running statistics (MAML++'s BNRS, `eval_mode` in the meta
 * block), in f64, against hand formulas written here:
 *   - the meta-step's batch statistics: for inner step s (from 0), the
 *     mean and the unbiased variance (Σ (h − mean)² / (n − 1)) of each
 *     feature of the pre-batch-norm activation h = sx W1ᵀ at θ_s, the
 *     params after s inner steps (from the compiled adapt_step, which
 *     test_per_step_bn checks), for a dense layer and for a convolution
 *     (features over axes 0, 2, 3);
 *   - rt_train's update, running ← 0.9 running + 0.1 mean over the tasks
 *     of their statistics, summed here one task after another in task
 *     order, from means 0 and variances 1, over two meta-iterations;
 *   - the same bits with 1 and 2 threads;
 *   - the inference forms: eval_loss.running with the batch's own
 *     statistics (biased variance) equals eval_loss, and
 *     adapt_step.running steps along its gradient (central differences). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "../../runtime/runtime.h"
#include "compile_model.h"
#include "check.h"

/* A dense layer, batch norm over its 5 features (per step), a head. */
static const char *const dense_model =
    "dim N = 6;\n"
    "param W1 : [5, 3] = he;\n"
    "param g1 : [5] = ones per_step;  param e1 : [5] = zeros per_step;\n"
    "param W2 : [2, 5] = glorot;      param b2 : [2] = normal(0.1);\n"
    "def net(x) = linear(tanh(batch_norm(x @ transpose(W1), g1, e1)), W2, b2);\n"
    "def loss(x, y) = mean((net(x) - y)^2);\n"
    "task external { support x : [N, 3], y : [N, 2]; query x : [N, 3], y : [N, 2]; }\n"
    "meta { inner_lr = 0.3; inner_steps = 2; eval_mode = running_stats; meta_batch = %d; optimizer = sgd(lr = 0.1); "
    "}\n";

/* A 1x1 convolution without bias (so h is a product the test computes)
 * on 4 x 2 x 2 images of 3 channels, batch norm over its 4 channels. */
static const char *const conv_model =
    "dim N = 4;\n"
    "param W1 : [4, 3, 1, 1] = he;\n"
    "param g1 : [4] = ones;  param e1 : [4] = zeros;\n"
    "param W2 : [2, 16] = glorot;     param b2 : [2] = normal(0.1);\n"
    "def loss(x, y) = mean((linear(flatten(tanh(batch_norm(conv2d(x, W1, zeros_bias(W1)), g1, e1))), W2, b2) "
    "- y)^2);\n"
    "def zeros_bias(w) = sum(w, [1, 2, 3]) * 0;\n"
    "task external { support x : [N, 3, 2, 2], y : [N, 2]; query x : [N, 3, 2, 2], y : [N, 2]; }\n"
    "meta { inner_lr = 0.3; inner_steps = 2; eval_mode = running_stats; meta_batch = %d; optimizer = sgd(lr = 0.1); "
    "}\n";

#define MAXT 16

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
    const IrFunc *meta, *adapt, *loss, *loss_running;
} Compiled;

static bool compile(Compiled *c, const char *tmpl, int B) {
    char text[2048];
    snprintf(text, sizeof text, tmpl, B);
    if (!compile_model(text, NULL, 1, &c->md, &c->m, &c->jit))
        return false;
    c->meta = ir_module_find(c->m, "meta_step");
    c->adapt = ir_module_find(c->m, "adapt_step");
    c->loss = ir_module_find(c->m, "eval_loss");
    c->loss_running = ir_module_find(c->m, "eval_loss.running");
    return c->meta && c->adapt && c->loss && c->loss_running;
}

static void release(Compiled *c) {
    be_jit_free(c->jit);
    ir_module_free(c->m);
    model_free(c->md);
}

static void run(const Compiled *c, const IrFunc *f, const void *const *in, void *const *out) {
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    ((BeFn)be_jit_lookup(c->jit, f->name))(in, out, arena);
    free(arena);
}

static double urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

/* The program: every tensor of the model in one flat vector, the batch
 * statistics after it; tasks from a fixed random table. */
typedef struct {
    const Compiled *c;
    RtProgram p;
    RtParam param[MAXT];
    int step_copy[MAXT];
    size_t nx, ny;              /* reals of one set's x and y */
    double *data;               /* per task: sx, sy, qx, qy */
} Program;

static void sample(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy, void *qx, void *qy) {
    const Program *pr = ctx;
    const double *t = pr->data + task * 2 * (pr->nx + pr->ny);
    memcpy(sx, t, pr->nx * sizeof(double));
    memcpy(sy, t + pr->nx, pr->ny * sizeof(double));
    memcpy(qx, t + pr->nx + pr->ny, pr->nx * sizeof(double));
    memcpy(qy, t + 2 * pr->nx + pr->ny, pr->ny * sizeof(double));
}

static void program(Program *pr, const Compiled *c, int tasks) {
    const Model *md = c->md;
    *pr = (Program){.c = c};
    size_t nreal = 0;
    for (int i = 0; i < md->ntensor; i++) {
        size_t n = (size_t)ir_numel(md->param[i].type);
        pr->param[i] = (RtParam){md->param[i].name, nreal, n, {0}};
        pr->step_copy[i] = -1;
        nreal += n;
    }
    for (int i = 0; i < md->nparam; i++)   /* the copies follow the params (no learned rates) */
        if (md->param[i].per_step)
            pr->step_copy[i] = md->nparam + (i == 1 ? 0 : 1);
    size_t L = 0;
    for (int b = 0; b < md->nbn; b++)
        L += 2 * (size_t)md->bn[b].channels;
    pr->nx = (size_t)ir_numel(md->task.support_x);
    pr->ny = (size_t)ir_numel(md->task.support_y);
    pr->data = malloc((size_t)tasks * 2 * (pr->nx + pr->ny) * sizeof(double));
    for (size_t k = 0; k < (size_t)tasks * 2 * (pr->nx + pr->ny); k++)
        pr->data[k] = 2 * urand() - 1;
    BeJit *j = c->jit;
    pr->p = (RtProgram){.real = RT_F64, .nreal = nreal, .param = pr->param, .nparam = md->ntensor,
                        .sx_bytes = pr->nx * 8, .sy_bytes = pr->ny * 8, .qx_bytes = pr->nx * 8,
                        .qy_bytes = pr->ny * 8,
                        .meta_step = {(RtFn)be_jit_lookup(j, "meta_step"), be_arena_bytes(c->meta)},
                        .adapt_step = {(RtFn)be_jit_lookup(j, "adapt_step"), be_arena_bytes(c->adapt)},
                        .loss = {(RtFn)be_jit_lookup(j, "eval_loss"), be_arena_bytes(c->loss)},
                        .sample = sample, .sample_ctx = pr, .meta_batch = md->meta.meta_batch,
                        .optimizer = {RT_SGD, 0.1, 0, 0, 0},
                        .step_copy = pr->step_copy, .step_copies = md->meta.inner_steps,
                        .nstat = (size_t)md->meta.inner_steps * L};
}

/* The pre-batch-norm activation h [n, F] of the model at W1 on x, and
 * the unbiased statistics of each feature into mean[F], var[F]. */
static void hand_stats(const Model *md, const double *W1, const double *x, double *mean, double *var) {
    IrType t = md->task.support_x;
    int F = md->bn[0].channels, n = t.dim[0], cin = t.dim[1], hw = t.rank == 4 ? t.dim[2] * t.dim[3] : 1;
    int count = n * hw;
    double h[256];
    for (int i = 0; i < n; i++)
        for (int f = 0; f < F; f++)
            for (int p = 0; p < hw; p++) {
                double s = 0;   /* dense: x[i, :] . W1[f, :]; conv 1x1: x[i, :, p] . W1[f, :] */
                for (int k = 0; k < cin; k++)
                    s += x[(i * cin + k) * hw + p] * W1[f * cin + k];
                h[(i * F + f) * hw + p] = s;
            }
    for (int f = 0; f < F; f++) {
        double m = 0, v = 0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++)
                m += h[(i * F + f) * hw + p];
        m /= count;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++)
                v += (h[(i * F + f) * hw + p] - m) * (h[(i * F + f) * hw + p] - m);
        mean[f] = m;
        var[f] = v / (count - 1);
    }
}

/* Task t's batch statistics by hand, S vectors of [means, variances],
 * at params (the flat vector): θ_s from the compiled adapt_step. */
static void task_stats(const Program *pr, const double *params, int t, double *out) {
    const Compiled *c = pr->c;
    const RtProgram *p = &pr->p;
    int S = p->step_copies, F = c->md->bn[0].channels;
    double *cur = malloc(p->nreal * sizeof(double)), *next = malloc(p->nreal * sizeof(double)), loss;
    memcpy(cur, params, p->nreal * sizeof(double));
    memcpy(next, params, p->nreal * sizeof(double));
    const double *sx = pr->data + (size_t)t * 2 * (pr->nx + pr->ny), *sy = sx + pr->nx;
    for (int s = 0; s < S; s++) {
        hand_stats(c->md, cur + pr->param[0].offset, sx, out + s * 2 * F, out + s * 2 * F + F);
        const void *in[MAXT + 2];
        void *o[MAXT + 1];
        for (int i = 0; i < p->nparam; i++) {   /* step s's copy in the per-step slots */
            int k = pr->step_copy[i] >= 0 && s > 0 ? pr->step_copy[i] : i;
            in[i] = cur + pr->param[k].offset;
            o[i] = next + pr->param[k].offset;
        }
        in[p->nparam] = sx;
        in[p->nparam + 1] = sy;
        o[p->nparam] = &loss;
        run(c, c->adapt, in, o);
        memcpy(cur, next, p->nreal * sizeof(double));
    }
    free(cur);
    free(next);
}

/* eval_loss.running at the tensors in[0..nparam), statistics in[nparam],
 * on the set in[nparam + 1], in[nparam + 2] (the support set: both sets
 * have one shape here), for central differences. */
typedef struct {
    const Compiled *c;
    const void **in;
} RunningLoss;

static double running_loss(void *ctx) {
    const RunningLoss *r = ctx;
    double l;
    run(r->c, r->c->loss_running, r->in, (void *[]){&l});
    return l;
}

/* Adaptation with running statistics: adapt_step.running's step of each
 * adapted param, (θ − θ') / α, against central differences of the loss in
 * inference form, whose gradient its ops' rules make. */
static void check_adapt_running(const Compiled *c, const Program *pr, double *params, const double *bn,
                                const char *label) {
    const RtProgram *p = &pr->p;
    const void *in[MAXT + 3];
    void *out[MAXT + 1];
    double *next = malloc(p->nreal * sizeof(double)), loss, worst = 0;
    for (int i = 0; i < p->nparam; i++) {
        in[i] = params + pr->param[i].offset;
        out[i] = next + pr->param[i].offset;
    }
    in[p->nparam] = bn;
    in[p->nparam + 1] = pr->data;
    in[p->nparam + 2] = pr->data + pr->nx;
    out[p->nparam] = &loss;
    run(c, ir_module_find(c->m, "adapt_step.running"), in, out);
    RunningLoss r = {c, in};
    for (int i = 0; i < c->md->nparam; i++) {
        if (!ir_meta_adapts(&c->md->meta, i))
            continue;
        for (size_t k = 0; k < pr->param[i].count; k++) {
            double *x = params + pr->param[i].offset + k, got = (*x - next[pr->param[i].offset + k]) / 0.3;
            double fd = check_central_diff(running_loss, &r, x, 1e-5, got, 1e-8);
            worst = fmax(worst, fabs(fd - got) / fmax(1e-3, fabs(got)));
        }
    }
    CHECK(worst <= 1e-6, "%s: adapt_step.running against central differences: worst error %.3g", label, worst);
    free(next);
}

/* Two meta-iterations of rt_train with `threads` threads; params gets the
 * result (nreal + nstat reals, from init). */
static bool train(const Program *pr, const double *init, int threads, double *params) {
    memcpy(params, init, (pr->p.nreal + pr->p.nstat) * sizeof(double));
    RtTrainOptions o = {.iterations = 2, .threads = threads};
    RtReport rep;
    return rt_train(&pr->p, &o, params, &rep) && rep.iterations == 2;
}

static void run_case(const char *label, const char *tmpl) {
    enum { B = 3 };
    Compiled c;
    if (!compile(&c, tmpl, B)) {
        CHECK(false, "%s: compiles", label);
        return;
    }
    Program pr;
    program(&pr, &c, 2 * B);
    const RtProgram *p = &pr.p;
    int F = c.md->bn[0].channels, S = p->step_copies;
    CHECK(c.md->nbn == 1 && strcmp(c.md->bn[0].name, "g1") == 0 && p->nstat == (size_t)(S * 2 * F),
          "%s: one batch_norm, named g1, %zu statistics", label, p->nstat);
    size_t total = p->nreal + p->nstat;
    double *init = malloc(total * sizeof(double)), *got = malloc(total * sizeof(double));
    double *two = malloc(total * sizeof(double));
    for (size_t k = 0; k < p->nreal; k++)
        init[k] = 0.5 * (2 * urand() - 1) + (k >= pr.param[1].offset && k < pr.param[1].offset + (size_t)F);
    for (int s = 0; s < S; s++)
        for (int f = 0; f < 2 * F; f++)   /* means 0, variances 1 */
            init[p->nreal + (size_t)(s * 2 * F + f)] = f < F ? 0 : 1;

    /* the meta-step's statistics of one task against the hand formula */
    double want[64], grad_loss[256], *stats = malloc(p->nstat * sizeof(double));
    const void *in[MAXT + 4];
    void *out[MAXT + 2];
    for (int i = 0; i < p->nparam; i++) {
        in[i] = init + pr.param[i].offset;
        out[1 + i] = grad_loss;
    }
    const double *t0 = pr.data;
    in[p->nparam] = t0;
    in[p->nparam + 1] = t0 + pr.nx;
    in[p->nparam + 2] = t0 + pr.nx + pr.ny;
    in[p->nparam + 3] = t0 + 2 * pr.nx + pr.ny;
    out[0] = grad_loss;
    out[1 + p->nparam] = stats;
    double *scratch[MAXT];
    for (int i = 0; i < p->nparam; i++)
        out[1 + i] = scratch[i] = malloc(pr.param[i].count * sizeof(double));
    run(&c, c.meta, in, out);
    task_stats(&pr, init, 0, want);
    double err = 0;
    for (size_t k = 0; k < p->nstat; k++)
        err = fmax(err, fabs(stats[k] - want[k]) / fmax(1, fabs(want[k])));
    CHECK(err <= 1e-12, "%s: the meta-step's batch statistics: worst error %.3g", label, err);
    CHECK(fabs(stats[0] - stats[2 * F]) > 1e-6, "%s: the steps' statistics differ", label);

    /* two meta-iterations of rt_train against the update by hand */
    double *params = malloc(total * sizeof(double)), *mid = malloc(total * sizeof(double));
    CHECK(train(&pr, init, 1, got), "%s: rt_train runs", label);
    memcpy(params, init, total * sizeof(double));
    for (int it = 0; it < 2; it++) {
        double mean[64] = {0};
        for (int b = 0; b < B; b++) {   /* task order */
            double ts[64];
            task_stats(&pr, params, it * B + b, ts);
            for (size_t k = 0; k < p->nstat; k++)
                mean[k] += ts[k];
        }
        for (size_t k = 0; k < p->nstat; k++)
            params[p->nreal + k] = 0.9 * params[p->nreal + k] + 0.1 * (mean[k] / B);
        /* the params themselves from rt_train's first iteration: the
         * statistics of the second are taken at them */
        if (it == 0) {
            RtTrainOptions o = {.iterations = 1};
            RtReport rep;
            memcpy(mid, init, total * sizeof(double));
            CHECK(rt_train(p, &o, mid, &rep), "%s: one iteration", label);
            memcpy(params, mid, p->nreal * sizeof(double));
        }
    }
    err = 0;
    for (size_t k = 0; k < p->nstat; k++)
        err = fmax(err, fabs(got[p->nreal + k] - params[p->nreal + k]) / fmax(1, fabs(params[p->nreal + k])));
    CHECK(err <= 1e-12, "%s: running statistics after two iterations: worst error %.3g", label, err);

    /* the same bits with 2 threads */
    CHECK(train(&pr, init, 2, two) && memcmp(got, two, total * sizeof(double)) == 0,
          "%s: 1 and 2 threads give the same bits", label);

    /* the inference form with the batch's own statistics (biased
     * variance) is the loss with batch statistics, at copy 0 */
    double bs[64], l_batch, l_run;
    hand_stats(c.md, init + pr.param[0].offset, t0 + pr.nx + pr.ny, bs, bs + F);
    int n = c.md->task.query_x.dim[0] * (c.md->task.query_x.rank == 4 ? 4 : 1);
    for (int f = 0; f < F; f++)
        bs[F + f] *= (double)(n - 1) / n;
    const void *lin[MAXT + 3];
    for (int i = 0; i < p->nparam; i++)
        lin[i] = init + pr.param[i].offset;
    lin[p->nparam] = t0 + pr.nx + pr.ny;
    lin[p->nparam + 1] = t0 + 2 * pr.nx + pr.ny;
    run(&c, c.loss, lin, (void *[]){&l_batch});
    lin[p->nparam] = bs;
    lin[p->nparam + 1] = t0 + pr.nx + pr.ny;
    lin[p->nparam + 2] = t0 + 2 * pr.nx + pr.ny;
    run(&c, c.loss_running, lin, (void *[]){&l_run});
    CHECK(fabs(l_batch - l_run) <= 1e-12 * fmax(1, fabs(l_batch)), "%s: eval_loss.running %.17g, eval_loss %.17g",
          label, l_run, l_batch);

    check_adapt_running(&c, &pr, init, want, label);
    for (int i = 0; i < p->nparam; i++)
        free(scratch[i]);
    free(stats);
    free(init);
    free(got);
    free(two);
    free(params);
    free(mid);
    free(pr.data);
    release(&c);
}

int main(void) {
    srand(7);
    run_case("dense layer, per-step batch norm", dense_model);
    run_case("convolution, batch norm", conv_model);
    return check_summary();
}
