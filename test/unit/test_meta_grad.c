/* The whole meta-step, as mamlc builds and compiles it, in f64 at random
 * points, against a reference that shares nothing with the meta-step
 * builder but the model's loss: the same model compiled with no meta
 * entries gives grad (the gradient of the loss with respect to every param)
 * and eval_loss, and the inner loop is written out here from each case's
 * own settings (θ − α g per step; α ⊙ g with learned rates; only the
 * listed params under ANIL).  Checked against it: the query loss after the
 * inner loop, one adapt_step, and the meta-gradient: for second order by
 * central differences of that reference meta-loss, for first order by its
 * formula (the query gradient at the adapted params, and −Σ g_s ⊙ ∇L_Q for
 * learned rates), for Reptile θ − W and the outer step it feeds.  The
 * JIT-compiled code and the reference evaluator must agree too. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "compile_model.h"
#include "../../runtime/runtime.h"
#include "check.h"

/* A small sine-style model with smooth activations (exact derivatives
 * everywhere), and one with relu as in examples/sine.mdl. */
static const char *const tanh_model =
    "dim K = 5;\n"
    "param W1 : [6, 1] = he;  param b1 : [6] = normal(0.1);\n"
    "param W2 : [6, 6] = he;  param b2 : [6] = normal(0.1);\n"
    "param W3 : [1, 6] = he;  param b3 : [1] = zeros;\n"
    "def net(x) {\n"
    "  h = tanh(linear(x, W1, b1));\n"
    "  h = sigmoid(linear(h, W2, b2)) * softplus(h @ transpose(W2));\n"
    "  return linear(h, W3, b3);\n"
    "}\n"
    "def loss(x, y) = mean((net(x) - y)^2) + 0.01 * sum(W2 ^ 2);\n"
    "task sinusoid() { support x : [K, 1], y : [K, 1]; query x : [K, 1], y : [K, 1]; }\n"
    "meta { %s }\n";

static const char *const relu_model =
    "dim K = 4;\n"
    "param W1 : [5, 1] = he;  param b1 : [5] = normal(0.5);\n"
    "param W2 : [5, 5] = he;  param b2 : [5] = normal(0.5);\n"
    "param W3 : [1, 5] = he;  param b3 : [1] = zeros;\n"
    "def net(x) {\n"
    "  h = relu(linear(x, W1, b1));\n"
    "  h = relu(linear(h, W2, b2));\n"
    "  return linear(h, W3, b3);\n"
    "}\n"
    "def loss(x, y) = mean((net(x) - y)^2);\n"
    "task sinusoid() { support x : [K, 1], y : [K, 1]; query x : [K, 1], y : [K, 1]; }\n"
    "meta { %s }\n";

/* A classifier: log_softmax, cross-entropy with integer labels, abs, exp. */
static const char *const softmax_model =
    "dim N = 6; dim C = 3;\n"
    "param W : [C, 4] = glorot;  param b : [C] = normal(0.1);\n"
    "param V : [4, 4] = glorot;\n"
    "def loss(x, y) = cross_entropy(linear(tanh(x @ V) + 0.1 * abs(x), W, b), y) + mean(exp(-V^2));\n"
    "task external { support x : [N, 4], y : i32[N]; query x : [N, 4], y : i32[N]; }\n"
    "meta { %s }\n";

/* MAML's Omniglot network in small: two blocks of 3x3 convolution (stride
 * 2, pad 1), batch norm (batch statistics) and relu, then a linear head, on
 * 8x8 images. */
static const char *const conv_model =
    "dim N = 4; dim C = 3;\n"
    "param W1 : [3, 1, 3, 3] = he;  param b1 : [3] = normal(0.1);\n"
    "param g1 : [3] = ones;         param e1 : [3] = zeros;\n"
    "param W2 : [4, 3, 3, 3] = he;  param b2 : [4] = normal(0.1);\n"
    "param g2 : [4] = ones;         param e2 : [4] = zeros;\n"
    "param Wo : [C, 16] = glorot;   param bo : [C] = zeros;\n"
    "def block(x, W, b, g, e) = relu(batch_norm(conv2d(x, W, b, stride = 2, pad = 1), g, e));\n"
    "def net(x) = linear(flatten(block(block(x, W1, b1, g1, e1), W2, b2, g2, e2)), Wo, bo);\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [N, 1, 8, 8], y : i32[N]; query x : [N, 1, 8, 8], y : i32[N]; }\n"
    "meta { %s }\n";

/* The max-pooling variant of that network (as in MAML's MiniImagenet model):
 * stride-1 convolutions, each followed by batch norm, relu and 2x2 max
 * pooling (8 -> 4 -> 2). */
static const char *const pool_model =
    "dim N = 4; dim C = 3;\n"
    "param W1 : [3, 1, 3, 3] = he;  param b1 : [3] = normal(0.1);\n"
    "param g1 : [3] = ones;         param e1 : [3] = zeros;\n"
    "param W2 : [4, 3, 3, 3] = he;  param b2 : [4] = normal(0.1);\n"
    "param g2 : [4] = ones;         param e2 : [4] = zeros;\n"
    "param Wo : [C, 16] = glorot;   param bo : [C] = zeros;\n"
    "def block(x, W, b, g, e) = max_pool2d(relu(batch_norm(conv2d(x, W, b, pad = 1), g, e)), 2);\n"
    "def net(x) = linear(flatten(block(block(x, W1, b1, g1, e1), W2, b2, g2, e2)), Wo, bo);\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [N, 1, 8, 8], y : i32[N]; query x : [N, 1, 8, 8], y : i32[N]; }\n"
    "meta { %s }\n";

/* The ops few-shot models reach for, together: pad = same convolutions (an
 * odd and an even kernel), gelu, elu, floor max and average pooling (6 ->
 * 1 by 4), a global average pool, concat, layer_norm, leaky_relu, softmax,
 * permute, mse and binary_cross_entropy against real targets, and a power
 * of a dim. */
static const char *const newops_model =
    "dim N = 4; dim C = 3; dim P = 3;\n"
    "param W1 : [3, 2, 3, 3] = he;  param b1 : [3] = normal(0.1);\n"
    "param W2 : [2, 3, 2, 2] = he;  param b2 : [2] = normal(0.1);\n"
    "param g : [5] = normal(1);     param e : [5] = normal(0.1);\n"
    "param Wo : [C, 5] = glorot;    param bo : [C] = normal(0.1);\n"
    "def net(x) {\n"
    "  h1 = gelu(conv2d(x, W1, b1, pad = same));\n"
    "  h2 = elu(conv2d(h1, W2, b2, pad = same));\n"
    "  f = concat(flatten(max_pool2d(h1, 4)), mean(h2, [2, 3]) + flatten(avg_pool2d(h2, 4)), 1);\n"
    "  return linear(leaky_relu(layer_norm(f, g, e), 0.1), Wo, bo);\n"
    "}\n"
    "def loss(x, y) {\n"
    "  z = net(x);\n"
    "  return mse(softmax(z, 1), y) + binary_cross_entropy(permute(z, [1, 0]), permute(y, [1, 0]))\n"
    "         + 0.01 * sum(b1 ^ (P - 1));\n"
    "}\n"
    "task external { support x : [N, 2, 6, 6], y : [N, C]; query x : [N, 2, 6, 6], y : [N, C]; }\n"
    "meta { %s }\n";

/* MSL: second order with MAML++'s multi-step loss, at the random weights
 * the meta-step takes as its input; ANNEAL: order = anneal(..), whose
 * meta_step is checked as SECOND and meta_step_first as FIRST. */
typedef enum { SECOND, FIRST, REPTILE, MSL, ANNEAL } Mode;
typedef enum { RATE_FIXED, RATE_ELEMENT, RATE_TENSOR, RATE_STEP } Rates;

/* One meta configuration of one model; its meta block is written from
 * these fields, and the reference reads the same fields. */
typedef struct {
    const char *label, *tmpl;
    Mode mode;
    Rates rates;
    double alpha;               /* the inner rate, or the learned rates' initial value */
    int steps;
    const char *adapt;          /* "W3, b3": ANIL's adapted params; NULL: all */
    const OptimizerConfig *outer; /* Reptile's explicit outer optimiser; NULL: none given */
    int classes;                /* labels of integer targets */
} Case;

#define EPSILON 0.7             /* Reptile's epsilon in every case */
#define MAXP 16                 /* params of a model */
#define MAXT (3 * MAXP)         /* meta-learned tensors: params and learned rates */

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
} Compiled;

/* Build the model `tmpl` with `meta` as its meta block's entries: the
 * functions named in `only` (NULL-terminated), optimised and verified,
 * then JIT-compiled at LLVM opt level `opt` (none if opt < 0). */
static bool compile(Compiled *c, const char *tmpl, const char *meta, const char *const *only, int opt) {
    char text[2048];
    snprintf(text, sizeof text, tmpl, meta);
    return compile_model(text, only, opt, &c->md, &c->m, &c->jit);
}

static void release(Compiled *c) {
    be_jit_free(c->jit);
    ir_module_free(c->m);
    model_free(c->md);
}

static double urand(void) { return (rand() + 0.5) / ((double)RAND_MAX + 1); }

/* Buffers for every input and output of f, inputs filled at random
 * (integer inputs with labels below `classes`). */
typedef struct {
    double *in[MAXT + 5], *out[MAXT + 1];
    int nin, nout;
} Buffers;

static void buffers(const IrFunc *f, Buffers *b, int classes) {
    b->nin = f->ninput;
    b->nout = f->noutput;
    for (int i = 0; i < f->ninput; i++) {
        IrType t = f->node[f->input[i]].type;
        b->in[i] = malloc((size_t)ir_numel(t) * sizeof(double));
        for (int64_t k = 0; k < ir_numel(t); k++)
            b->in[i][k] = t.dtype == DT_I32 ? (double)(rand() % classes) : 2 * urand() - 1;
    }
    for (int j = 0; j < f->noutput; j++)
        b->out[j] = malloc((size_t)ir_numel(f->node[f->output[j]].type) * sizeof(double));
}

static void free_buffers(Buffers *b) {
    for (int i = 0; i < b->nin; i++)
        free(b->in[i]);
    for (int j = 0; j < b->nout; j++)
        free(b->out[j]);
}

/* Run the compiled f on inputs `in` into `out` (integer inputs, held as
 * doubles, converted to int32). */
static void run_jit(BeJit *jit, const IrFunc *f, double *const *in, double *const *out) {
    BeFn fn = be_jit_lookup(jit, f->name);
    const void *args[MAXT + 5];
    int32_t *ints[MAXT + 5] = {0};
    for (int i = 0; i < f->ninput; i++) {
        IrType t = f->node[f->input[i]].type;
        args[i] = in[i];
        if (t.dtype == DT_I32) {
            ints[i] = malloc((size_t)ir_numel(t) * sizeof(int32_t));
            for (int64_t k = 0; k < ir_numel(t); k++)
                ints[i][k] = (int32_t)in[i][k];
            args[i] = ints[i];
        }
    }
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    fn(args, (void *const *)out, arena);
    free(arena);
    for (int i = 0; i < f->ninput; i++)
        free(ints[i]);
}

/* ||a - b|| / max(||a||, ||b||, floor) */
static double rel_err_floor(const double *a, const double *b, int64_t n, double floor) {
    double d = 0, na = 0, nb = 0;
    for (int64_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return sqrt(d) / fmax(fmax(sqrt(na), sqrt(nb)), fmax(floor, 1e-300));
}

static double norm(const double *a, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * a[i];
    return sqrt(s);
}

/* The reference inner loop.  theta is the meta_step's inputs: np params,
 * the learned rate tensors (one per adapted param, in declaration order:
 * docs/algorithms.md; with per-step rates one per adapted param and step,
 * lr.NAME.0, lr.NAME.1, ...), then sx, sy, qx, qy. */
typedef struct {
    const Case *c;
    Compiled plain;             /* the model with no meta entries */
    IrFunc *grad, *loss;        /* its grad (every param) and eval_loss, run by ir_eval */
    int np, nt;                 /* params; params and learned rates */
    int64_t numel[MAXP];
    bool adapt[MAXP];
    double **theta;             /* the meta_step's inputs, perturbed by the differences */
    double *cur[MAXP], *gsum[MAXP]; /* the adapted params; the sum of their inner gradients */
    double *out[MAXP + 1];          /* grad's outputs: loss, then a gradient per param */
} Ref;

/* `steps` inner steps from theta on the support set into cur, written out:
 *   cur ← cur − α ⊙ ∇L_S(cur)  for the adapted params (α fixed or learned),
 * with the sum of the inner gradients in gsum. */
static void ref_adapt(Ref *r, int steps) {
    const Case *c = r->c;
    double *in[MAXP + 2];
    for (int p = 0; p < r->np; p++) {
        memcpy(r->cur[p], r->theta[p], (size_t)r->numel[p] * sizeof(double));
        memset(r->gsum[p], 0, (size_t)r->numel[p] * sizeof(double));
        in[p] = r->cur[p];
    }
    in[r->np] = r->theta[r->nt];
    in[r->np + 1] = r->theta[r->nt + 1];
    for (int s = 0; s < steps; s++) {
        ir_eval(r->grad, (const double *const *)in, r->out);
        for (int p = 0, j = 0; p < r->np; p++) {
            if (!r->adapt[p])
                continue;
            int per = c->rates == RATE_STEP ? c->steps : 1, at = s < per ? s : per - 1;
            const double *rate = c->rates == RATE_FIXED ? NULL : r->theta[r->np + per * j++ + at];
            for (int64_t k = 0; k < r->numel[p]; k++) {
                double a = !rate ? c->alpha : c->rates == RATE_ELEMENT ? rate[k] : rate[0];
                r->cur[p][k] -= a * r->out[1 + p][k];
                r->gsum[p][k] += r->out[1 + p][k];
            }
        }
    }
}

/* The query loss at cur; with `grad`, its gradient into out[1..]. */
static double ref_query(Ref *r, bool grad) {
    double *in[MAXP + 2], loss;
    for (int p = 0; p < r->np; p++)
        in[p] = r->cur[p];
    in[r->np] = r->theta[r->nt + 2];
    in[r->np + 1] = r->theta[r->nt + 3];
    ir_eval(grad ? r->grad : r->loss, (const double *const *)in, grad ? r->out : (double *[]){&loss});
    return grad ? r->out[0][0] : loss;
}

/* The meta-loss L_Q(θ_N) as a function of theta, for finite differences;
 * with the multi-step loss Σ_s w_s L_Q(θ_s), w the meta-step's last input. */
static double ref_meta_loss(void *ctx) {
    Ref *r = ctx;
    if (r->c->mode != MSL) {
        ref_adapt(r, r->c->steps);
        return ref_query(r, false);
    }
    double sum = 0;
    for (int s = 1; s <= r->c->steps; s++) {
        ref_adapt(r, s);
        sum += r->theta[r->nt + 4][s - 1] * ref_query(r, false);
    }
    return sum;
}

/* Whether `name` is an entry of the list "a, b, c". */
static bool listed(const char *list, const char *name) {
    size_t len = strlen(name);
    for (const char *at = list; (at = strstr(at, name)) != NULL; at += len)
        if ((at == list || at[-1] == ' ') && (at[len] == ',' || !at[len]))
            return true;
    return false;
}

/* Set up the reference for case c, whose model is md; false (with a
 * failed check) if the model's tensors are not laid out as documented. */
static bool ref_init(Ref *r, const Case *c, const Model *md, double **theta) {
    static const char *const fns[] = {"grad", "eval_loss", NULL};
    *r = (Ref){.c = c, .theta = theta};
    if (!compile(&r->plain, c->tmpl, "", fns, -1)) {
        CHECK(false, "%s: the plain model compiles", c->label);
        return false;
    }
    r->grad = ir_module_find(r->plain.m, "grad");
    r->loss = ir_module_find(r->plain.m, "eval_loss");
    const ModelTask *t = &md->task;
    bool ok = md->nparam <= MAXP && ir_numel(t->support_x) == ir_numel(t->query_x) &&
              ir_numel(t->support_y) == ir_numel(t->query_y);
    r->np = ok ? md->nparam : 0;
    r->nt = md->ntensor;
    int nadapt = 0;
    for (int p = 0; p < r->np; p++) {
        r->adapt[p] = !c->adapt || listed(c->adapt, md->param[p].name);
        r->numel[p] = ir_numel(md->param[p].type);
        r->cur[p] = malloc((size_t)r->numel[p] * sizeof(double));
        r->gsum[p] = calloc((size_t)r->numel[p], sizeof(double));
        r->out[1 + p] = malloc((size_t)r->numel[p] * sizeof(double));
        nadapt += r->adapt[p];
    }
    r->out[0] = malloc(sizeof(double));
    /* learned rates: one tensor per adapted param (per step: one per adapted
     * param and inner step), of its shape or a scalar */
    int per = c->rates == RATE_STEP ? c->steps : 1;
    ok = ok && r->nt == r->np + (c->rates == RATE_FIXED ? 0 : per * nadapt);
    for (int p = 0, j = r->np; ok && p < r->np; p++) {
        for (int s = 0; r->adapt[p] && c->rates != RATE_FIXED && ok && s < per; s++) {
            int64_t n = ir_numel(md->param[j].type);
            ok = n == (c->rates == RATE_ELEMENT ? r->numel[p] : 1);
            for (int64_t k = 0; ok && k < n; k++)
                theta[j][k] = c->alpha * (0.5 + urand());  /* rates about their initial value */
            j++;
        }
    }
    CHECK(ok, "%s: the meta-learned tensors are laid out as documented", c->label);
    return ok;
}

static void ref_free(Ref *r) {
    for (int p = 0; p < r->np; p++) {
        free(r->cur[p]);
        free(r->gsum[p]);
        free(r->out[1 + p]);
    }
    free(r->out[0]);
    release(&r->plain);
}

/* The meta block of case c. */
static void meta_text(const Case *c, char *text, size_t size) {
    static const char *const rate[] = {"%.17g", "learned(%.17g)", "learned_scalar(%.17g)",
                                       "learned_per_step(%.17g)"};
    char lr[64];
    snprintf(lr, sizeof lr, rate[c->rates], c->alpha);
    int n = snprintf(text, size, "inner_lr = %s; inner_steps = %d;", lr, c->steps);
    if (c->mode == FIRST)
        n += snprintf(text + n, size - (size_t)n, " order = first;");
    if (c->mode == MSL)
        n += snprintf(text + n, size - (size_t)n, " multi_step_loss = anneal(100);");
    if (c->mode == ANNEAL)
        n += snprintf(text + n, size - (size_t)n, " order = anneal(first_until = 50);");
    if (c->mode == REPTILE)
        n += snprintf(text + n, size - (size_t)n, " algorithm = reptile(epsilon = %.17g);", EPSILON);
    if (c->outer && c->outer->kind == OPT_ADAM)
        n += snprintf(text + n, size - (size_t)n,
                      " optimizer = adam(lr = %.17g, beta1 = %.17g, beta2 = %.17g, eps = %.17g);", c->outer->lr,
                      c->outer->beta1, c->outer->beta2, c->outer->eps);
    else if (c->outer)
        n += snprintf(text + n, size - (size_t)n, " optimizer = sgd(lr = %.17g);", c->outer->lr);
    if (c->adapt)
        snprintf(text + n, size - (size_t)n, " adapt = [%s];", c->adapt);
}

/* Second order: the compiled meta-gradient against central differences of
 * the reference meta-loss.  Returns the worst relative error. */
static double check_second_order(Ref *r, const Model *md, double *const *got, double floor) {
    const Case *c = r->c;
    double worst = 0;
    for (int p = 0; p < r->nt; p++) {
        int64_t n = ir_numel(md->param[p].type);
        double *fd = malloc((size_t)n * sizeof *fd), tol = 1e-7 * fmax(norm(got[p], n), floor);
        for (int64_t k = 0; k < n; k++)
            fd[k] = check_central_diff(ref_meta_loss, r, &r->theta[p][k], 1e-5, got[p][k], tol);
        double err = rel_err_floor(got[p], fd, n, floor);
        worst = fmax(worst, err);
        CHECK(err <= 1e-6, "%s: d meta-loss / d %s: relative error %.3g", c->label, md->param[p].name, err);
        free(fd);
    }
    return worst;
}

/* First order: ∇L_Q at θ_N for the params (θ_N = θ − Σ α ⊙ stop_grad(g_s),
 * so dθ_N/dθ = I), and −Σ_s g_s ⊙ ∇L_Q for a learned rate (summed over the
 * tensor for a scalar rate). */
static void check_first_order(Ref *r, const Model *md, double *const *got) {
    ref_adapt(r, r->c->steps);
    ref_query(r, true);
    double *want[MAXP * 2], total = 0;
    for (int p = 0; p < r->np; p++) {
        want[p] = r->out[1 + p];
        total = hypot(total, norm(want[p], r->numel[p]));
    }
    for (int p = 0, j = r->np; p < r->np && j < r->nt; p++) {
        if (!r->adapt[p])
            continue;
        bool scalar = r->c->rates == RATE_TENSOR;
        want[j] = calloc(scalar ? 1 : (size_t)r->numel[p], sizeof(double));
        for (int64_t k = 0; k < r->numel[p]; k++)
            want[j][scalar ? 0 : k] -= r->gsum[p][k] * r->out[1 + p][k];
        total = hypot(total, norm(want[j], scalar ? 1 : r->numel[p]));
        j++;
    }
    for (int p = 0; p < r->nt; p++) {
        double err = rel_err_floor(got[p], want[p], ir_numel(md->param[p].type), 1e-3 * total);
        CHECK(err <= 1e-10, "%s: first-order gradient of %s: relative error %.3g", r->c->label,
              md->param[p].name, err);
    }
    for (int j = r->np; j < r->nt; j++)
        free(want[j]);
}

/* Reptile: θ − W (zero for a param ANIL does not adapt), and the outer
 * step it feeds: sgd(lr = epsilon) by default, which makes it
 * θ + ε (W − θ), or the optimiser given. */
static void check_reptile(Ref *r, const Model *md, double *const *got) {
    const Case *c = r->c;
    ref_adapt(r, c->steps);
    const OptimizerConfig *o = &md->meta.optimizer;
    const OptimizerConfig want_o = c->outer ? *c->outer : (OptimizerConfig){.kind = OPT_SGD, .lr = EPSILON};
    CHECK(o->kind == want_o.kind && o->lr == want_o.lr && o->beta1 == want_o.beta1 && o->beta2 == want_o.beta2 &&
              o->eps == want_o.eps,
          "%s: the outer optimiser is the one given, or sgd(lr = epsilon)", c->label);
    RtOptimizer rt = {.kind = o->kind == OPT_ADAM ? RT_ADAM : RT_SGD, .lr = o->lr, .beta1 = o->beta1,
                      .beta2 = o->beta2, .eps = o->eps};
    for (int p = 0; p < r->np; p++) {
        int64_t n = r->numel[p];
        double *want = malloc((size_t)n * sizeof *want), *next = malloc((size_t)n * sizeof *next);
        double *state = calloc(2 * (size_t)n, sizeof *state);
        for (int64_t k = 0; k < n; k++)
            want[k] = r->theta[p][k] - r->cur[p][k];
        double err = rel_err_floor(got[p], want, n, 0);
        CHECK(err <= 1e-10, "%s: theta - W for %s: relative error %.3g", c->label, md->param[p].name, err);
        /* one outer step from θ with this gradient, against the docs' formula
         * (Adam's first step: lr g / (|g| + eps)) */
        memcpy(next, r->theta[p], (size_t)n * sizeof *next);
        rt_opt_step(&rt, RT_F64, (size_t)n, next, got[p], state, 1);
        for (int64_t k = 0; k < n; k++) {
            double g = want[k];
            want[k] = o->kind == OPT_SGD ? r->theta[p][k] + want_o.lr * (r->cur[p][k] - r->theta[p][k])
                                         : r->theta[p][k] - want_o.lr * g / (fabs(g) + want_o.eps);
        }
        err = rel_err_floor(next, want, n, 1);
        CHECK(err <= 1e-10, "%s: the outer step of %s: relative error %.3g", c->label, md->param[p].name, err);
        free(want);
        free(next);
        free(state);
    }
}

static void run_case(const Case *c) {
    char meta[512];
    meta_text(c, meta, sizeof meta);
    static const char *const fns[] = {"meta_step", "adapt_step", "meta_step_first", NULL};
    Compiled m;
    /* LLVM at -O2 for the second-order steps, the largest graphs; at -O0,
     * about five times quicker to compile, for first order and Reptile, so
     * that the test takes seconds.  (test_codegen covers the opt levels.) */
    if (!compile(&m, c->tmpl, meta, fns, c->mode == FIRST || c->mode == REPTILE ? 0 : 2)) {
        CHECK(false, "%s: compiles (%s)", c->label, meta);
        return;
    }
    IrFunc *f = ir_module_find(m.m, "meta_step"), *adapt = ir_module_find(m.m, "adapt_step");
    Buffers b, probe;
    if (f->ninput > MAXT + 5) {
        CHECK(false, "%s: at most %d inputs", c->label, MAXT + 5);
        release(&m);
        return;
    }
    buffers(f, &b, c->classes);
    buffers(f, &probe, c->classes);
    Ref r;
    if (!ref_init(&r, c, m.md, b.in))
        goto done;
    run_jit(m.jit, f, b.in, b.out);
    double *const *got = b.out + 1;

    /* the query loss after the inner loop (the multi-step loss) */
    CHECK((c->mode == MSL) == (f->ninput == r.nt + 5), "%s: the loss weights are an input just when MSL is on",
          c->label);
    CHECK((c->mode == ANNEAL) == (ir_module_find(m.m, "meta_step_first") != NULL),
          "%s: the first-order step is built just when the order anneals", c->label);
    double lq = ref_meta_loss(&r);
    CHECK(fabs(b.out[0][0] - lq) <= 1e-12 * fmax(1, fabs(lq)), "%s: query loss %.17g, reference %.17g",
          c->label, b.out[0][0], lq);

    /* one adapt_step (evaluation's inner step): the adapted params, the
     * rates carried over (per-step rates moved one step on: lr.NAME.s gets
     * lr.NAME.(s+1), the last its own), and the support loss before the step */
    double *ain[MAXT + 2], *aout[MAXT + 1];
    for (int p = 0; p < r.nt; p++) {
        ain[p] = b.in[p];
        aout[p] = probe.out[1 + p];
    }
    ain[r.nt] = b.in[r.nt];
    ain[r.nt + 1] = b.in[r.nt + 1];
    aout[r.nt] = probe.out[0];
    run_jit(m.jit, adapt, ain, aout);
    ref_adapt(&r, 1);
    for (int p = 0; p < r.nt; p++) {
        int64_t n = ir_numel(m.md->param[p].type);
        int shift = c->rates == RATE_STEP && p >= r.np && (p - r.np + 1) % c->steps != 0;
        double err = rel_err_floor(aout[p], p < r.np ? r.cur[p] : b.in[p + shift], n, 0);
        CHECK(err <= 1e-12, "%s: adapt_step on %s: relative error %.3g", c->label, m.md->param[p].name, err);
    }
    CHECK(fabs(aout[r.nt][0] - r.out[0][0]) <= 1e-12 * fmax(1, fabs(r.out[0][0])), "%s: adapt_step's loss",
          c->label);

    /* the meta-gradient.  A parameter whose gradient is zero in exact
     * arithmetic (a bias that batch norm subtracts out again) is compared at
     * the scale of the whole meta-gradient, not of its own rounding noise. */
    double total = 0;
    for (int p = 0; p < r.nt; p++)
        total = hypot(total, norm(got[p], ir_numel(m.md->param[p].type)));
    if (c->mode == SECOND || c->mode == MSL || c->mode == ANNEAL)
        printf("%-44s worst relative error vs finite differences %.2e\n", c->label,
               check_second_order(&r, m.md, got, 1e-3 * total));
    else if (c->mode == FIRST)
        check_first_order(&r, m.md, got);
    else
        check_reptile(&r, m.md, got);
    if (c->mode == ANNEAL) {    /* the other side of the switch: the first-order step */
        IrFunc *first = ir_module_find(m.m, "meta_step_first");
        run_jit(m.jit, first, b.in, probe.out);
        CHECK(probe.out[0][0] == b.out[0][0], "%s: both orders' steps give the same query loss", c->label);
        check_first_order(&r, m.md, probe.out + 1);
    }

    /* compiled code and reference evaluator agree */
    ir_eval(f, (const double *const *)b.in, probe.out);
    for (int j = 0; j < f->noutput; j++) {
        int64_t n = ir_numel(f->node[f->output[j]].type);
        double err = rel_err_floor(b.out[j], probe.out[j], n, j ? 1e-3 * total : 0);
        CHECK(err <= 1e-10, "%s: JIT and reference differ on output %d: %.3g", c->label, j, err);
    }
done:
    ref_free(&r);
    free_buffers(&b);
    free_buffers(&probe);
    release(&m);
}

static const Case cases[] = {
    /* second order, one and several inner steps */
    {"smooth MLP, 1 inner step", tanh_model, SECOND, RATE_FIXED, 0.1, 1, NULL, NULL, 1},
    {"smooth MLP, 3 inner steps", tanh_model, SECOND, RATE_FIXED, 0.1, 3, NULL, NULL, 1},
    {"relu MLP (sine), 1 inner step", relu_model, SECOND, RATE_FIXED, 0.05, 1, NULL, NULL, 1},
    {"relu MLP (sine), 2 inner steps", relu_model, SECOND, RATE_FIXED, 0.05, 2, NULL, NULL, 1},
    {"softmax classifier, 1 inner step", softmax_model, SECOND, RATE_FIXED, 0.3, 1, NULL, NULL, 3},
    {"softmax classifier, 2 inner steps", softmax_model, SECOND, RATE_FIXED, 0.3, 2, NULL, NULL, 3},
    {"conv net + batch norm, 1 inner step", conv_model, SECOND, RATE_FIXED, 0.2, 1, NULL, NULL, 3},
    {"conv net + batch norm, 2 inner steps", conv_model, SECOND, RATE_FIXED, 0.2, 2, NULL, NULL, 3},
    {"conv net + max pooling, 1 inner step", pool_model, SECOND, RATE_FIXED, 0.2, 1, NULL, NULL, 3},
    {"new ops, 1 inner step", newops_model, SECOND, RATE_FIXED, 0.2, 1, NULL, NULL, 1},
    {"new ops, 2 inner steps", newops_model, SECOND, RATE_FIXED, 0.2, 2, NULL, NULL, 1},
    /* Meta-SGD: learned rates per element and per tensor */
    {"Meta-SGD, smooth MLP, 2 steps", tanh_model, SECOND, RATE_ELEMENT, 0.1, 2, NULL, NULL, 1},
    {"Meta-SGD scalar, classifier, 1 step", softmax_model, SECOND, RATE_TENSOR, 0.2, 1, NULL, NULL, 3},
    /* LSLR: a learned rate per param and inner step, alone and with ANIL */
    {"LSLR, smooth MLP, 3 steps", tanh_model, SECOND, RATE_STEP, 0.1, 3, NULL, NULL, 1},
    {"LSLR, classifier, 1 step", softmax_model, SECOND, RATE_STEP, 0.2, 1, NULL, NULL, 3},
    {"LSLR + ANIL, relu MLP, 2 steps", relu_model, SECOND, RATE_STEP, 0.05, 2, "W2, b3", NULL, 1},
    /* MAML++'s multi-step loss at a fixed (random) weight vector, alone and with LSLR */
    {"MSL, smooth MLP, 3 steps", tanh_model, MSL, RATE_FIXED, 0.1, 3, NULL, NULL, 1},
    {"MSL, conv net + batch norm, 2 steps", conv_model, MSL, RATE_FIXED, 0.2, 2, NULL, NULL, 3},
    {"MSL + LSLR, classifier, 2 steps", softmax_model, MSL, RATE_STEP, 0.3, 2, NULL, NULL, 3},
    /* derivative-order annealing: both steps, each against its own reference */
    {"order anneal, smooth MLP, 2 steps", tanh_model, ANNEAL, RATE_FIXED, 0.1, 2, NULL, NULL, 1},
    {"order anneal + ANIL, relu MLP, 2 steps", relu_model, ANNEAL, RATE_FIXED, 0.05, 2, "W3, b3", NULL, 1},
    /* ANIL, alone and with Meta-SGD */
    {"ANIL, relu MLP, 2 steps", relu_model, SECOND, RATE_FIXED, 0.05, 2, "W3, b3", NULL, 1},
    {"ANIL + Meta-SGD, smooth MLP, 2 steps", tanh_model, SECOND, RATE_ELEMENT, 0.05, 2, "W2, b3", NULL, 1},
    /* first order, with each of them */
    {"first order, smooth MLP, 1 step", tanh_model, FIRST, RATE_FIXED, 0.1, 1, NULL, NULL, 1},
    {"first order, smooth MLP, 3 steps", tanh_model, FIRST, RATE_FIXED, 0.1, 3, NULL, NULL, 1},
    {"first order, classifier, 2 steps", softmax_model, FIRST, RATE_FIXED, 0.3, 2, NULL, NULL, 3},
    {"first order, conv net, 2 steps", conv_model, FIRST, RATE_FIXED, 0.2, 2, NULL, NULL, 3},
    {"first order, new ops, 2 steps", newops_model, FIRST, RATE_FIXED, 0.2, 2, NULL, NULL, 1},
    {"first order + Meta-SGD, smooth MLP, 2 steps", tanh_model, FIRST, RATE_ELEMENT, 0.1, 2, NULL, NULL, 1},
    {"first order + Meta-SGD scalar, classifier", softmax_model, FIRST, RATE_TENSOR, 0.2, 2, NULL, NULL, 3},
    {"first order + ANIL, relu MLP, 2 steps", relu_model, FIRST, RATE_FIXED, 0.05, 2, "W3, b3", NULL, 1},
    {"first order + ANIL, conv net, 1 step", conv_model, FIRST, RATE_FIXED, 0.2, 1, "Wo, bo", NULL, 3},
    {"first order + ANIL + Meta-SGD, smooth MLP", tanh_model, FIRST, RATE_ELEMENT, 0.05, 2, "W2, b3", NULL, 1},
    /* Reptile: alone, with ANIL, with an explicit outer optimiser */
    {"Reptile, smooth MLP, 1 step", tanh_model, REPTILE, RATE_FIXED, 0.1, 1, NULL, NULL, 1},
    {"Reptile, relu MLP, 4 steps", relu_model, REPTILE, RATE_FIXED, 0.05, 4, NULL, NULL, 1},
    {"Reptile + ANIL, relu MLP, 3 steps", relu_model, REPTILE, RATE_FIXED, 0.05, 3, "W3, b3", NULL, 1},
    {"Reptile + adam, classifier, 2 steps", softmax_model, REPTILE, RATE_FIXED, 0.3, 2, NULL,
     &(OptimizerConfig){.kind = OPT_ADAM, .lr = 0.05, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6}, 3},
    {"Reptile + ANIL + sgd, smooth MLP, 2 steps", tanh_model, REPTILE, RATE_FIXED, 0.1, 2, "W2, b3",
     &(OptimizerConfig){.kind = OPT_SGD, .lr = 0.25}, 1},
};

int main(void) {
    srand(2024);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(&cases[i]);
    return check_summary();
}
