/* Per-step batch-norm weights (MAML++'s BNWB, `param g : [..] = ones
 * per_step;`), in f64 at random points, against a reference that shares
 * nothing with the meta-step builder but the model's loss: the same model
 * without `per_step` gives grad and eval_loss, and the inner loop is
 * written out here: inner step s (from 0) takes the support gradient with
 * copy s of each per-step param, the query loss after k steps uses copy
 * min(max(k - 1, 0), S - 1), and only the other params are adapted.
 * Checked: the layout of the meta-learned tensors (NAME.0 in the param's
 * slot, NAME.1 .. NAME.{S-1} after the others), the query loss, the
 * meta-gradient against central differences of the reference meta-loss,
 * and the runtime's evaluation (rt_evaluate) past inner_steps, which must
 * reuse the last copy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "../../runtime/runtime.h"
#include "compile_model.h"
#include "check.h"

/* An MLP with batch norm over the points; %s: " per_step" or "" (twice),
 * then the meta block's entries. */
static const char *const model_text =
    "dim N = 6;\n"
    "param W1 : [5, 3] = he;      param b1 : [5] = normal(0.1);\n"
    "param g1 : [5] = ones%s;     param e1 : [5] = zeros%s;\n"
    "param W2 : [2, 5] = glorot;  param b2 : [2] = normal(0.1);\n"
    "def net(x) = linear(tanh(batch_norm(linear(x, W1, b1), g1, e1)), W2, b2);\n"
    "def loss(x, y) = mean((net(x) - y)^2) + 0.1 * mean(g1 * e1);\n"
    "task external { support x : [N, 3], y : [N, 2]; query x : [N, 3], y : [N, 2]; }\n"
    "meta { inner_lr = 0.3; %s }\n";

#define NP 6                    /* params */
#define G 2                     /* g1's slot; e1's is G + 1 */
#define MAXS 4                  /* inner steps of a case */
#define MAXT (NP + 2 * (MAXS - 1))

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
} Compiled;

static bool compile(Compiled *c, const char *per_step, const char *meta, const char *const *only) {
    char text[2048];
    snprintf(text, sizeof text, model_text, per_step, per_step, meta);
    return compile_model(text, only, 1, &c->md, &c->m, &c->jit);
}

static void release(Compiled *c) {
    be_jit_free(c->jit);
    ir_module_free(c->m);
    model_free(c->md);
}

static double urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

/* The reference: theta holds the meta_step's inputs (the nt tensors, then
 * sx, sy, qx, qy). */
typedef struct {
    Compiled plain;
    IrFunc *grad, *loss;
    int S, nt;
    bool adapt[NP];
    int64_t numel[NP];
    double *theta[MAXT + 4];
    double *cur[NP], *out[NP + 1];
} Ref;

/* The tensor of copy `copy` of per-step param p (G or G + 1). */
static double *copy_of(Ref *r, int p, int copy) {
    return copy == 0 ? r->theta[p] : r->theta[NP + (p - G) * (r->S - 1) + copy - 1];
}

static int clamp_copy(const Ref *r, int k) { return k < 0 ? 0 : k < r->S ? k : r->S - 1; }

/* The plain model's inputs: cur for the ordinary params, copy `copy` of
 * the per-step ones, then x and y. */
static void ref_inputs(Ref *r, int copy, double *x, double *y, double **in) {
    for (int p = 0; p < NP; p++)
        in[p] = p == G || p == G + 1 ? copy_of(r, p, copy) : r->cur[p];
    in[NP] = x;
    in[NP + 1] = y;
}

/* `steps` inner steps from theta into cur. */
static void ref_adapt(Ref *r, int steps) {
    for (int p = 0; p < NP; p++)
        memcpy(r->cur[p], r->theta[p], (size_t)r->numel[p] * sizeof(double));
    for (int s = 0; s < steps; s++) {
        double *in[NP + 2];
        ref_inputs(r, clamp_copy(r, s), r->theta[r->nt], r->theta[r->nt + 1], in);
        ir_eval(r->grad, (const double *const *)in, r->out);
        for (int p = 0; p < NP; p++)
            for (int64_t k = 0; r->adapt[p] && k < r->numel[p]; k++)
                r->cur[p][k] -= 0.3 * r->out[1 + p][k];
    }
}

/* The query loss at cur after k inner steps. */
static double ref_query(Ref *r, int k) {
    double *in[NP + 2], loss;
    ref_inputs(r, clamp_copy(r, k - 1), r->theta[r->nt + 2], r->theta[r->nt + 3], in);
    ir_eval(r->loss, (const double *const *)in, (double *[]){&loss});
    return loss;
}

static double ref_meta_loss(void *ctx) {
    Ref *r = ctx;
    ref_adapt(r, r->S);
    return ref_query(r, r->S);
}

/* The evaluation's task: the meta_step's support and query data. */
static void sample(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy, void *qx, void *qy) {
    const Ref *r = ctx;
    memcpy(sx, r->theta[r->nt], 6 * 3 * sizeof(double));
    memcpy(sy, r->theta[r->nt + 1], 6 * 2 * sizeof(double));
    memcpy(qx, r->theta[r->nt + 2], 6 * 3 * sizeof(double));
    memcpy(qy, r->theta[r->nt + 3], 6 * 2 * sizeof(double));
}

/* rt_evaluate after 0 .. S + 1 steps, with the compiled adapt_step and
 * eval_loss, against the reference. */
static void check_evaluation(Ref *r, Compiled *c, const char *label) {
    RtParam param[MAXT];
    int step_copy[MAXT];
    size_t nreal = 0;
    for (int i = 0; i < r->nt; i++) {
        size_t count = (size_t)ir_numel(c->md->param[i].type);
        param[i] = (RtParam){.name = c->md->param[i].name, .offset = nreal, .count = count};
        step_copy[i] = (i == G || i == G + 1) && r->S > 1 ? NP + (i - G) * (r->S - 1) : -1;
        nreal += count;
    }
    double *flat = malloc(nreal * sizeof *flat);
    for (int i = 0; i < r->nt; i++)
        memcpy(flat + param[i].offset, r->theta[i], param[i].count * sizeof *flat);
    IrFunc *adapt = ir_module_find(c->m, "adapt_step"), *loss = ir_module_find(c->m, "eval_loss");
    RtProgram p = {.real = RT_F64, .nreal = nreal, .param = param, .nparam = r->nt,
                   .sx_bytes = 6 * 3 * sizeof(double), .sy_bytes = 6 * 2 * sizeof(double),
                   .qx_bytes = 6 * 3 * sizeof(double), .qy_bytes = 6 * 2 * sizeof(double),
                   .adapt_step = {(RtFn)be_jit_lookup(c->jit, "adapt_step"), be_arena_bytes(adapt)},
                   .loss = {(RtFn)be_jit_lookup(c->jit, "eval_loss"), be_arena_bytes(loss)},
                   .sample = sample, .sample_ctx = r, .meta_batch = 1,
                   .step_copy = step_copy, .step_copies = r->S};
    int steps[MAXS + 2], n = r->S + 2;
    for (int k = 0; k < n; k++)
        steps[k] = k;
    RtTrainOptions o = {.eval_tasks = 1, .nsteps = n, .steps = steps};
    RtEvalPoint pt[MAXS + 2];
    CHECK(rt_evaluate(&p, &o, flat, pt), "%s: rt_evaluate runs", label);
    for (int k = 0; k < n; k++) {
        ref_adapt(r, k);
        double want = ref_query(r, k);
        CHECK(fabs(pt[k].loss - want) <= 1e-12 * fmax(1, fabs(want)),
              "%s: evaluation after %d steps: %.17g, reference %.17g", label, k, pt[k].loss, want);
    }
    free(flat);
}

static void run_case(const char *label, int S, const char *adapt) {
    char meta[256];
    snprintf(meta, sizeof meta, "inner_steps = %d;%s%s%s", S, adapt ? " adapt = [" : "", adapt ? adapt : "",
             adapt ? "];" : "");
    static const char *const fns[] = {"meta_step", "adapt_step", "eval_loss", NULL};
    static const char *const plain_fns[] = {"grad", "eval_loss", NULL};
    Compiled c;
    Ref r = {.S = S};
    if (!compile(&c, " per_step", meta, fns) || !compile(&r.plain, "", "", plain_fns)) {
        CHECK(false, "%s: compiles", label);
        return;
    }
    r.grad = ir_module_find(r.plain.m, "grad");
    r.loss = ir_module_find(r.plain.m, "eval_loss");
    IrFunc *f = ir_module_find(c.m, "meta_step");
    r.nt = NP + 2 * (S - 1);

    /* the layout: NAME.0 in the slot, the other copies after the params */
    bool ok = c.md->nparam == NP && c.md->ntensor == r.nt && f->ninput == r.nt + 4;
    for (int i = 0; ok && i < r.nt; i++) {
        char want[32];
        if (i == G || i == G + 1)
            snprintf(want, sizeof want, "%s.0", i == G ? "g1" : "e1");
        else if (i >= NP)
            snprintf(want, sizeof want, "%s.%d", i - NP < S - 1 ? "g1" : "e1", (i - NP) % (S - 1) + 1);
        else
            snprintf(want, sizeof want, "%s", c.md->param[i].decl);
        ok = strcmp(c.md->param[i].name, want) == 0 && strcmp(f->node[f->input[i]].name, want) == 0;
        CHECK(ok, "%s: tensor %d is %s (model: %s, meta_step: %s)", label, i, want, c.md->param[i].name,
              f->node[f->input[i]].name);
    }
    if (!ok) {
        release(&c);
        release(&r.plain);
        return;
    }
    for (int p = 0; p < NP; p++) {
        r.adapt[p] = p != G && p != G + 1 && (!adapt || strstr(adapt, c.md->param[p].decl));
        CHECK(r.adapt[p] == ir_meta_adapts(&c.md->meta, p), "%s: %s is adapted: %d", label, c.md->param[p].decl,
              r.adapt[p]);
        r.numel[p] = ir_numel(c.md->param[p].type);
        r.cur[p] = malloc((size_t)r.numel[p] * sizeof(double));
        r.out[1 + p] = malloc((size_t)r.numel[p] * sizeof(double));
    }
    r.out[0] = malloc(sizeof(double));
    double *out[MAXT + 1];
    for (int i = 0; i < f->ninput; i++) {
        int64_t n = ir_numel(f->node[f->input[i]].type);
        r.theta[i] = malloc((size_t)n * sizeof(double));
        for (int64_t k = 0; k < n; k++)   /* copies apart from each other, gammas about 1 */
            r.theta[i][k] = 2 * urand() - 1 + (i == G || (i >= NP && i - NP < S - 1) ? 1 : 0);
    }
    for (int j = 0; j < f->noutput; j++)
        out[j] = malloc((size_t)ir_numel(f->node[f->output[j]].type) * sizeof(double));
    BeFn fn = be_jit_lookup(c.jit, "meta_step");
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    fn((const void *const *)r.theta, (void *const *)out, arena);
    free(arena);

    double lq = ref_meta_loss(&r);
    CHECK(fabs(out[0][0] - lq) <= 1e-12 * fmax(1, fabs(lq)), "%s: query loss %.17g, reference %.17g", label,
          out[0][0], lq);
    /* b1's gradient is zero in exact arithmetic (batch norm subtracts it
     * out): each gradient is compared at the scale of the whole */
    double worst = 0, total = 0;
    for (int i = 0; i < r.nt; i++)
        for (int64_t k = 0; k < ir_numel(f->node[f->input[i]].type); k++)
            total = hypot(total, out[1 + i][k]);
    for (int i = 0; i < r.nt; i++) {
        int64_t n = ir_numel(f->node[f->input[i]].type);
        double d = 0, scale = 0;
        for (int64_t k = 0; k < n; k++) {
            double fd = check_central_diff(ref_meta_loss, &r, &r.theta[i][k], 1e-5, out[1 + i][k],
                                           1e-7 * fmax(1e-3, fabs(out[1 + i][k])));
            d += (fd - out[1 + i][k]) * (fd - out[1 + i][k]);
            scale += fd * fd;
        }
        double err = sqrt(d) / fmax(sqrt(scale), 1e-3 * total);
        worst = fmax(worst, err);
        bool copy = i == G || i == G + 1 || i >= NP;  /* every copy is used: its gradient is not zero */
        CHECK(err <= 1e-6 && (!copy || sqrt(scale) > 1e-3 * total),
              "%s: d meta-loss / d %s: relative error %.3g (norm %.3g)", label, c.md->param[i].name, err,
              sqrt(scale));
    }
    printf("%-40s worst relative error vs finite differences %.2e\n", label, worst);
    check_evaluation(&r, &c, label);
    for (int i = 0; i < f->ninput; i++)
        free(r.theta[i]);
    for (int j = 0; j < f->noutput; j++)
        free(out[j]);
    for (int p = 0; p < NP; p++) {
        free(r.cur[p]);
        free(r.out[1 + p]);
    }
    free(r.out[0]);
    release(&c);
    release(&r.plain);
}

int main(void) {
    srand(23);
    run_case("per-step batch norm, 1 inner step", 1, NULL);
    run_case("per-step batch norm, 2 inner steps", 2, NULL);
    run_case("per-step batch norm, 3 inner steps", 3, NULL);
    run_case("per-step batch norm + ANIL, 3 steps", 3, "W2, b2");
    return check_summary();
}
