/* The GPU target's arithmetic, checked on the CPU: the kernels of the
 * meta-step built for this machine (be_gpu_host_compile) with their grid
 * run serially, against the CPU target's meta-step (be_jit_compile) of the
 * same IR in f64: every task's meta-gradient and loss, and the batch mean
 * summed along the runtime's tree, agree to 1e-12 relative (norm-wise);
 * grids of different sizes and teams give the same bits; the optimiser
 * stage gives rt_opt_step's bits.  Models: the sine MLP of examples/sine.mdl, a small
 * conv net (conv2d and its gradients, batch norm, cross-entropy), and
 * models that reach tanh, sigmoid, softplus, exp, log and abs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../backend/gpu.h"
#include "../../runtime/runtime.h"
#include "build_model.h"
#include "gpu_common.h"
#include "check.h"

static const char *const conv_model =
    "dim N = 3; dim Q = 4;\n"
    "param C1 : [4, 1, 3, 3] = he;  param c1 : [4] = normal(0.1); param g1 : [4] = ones; param s1 : [4] = zeros;\n"
    "param C2 : [4, 4, 3, 3] = he;  param c2 : [4] = normal(0.1);\n"
    "param W : [N, 16] = glorot;  param b : [N] = normal(0.1);\n"
    "def net(x) {\n"
    "  h = relu(batch_norm(conv2d(x, C1, c1, stride = 2, pad = 1), g1, s1));\n"
    "  h = relu(conv2d(h, C2, c2, stride = 2, pad = 1));\n"
    "  return linear(flatten(h), W, b);\n"
    "}\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [N, 1, 8, 8], y : i32[N]; query x : [Q, 1, 8, 8], y : i32[Q]; }\n"
    "meta { inner_steps = 1; inner_lr = 0.4; order = second; }\n";

static const char *const smooth_model =
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
    "meta { inner_steps = 2; inner_lr = 0.05; order = second; }\n";

static const char *const softmax_model =
    "dim N = 6; dim C = 3;\n"
    "param W : [C, 4] = glorot;  param b : [C] = normal(0.1);\n"
    "param V : [4, 4] = glorot;\n"
    "def loss(x, y) = cross_entropy(linear(tanh(x @ V) + 0.1 * abs(x), W, b), y) + mean(exp(-V^2));\n"
    "task external { support x : [N, 4], y : i32[N]; query x : [N, 4], y : i32[N]; }\n"
    "meta { inner_steps = 1; inner_lr = 0.1; order = second; }\n";

enum { B = 5, CLASSES = 3 };

static double rel_norm(const double *a, const double *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        s += b[i] * b[i];
    }
    return sqrt(d) / fmax(sqrt(s), 1e-300);
}

static void check_model(const char *what, const char *text)
{
    Diag d;
    diag_init(&d, stderr);
    ModelOptions mo = {.real = DT_F64};
    Model *md = model_load_text(what, text, strlen(text), &mo, &d);
    IrModule *m = ir_module_new(DT_F64);
    bool ok = md && build_model(md, m, "meta_step", &d);
    for (int i = 0; ok && i < m->nfunc; i++)
        ok = pass_optimize(m->func[i], NULL, &d);
    CHECK(ok, "%s: the meta-step builds", what);
    BeJit *jit = ok ? be_jit_compile(m, NULL, &d) : NULL;
    BeGpuHost *host = ok ? be_gpu_host_compile(m, &d) : NULL;
    CHECK(jit && host, "%s: both targets compile", what);
    if (!jit || !host) {
        be_jit_free(jit);
        be_gpu_host_free(host);
        ir_module_free(m);
        model_free(md);
        diag_free(&d);
        return;
    }
    const IrFunc *f = ir_module_find(m, "meta_step");
    int np = f->ninput - 4;
    size_t nreal = 0, off[64];
    for (int j = 1; j < f->noutput; j++) {
        off[j] = nreal;
        nreal += (size_t)ir_numel(f->node[f->output[j]].type);
    }
    size_t stride = nreal + 1;
    /* inputs: the params shared, the data per task */
    void *in[64];
    size_t in_bytes[64];
    for (int i = 0; i < f->ninput; i++) {
        IrType t = f->node[f->input[i]].type;
        size_t n = (size_t)ir_numel(t) * (i < np ? 1 : B);
        in_bytes[i] = (size_t)ir_numel(t) * ir_dtype_size(t.dtype);
        in[i] = malloc(n * ir_dtype_size(t.dtype));
        for (size_t k = 0; k < n; k++)
            if (t.dtype == DT_I32)
                ((int32_t *)in[i])[k] = rand() % CLASSES;
            else
                ((double *)in[i])[k] = i < np ? 0.5 * (2 * gpu_test_urand() - 1) : 2 * gpu_test_urand() - 1;
    }
    /* the CPU target: each task's meta_step into its leaf */
    double *cpu_leaf = calloc(B * stride, sizeof(double));
    void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
    BeFn fn = be_jit_lookup(jit, "meta_step");
    for (int t = 0; t < B; t++) {
        const void *args[64];
        void *outs[64];
        for (int i = 0; i < f->ninput; i++)
            args[i] = i < np ? in[i] : (const char *)in[i] + (size_t)t * in_bytes[i];
        outs[0] = cpu_leaf + (size_t)t * stride + nreal;
        for (int j = 1; j < f->noutput; j++)
            outs[j] = cpu_leaf + (size_t)t * stride + off[j];
        fn(args, outs, arena);
    }
    double *cpu_mean = malloc(stride * sizeof(double));
    for (size_t e = 0; e < stride; e++)
        cpu_mean[e] = gpu_test_tree(cpu_leaf, stride, e, 0, B) * (1.0 / B);

    /* the GPU target's kernel, its grid run serially */
    BeGpuHostFn kernel = be_gpu_host_lookup(host, "meta_step");
    size_t task_bytes = be_gpu_task_bytes(f);
    void *work = aligned_alloc(64, B * task_bytes);
    double *leaf = calloc(B * stride, sizeof(double)), *grad[3], loss[3];
    uint32_t barrier[2] = {0, 0};
    uint64_t ctx[BE_GPU_ARGS + 128] = {0};
    ctx[BE_GPU_TASKS] = B;
    ctx[BE_GPU_WORK] = (uintptr_t)work;
    ctx[BE_GPU_BARRIER] = (uintptr_t)barrier;
    ctx[BE_GPU_MEAN_N] = stride;
    ctx[BE_GPU_LEAF] = (uintptr_t)leaf;
    ctx[BE_GPU_LEAF_STRIDE] = stride * sizeof(double);
    for (int i = 0; i < f->ninput; i++) {
        ctx[BE_GPU_ARGS + 2 * i] = (uintptr_t)in[i];
        ctx[BE_GPU_ARGS + 2 * i + 1] = i < np ? 0 : in_bytes[i];
    }
    for (int j = 0; j < f->noutput; j++) {
        ctx[BE_GPU_ARGS + 2 * (f->ninput + j)] = (uintptr_t)(leaf + (j ? off[j] : nreal));
        ctx[BE_GPU_ARGS + 2 * (f->ninput + j) + 1] = stride * sizeof(double);
    }
    /* grids: one team of 7 threads; 3 teams of 100 (some with two tasks);
     * more teams than tasks, of 5 threads */
    static const int64_t teams[3] = {1, 3, B + 2}, threads[3] = {7, 100, 5};
    for (int r = 0; r < 3; r++) {
        grad[r] = malloc(nreal * sizeof(double));
        ctx[BE_GPU_GRAD] = (uintptr_t)grad[r];
        ctx[BE_GPU_LOSS] = (uintptr_t)&loss[r];
        memset(leaf, 0, B * stride * sizeof(double));
        kernel(ctx, teams[r], threads[r]);
    }
    double worst = 0;
    for (int t = 0; t < B; t++)
        worst = fmax(worst, rel_norm(leaf + (size_t)t * stride, cpu_leaf + (size_t)t * stride, stride));
    CHECK(worst <= 1e-12, "%s: every task's meta-gradient and loss as the CPU's (worst %.3g)", what, worst);
    double err = rel_norm(grad[0], cpu_mean, nreal);
    CHECK(err <= 1e-12, "%s: the mean meta-gradient as the CPU's: %.3g relative", what, err);
    CHECK(fabs(loss[0] - cpu_mean[nreal]) <= 1e-12 * fabs(cpu_mean[nreal]), "%s: the mean loss %.17g as the CPU's %.17g",
          what, loss[0], cpu_mean[nreal]);
    for (int r = 1; r < 3; r++)
        CHECK(!memcmp(grad[0], grad[r], nreal * sizeof(double)) && !memcmp(&loss[0], &loss[r], sizeof(double)),
              "%s: %d teams of %d threads give the bits of one of %d", what, (int)teams[r], (int)threads[r],
              (int)threads[0]);
    fprintf(stderr, "%s: %zu reals, relative difference from the CPU target %.3g\n", what, nreal, err);

    /* the optimiser stage: Adam's first step as rt_opt_step takes it */
    double *params = malloc(nreal * sizeof(double)), *expect = malloc(nreal * sizeof(double));
    double *state = calloc(2 * nreal, sizeof(double)), *expect_state = calloc(2 * nreal, sizeof(double));
    for (size_t k = 0; k < nreal; k++)
        params[k] = expect[k] = 2 * gpu_test_urand() - 1;
    RtOptimizer o = {.kind = RT_ADAM, .lr = 0.001, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    rt_opt_step(&o, RT_F64, nreal, expect, grad[0], expect_state, 1);
    double sc[6] = {1.0 - o.beta1, o.beta2, 1.0 - o.beta2, o.eps, sqrt(1.0 - pow(o.beta2, 1)),
                    -(o.lr / (1.0 - pow(o.beta1, 1)))};
    ctx[BE_GPU_UPDATE] = 1;
    ctx[BE_GPU_PARAMS] = (uintptr_t)params;
    ctx[BE_GPU_STATE] = (uintptr_t)state;
    memcpy(&ctx[BE_GPU_OPT_W], sc, sizeof sc);
    kernel(ctx, 2, 32);
    CHECK(!memcmp(params, expect, nreal * sizeof(double)) && !memcmp(state, expect_state, 2 * nreal * sizeof(double)),
          "%s: the Adam stage gives rt_opt_step's bits", what);

    free(params);
    free(expect);
    free(state);
    free(expect_state);
    for (int r = 0; r < 3; r++)
        free(grad[r]);
    for (int i = 0; i < f->ninput; i++)
        free(in[i]);
    free(leaf);
    free(work);
    free(cpu_mean);
    free(cpu_leaf);
    free(arena);
    be_gpu_host_free(host);
    be_jit_free(jit);
    ir_module_free(m);
    model_free(md);
    diag_free(&d);
}

int main(void)
{
    srand(24);
    char *sine = gpu_test_read(MAMLC_SOURCE_DIR "/examples/sine.mdl");
    CHECK(sine != NULL, "examples/sine.mdl is readable");
    if (sine)
        check_model("sine.mdl", sine);
    free(sine);
    check_model("conv", conv_model);
    check_model("smooth", smooth_model);
    check_model("softmax", softmax_model);
    return check_summary();
}
