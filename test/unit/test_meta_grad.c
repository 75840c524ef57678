/* The whole meta-gradient, as mamlc builds and compiles it, in f64 at
 * random points: every second-order mode (one and several inner steps,
 * Meta-SGD's learned rates, ANIL, and their combination; MLPs and a conv
 * net with batch norm) against central
 * finite differences of the meta-loss; first-order MAML against its formula
 * (the query gradient at the adapted parameters); Reptile against θ − W.
 * The JIT-compiled code and the reference evaluator must agree too. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
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
#define TANH_LR "inner_lr = 0.1;"

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
#define RELU_LR "inner_lr = 0.05;"

/* A classifier: log_softmax, cross-entropy with integer labels, abs, exp. */
static const char *const softmax_model =
    "dim N = 6; dim C = 3;\n"
    "param W : [C, 4] = glorot;  param b : [C] = normal(0.1);\n"
    "param V : [4, 4] = glorot;\n"
    "def loss(x, y) = cross_entropy(linear(tanh(x @ V) + 0.1 * abs(x), W, b), y) + mean(exp(-V^2));\n"
    "task external { support x : [N, 4], y : i32[N]; query x : [N, 4], y : i32[N]; }\n"
    "meta { %s }\n";
#define SOFTMAX_LR "inner_lr = 0.3;"

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
#define CONV_LR "inner_lr = 0.2;"

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

typedef struct {
    IrModule *m;
    Model *md;
    BeJit *jit;
} Compiled;

/* Compile the model `tmpl` with `meta` as its meta block's entries. */
static bool compile(Compiled *c, const char *tmpl, const char *meta) {
    char text[2048];
    snprintf(text, sizeof text, tmpl, meta);
    Diag d;
    diag_init(&d, stderr);
    ModelOptions mo = {.real = DT_F64};
    c->md = model_load_text("test.mdl", text, strlen(text), &mo, &d);
    c->m = ir_module_new(DT_F64);
    bool ok = c->md && meta_build(c->md, c->m, NULL, &d);
    for (int i = 0; ok && i < c->m->nfunc; i++)
        ok = pass_optimize(c->m->func[i], NULL, &d) && ir_verify_func(c->m->func[i], &d);
    BeOptions bo = {.opt_level = 2};
    c->jit = ok ? be_jit_compile(c->m, &bo, &d) : NULL;
    diag_free(&d);
    return c->jit != NULL;
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
    double *in[16], *out[16];
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

/* Run the compiled f on b (integer inputs converted to int32). */
static void run_jit(BeJit *jit, const IrFunc *f, Buffers *b) {
    BeFn fn = be_jit_lookup(jit, f->name);
    const void *in[16];
    void *out[16];
    int32_t *ints[16] = {0};
    for (int i = 0; i < b->nin; i++) {
        IrType t = f->node[f->input[i]].type;
        in[i] = b->in[i];
        if (t.dtype == DT_I32) {
            ints[i] = malloc((size_t)ir_numel(t) * sizeof(int32_t));
            for (int64_t k = 0; k < ir_numel(t); k++)
                ints[i][k] = (int32_t)b->in[i][k];
            in[i] = ints[i];
        }
    }
    for (int j = 0; j < b->nout; j++)
        out[j] = b->out[j];
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    fn(in, out, arena);
    free(arena);
    for (int i = 0; i < b->nin; i++)
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

static double rel_err(const double *a, const double *b, int64_t n) { return rel_err_floor(a, b, n, 0); }

static double norm(const double *a, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * a[i];
    return sqrt(s);
}

/* The meta-gradient of meta_step against central differences of its loss
 * output, and the JIT against the reference evaluator. */
static void check_meta_grad(const char *label, const char *tmpl, const char *meta, int classes) {
    Compiled c;
    if (!compile(&c, tmpl, meta)) {
        CHECK(false, "%s: compiles", label);
        return;
    }
    IrFunc *f = ir_module_find(c.m, "meta_step");
    Buffers b, probe;
    buffers(f, &b, classes);
    buffers(f, &probe, classes);
    run_jit(c.jit, f, &b);
    /* A parameter whose gradient is zero in exact arithmetic (a bias that
     * batch norm subtracts out again) is compared at the scale of the
     * whole meta-gradient, not of its own rounding noise. */
    double total = 0;
    for (int p = 0; p < c.md->ntensor; p++)
        total = hypot(total, norm(b.out[1 + p], ir_numel(c.md->param[p].type)));
    double floor = 1e-3 * total, worst = 0;
    for (int p = 0; p < c.md->ntensor; p++) {
        int64_t n = ir_numel(c.md->param[p].type);
        double *fd = malloc((size_t)n * sizeof *fd), h = 1e-5;
        for (int64_t k = 0; k < n; k++) {
            double keep = b.in[p][k];
            b.in[p][k] = keep + h;
            ir_eval(f, (const double *const *)b.in, probe.out);
            double up = probe.out[0][0];
            b.in[p][k] = keep - h;
            ir_eval(f, (const double *const *)b.in, probe.out);
            double down = probe.out[0][0];
            b.in[p][k] = keep;
            fd[k] = (up - down) / (2 * h);
        }
        double err = rel_err_floor(b.out[1 + p], fd, n, floor);
        worst = fmax(worst, err);
        CHECK(err <= 1e-6, "%s: d meta-loss / d %s: relative error %.3g", label, c.md->param[p].name, err);
        free(fd);
    }
    printf("%-40s worst relative error vs finite differences %.2e\n", label, worst);
    /* compiled code and reference evaluator agree */
    ir_eval(f, (const double *const *)b.in, probe.out);
    for (int j = 0; j < f->noutput; j++) {
        int64_t n = ir_numel(f->node[f->output[j]].type);
        double err = rel_err_floor(b.out[j], probe.out[j], n, j ? floor : 0);
        CHECK(err <= 1e-10, "%s: JIT and reference differ on output %d: %.3g", label, j, err);
    }
    free_buffers(&b);
    free_buffers(&probe);
    release(&c);
}

/* order = first: the meta-gradient is the gradient of the query loss at
 * the adapted parameters (first-order MAML), computed here from the model's
 * own adapt_step and grad functions. */
static void check_first_order(const char *label, const char *tmpl, const char *lr, int steps, int classes) {
    Compiled c;
    char meta[128];
    snprintf(meta, sizeof meta, "%s order = first; inner_steps = %d;", lr, steps);
    if (!compile(&c, tmpl, meta)) {
        CHECK(false, "%s: compiles", label);
        return;
    }
    IrFunc *meta_f = ir_module_find(c.m, "meta_step"), *adapt = ir_module_find(c.m, "adapt_step");
    IrFunc *grad = ir_module_find(c.m, "grad");
    int np = c.md->nparam;
    Buffers b, a, g;
    buffers(meta_f, &b, classes);
    buffers(adapt, &a, classes);
    buffers(grad, &g, classes);
    run_jit(c.jit, meta_f, &b);
    /* adapt: params from b, support set from b */
    for (int p = 0; p < np; p++)
        memcpy(a.in[p], b.in[p], (size_t)ir_numel(c.md->param[p].type) * sizeof(double));
    for (int s = 0; s < steps; s++) {
        memcpy(a.in[np], b.in[np], (size_t)ir_numel(c.md->task.support_x) * sizeof(double));
        memcpy(a.in[np + 1], b.in[np + 1], (size_t)ir_numel(c.md->task.support_y) * sizeof(double));
        ir_eval(adapt, (const double *const *)a.in, a.out);
        for (int p = 0; p < np; p++)
            memcpy(a.in[p], a.out[p], (size_t)ir_numel(c.md->param[p].type) * sizeof(double));
    }
    /* gradient of the query loss at the adapted parameters */
    for (int p = 0; p < np; p++)
        memcpy(g.in[p], a.in[p], (size_t)ir_numel(c.md->param[p].type) * sizeof(double));
    memcpy(g.in[np], b.in[np + 2], (size_t)ir_numel(c.md->task.query_x) * sizeof(double));
    memcpy(g.in[np + 1], b.in[np + 3], (size_t)ir_numel(c.md->task.query_y) * sizeof(double));
    ir_eval(grad, (const double *const *)g.in, g.out);
    CHECK(fabs(g.out[0][0] - b.out[0][0]) <= 1e-12 * fmax(1, fabs(g.out[0][0])), "%s: query loss", label);
    double total = 0;       /* the scale of gradients that are zero in exact arithmetic */
    for (int p = 0; p < np; p++)
        total = hypot(total, norm(g.out[1 + p], ir_numel(c.md->param[p].type)));
    for (int p = 0; p < np; p++) {
        double err = rel_err_floor(b.out[1 + p], g.out[1 + p], ir_numel(c.md->param[p].type), 1e-3 * total);
        CHECK(err <= 1e-10, "%s: first-order gradient of %s: relative error %.3g", label, c.md->param[p].name, err);
    }
    free_buffers(&b);
    free_buffers(&a);
    free_buffers(&g);
    release(&c);
}

/* Reptile: the meta-gradient is θ − W, W the result of `steps` inner SGD
 * steps from θ on the support set (the model's own adapt_step). */
static void check_reptile(const char *label, const char *tmpl, const char *lr, int steps, int classes) {
    Compiled c;
    char meta[128];
    snprintf(meta, sizeof meta, "%s algorithm = reptile(epsilon = 0.7); inner_steps = %d;", lr, steps);
    if (!compile(&c, tmpl, meta)) {
        CHECK(false, "%s: compiles", label);
        return;
    }
    IrFunc *meta_f = ir_module_find(c.m, "meta_step"), *adapt = ir_module_find(c.m, "adapt_step");
    int np = c.md->nparam;
    Buffers b, a;
    buffers(meta_f, &b, classes);
    buffers(adapt, &a, classes);
    run_jit(c.jit, meta_f, &b);
    for (int p = 0; p < np; p++)
        memcpy(a.in[p], b.in[p], (size_t)ir_numel(c.md->param[p].type) * sizeof(double));
    memcpy(a.in[np], b.in[np], (size_t)ir_numel(c.md->task.support_x) * sizeof(double));
    memcpy(a.in[np + 1], b.in[np + 1], (size_t)ir_numel(c.md->task.support_y) * sizeof(double));
    for (int s = 0; s < steps; s++) {
        ir_eval(adapt, (const double *const *)a.in, a.out);
        for (int p = 0; p < np; p++)
            memcpy(a.in[p], a.out[p], (size_t)ir_numel(c.md->param[p].type) * sizeof(double));
    }
    for (int p = 0; p < np; p++) {
        int64_t n = ir_numel(c.md->param[p].type);
        double *want = malloc((size_t)n * sizeof *want);
        for (int64_t k = 0; k < n; k++)
            want[k] = b.in[p][k] - a.in[p][k];
        double err = rel_err(b.out[1 + p], want, n);
        CHECK(err <= 1e-10, "%s: theta - W for %s: relative error %.3g", label, c.md->param[p].name, err);
        free(want);
    }
    CHECK(c.md->meta.optimizer.kind == OPT_SGD && c.md->meta.optimizer.lr == 0.7,
          "%s: the outer step is SGD with lr = epsilon", label);
    free_buffers(&b);
    free_buffers(&a);
    release(&c);
}

int main(void) {
    srand(2024);
    /* second order, one and several inner steps */
    check_meta_grad("smooth MLP, 1 inner step", tanh_model, TANH_LR, 1);
    check_meta_grad("smooth MLP, 3 inner steps", tanh_model, TANH_LR "inner_steps = 3;", 1);
    check_meta_grad("relu MLP (sine), 1 inner step", relu_model, RELU_LR, 1);
    check_meta_grad("relu MLP (sine), 2 inner steps", relu_model, RELU_LR "inner_steps = 2;", 1);
    check_meta_grad("softmax classifier, 1 inner step", softmax_model, SOFTMAX_LR, 3);
    check_meta_grad("softmax classifier, 2 inner steps", softmax_model, SOFTMAX_LR "inner_steps = 2;", 3);
    check_meta_grad("conv net + batch norm, 1 inner step", conv_model, CONV_LR, 3);
    check_meta_grad("conv net + batch norm, 2 inner steps", conv_model, CONV_LR "inner_steps = 2;", 3);
    check_meta_grad("conv net + max pooling, 1 inner step", pool_model, CONV_LR, 3);
    /* Meta-SGD: learned rates per element and per tensor */
    check_meta_grad("Meta-SGD, smooth MLP, 2 steps", tanh_model, "inner_lr = learned(0.1); inner_steps = 2;", 1);
    check_meta_grad("Meta-SGD scalar, classifier, 1 step", softmax_model, "inner_lr = learned_scalar(0.2);", 3);
    /* ANIL, alone and with Meta-SGD */
    check_meta_grad("ANIL, relu MLP, 2 steps", relu_model, RELU_LR "adapt = [W3, b3]; inner_steps = 2;", 1);
    check_meta_grad("ANIL + Meta-SGD, smooth MLP, 2 steps", tanh_model,
                    "adapt = [W2, b3]; inner_lr = learned(0.05); inner_steps = 2;", 1);
    /* first order and Reptile against their formulas */
    check_first_order("first order, smooth MLP, 1 step", tanh_model, TANH_LR, 1, 1);
    check_first_order("first order, smooth MLP, 3 steps", tanh_model, TANH_LR, 3, 1);
    check_first_order("first order, classifier, 2 steps", softmax_model, SOFTMAX_LR, 2, 3);
    check_first_order("first order, conv net, 2 steps", conv_model, CONV_LR, 2, 3);
    check_reptile("Reptile, smooth MLP, 1 step", tanh_model, TANH_LR, 1, 1);
    check_reptile("Reptile, relu MLP, 4 steps", relu_model, RELU_LR, 4, 1);
    return check_summary();
}
