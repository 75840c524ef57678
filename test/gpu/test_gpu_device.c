/* The GPU target on a GPU: the meta-step's PTX (be_gpu_ptx) run through the
 * CUDA driver (runtime/cuda.c) against the CPU target's meta-gradient in
 * f64, for the sine MLP and a small conv net: the mean meta-gradient within
 * 1e-12 relative (norm-wise), two runs the same bits, and the Adam stage
 * rt_opt_step's bits.  Where no driver or no GPU is found it prints why and
 * exits 77, which ctest reports as Skipped: never Passed. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/backend.h"
#include "../../backend/gpu.h"
#include "../../runtime/cuda.h"
#include "../../runtime/runtime.h"
#include "../unit/build_model.h"
#include "../unit/gpu_common.h"
#include "../unit/check.h"

static const char *const conv_model =
    "dim N = 3; dim Q = 4;\n"
    "param C1 : [8, 1, 3, 3] = he;  param c1 : [8] = normal(0.1); param g1 : [8] = ones; param s1 : [8] = zeros;\n"
    "param C2 : [8, 8, 3, 3] = he;  param c2 : [8] = normal(0.1);\n"
    "param W : [N, 32] = glorot;  param b : [N] = normal(0.1);\n"
    "def net(x) {\n"
    "  h = relu(batch_norm(conv2d(x, C1, c1, stride = 2, pad = 1), g1, s1));\n"
    "  h = relu(conv2d(h, C2, c2, stride = 2, pad = 1));\n"
    "  return linear(flatten(h), W, b);\n"
    "}\n"
    "def loss(x, y) = cross_entropy(net(x), y);\n"
    "task external { support x : [N, 1, 8, 8], y : i32[N]; query x : [Q, 1, 8, 8], y : i32[Q]; }\n"
    "meta { inner_steps = 1; inner_lr = 0.4; order = second; }\n";

enum { B = 7, CLASSES = 3 };

static bool skipped;

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
    BeJit *jit = ok ? be_jit_compile(m, NULL, &d) : NULL;
    char *ptx = jit ? be_gpu_ptx(m, &(BeGpuOptions){.opt_level = 3}, &d) : NULL;
    CHECK(ptx != NULL, "%s: both targets compile", what);
    const IrFunc *f = ptx ? ir_module_find(m, "meta_step") : NULL;
    int np = f ? f->ninput - 4 : 0;
    size_t offset[64], count[64], nreal = 0, in_bytes[64];
    for (int i = 0; i < np; i++) {
        offset[i] = nreal;
        count[i] = (size_t)ir_numel(f->node[f->input[i]].type);
        nreal += count[i];
    }
    char err[4096];
    RtCuda *c = NULL;
    if (f) {
        RtCudaModel cm = {RT_F64, nreal, np, offset, count, {0}, be_gpu_task_bytes(f), be_gpu_stage_elems(f)};
        for (int k = 0; k < 4; k++) {
            IrType t = f->node[f->input[np + k]].type;
            cm.data_bytes[k] = (size_t)ir_numel(t) * ir_dtype_size(t.dtype);
        }
        c = rt_cuda_open(ptx, "meta_step", &cm, err, sizeof err);
        if (!c && (strstr(err, "no CUDA driver") || strstr(err, "sees no GPU") ||
                   strstr(err, "cannot start the CUDA driver"))) {
            printf("SKIPPED: %s\n", err);
            skipped = true;
        } else {
            CHECK(c != NULL, "%s: the CUDA driver loads the PTX: %s", what, c ? "" : err);
        }
    }
    if (c) {
        /* the flat parameters and each task's data, at random */
        double *params = malloc(nreal * sizeof(double));
        for (size_t k = 0; k < nreal; k++)
            params[k] = 0.5 * (2 * gpu_test_urand() - 1);
        void *data[4];
        for (int k = 0; k < 4; k++) {
            IrType t = f->node[f->input[np + k]].type;
            size_t n = (size_t)ir_numel(t) * B;
            in_bytes[k] = (size_t)ir_numel(t) * ir_dtype_size(t.dtype);
            data[k] = malloc(n * ir_dtype_size(t.dtype));
            for (size_t e = 0; e < n; e++)
                if (t.dtype == DT_I32)
                    ((int32_t *)data[k])[e] = rand() % CLASSES;
                else
                    ((double *)data[k])[e] = 2 * gpu_test_urand() - 1;
        }
        /* the CPU target, task by task, summed along the runtime's tree */
        size_t stride = nreal + 1;
        double *leaf = calloc(B * stride, sizeof(double)), *expect = malloc(stride * sizeof(double));
        void *arena = aligned_alloc(64, (be_arena_bytes(f) + 64) / 64 * 64);
        BeFn fn = be_jit_lookup(jit, "meta_step");
        for (int t = 0; t < B; t++) {
            const void *args[64];
            void *outs[64];
            for (int i = 0; i < np; i++)
                args[i] = params + offset[i];
            for (int k = 0; k < 4; k++)
                args[np + k] = (const char *)data[k] + (size_t)t * in_bytes[k];
            outs[0] = leaf + (size_t)t * stride + nreal;
            for (int i = 0; i < np; i++)
                outs[1 + i] = leaf + (size_t)t * stride + offset[i];
            fn(args, outs, arena);
        }
        for (size_t e = 0; e < stride; e++)
            expect[e] = gpu_test_tree(leaf, stride, e, 0, B) * (1.0 / B);
        /* the GPU, twice */
        double *grad[2] = {malloc(nreal * sizeof(double)), malloc(nreal * sizeof(double))}, loss[2];
        const void *in[4] = {data[0], data[1], data[2], data[3]};
        for (int r = 0; r < 2; r++)
            CHECK(rt_cuda_step_host(c, B, params, in, grad[r], &loss[r], NULL, NULL, 0, err, sizeof err),
                  "%s: the meta-step runs on the GPU: %s", what, err);
        double dd = 0, ss = 0;
        for (size_t e = 0; e < nreal; e++) {
            dd += (grad[0][e] - expect[e]) * (grad[0][e] - expect[e]);
            ss += expect[e] * expect[e];
        }
        double rel = sqrt(dd) / sqrt(ss);
        CHECK(rel <= 1e-12, "%s: the GPU's meta-gradient is the CPU's within %.3g relative", what, rel);
        CHECK(fabs(loss[0] - expect[nreal]) <= 1e-12 * fabs(expect[nreal]), "%s: loss %.17g, CPU %.17g", what,
              loss[0], expect[nreal]);
        CHECK(!memcmp(grad[0], grad[1], nreal * sizeof(double)) && loss[0] == loss[1],
              "%s: two runs give the same bits", what);
        int teams, blocks, threads;
        rt_cuda_grid(c, B, &teams, &blocks, &threads);
        printf("%s on %s (%d teams in %d blocks of %d threads): relative difference from the CPU %.3g\n", what,
               rt_cuda_device(c), teams, blocks, threads, rel);
        /* Adam's first step on the GPU, as rt_opt_step takes it */
        double *p_gpu = malloc(nreal * sizeof(double)), *p_cpu = malloc(nreal * sizeof(double));
        double *s_gpu = calloc(2 * nreal, sizeof(double)), *s_cpu = calloc(2 * nreal, sizeof(double));
        memcpy(p_gpu, params, nreal * sizeof(double));
        memcpy(p_cpu, params, nreal * sizeof(double));
        RtOptimizer o = {.kind = RT_ADAM, .lr = 0.001, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
        double l;
        CHECK(rt_cuda_step_host(c, B, p_gpu, in, grad[1], &l, &o, s_gpu, 1, err, sizeof err),
              "%s: the meta-step with Adam runs on the GPU: %s", what, err);
        rt_opt_step(&o, RT_F64, nreal, p_cpu, grad[1], s_cpu, 1);
        CHECK(!memcmp(p_gpu, p_cpu, nreal * sizeof(double)) && !memcmp(s_gpu, s_cpu, 2 * nreal * sizeof(double)),
              "%s: the GPU's Adam step gives rt_opt_step's bits", what);
        free(p_gpu);
        free(p_cpu);
        free(s_gpu);
        free(s_cpu);
        free(grad[0]);
        free(grad[1]);
        free(leaf);
        free(expect);
        free(arena);
        free(params);
        for (int k = 0; k < 4; k++)
            free(data[k]);
        rt_cuda_close(c);
    }
    free(ptx);
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
    if (!skipped)
        check_model("conv", conv_model);
    int status = check_summary();
    return skipped && status == 0 ? 77 : status;
}
