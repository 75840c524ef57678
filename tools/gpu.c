/* --device cuda: the GPU target's PTX in a library, or a training run on
 * the GPU, and the GPU stages of --emit. */
#include "gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/cuda.h"
#include "library.h"

/* The kernel's context as the backend lays it out is what the runtime fills. */
_Static_assert((int)BE_GPU_TASKS == (int)RT_GPU_TASKS && (int)BE_GPU_WORK == (int)RT_GPU_WORK && (int)BE_GPU_BARRIER == (int)RT_GPU_BARRIER &&
                   (int)BE_GPU_MEAN_N == (int)RT_GPU_MEAN_N && (int)BE_GPU_LEAF == (int)RT_GPU_LEAF &&
                   (int)BE_GPU_LEAF_STRIDE == (int)RT_GPU_LEAF_STRIDE && (int)BE_GPU_GRAD == (int)RT_GPU_GRAD &&
                   (int)BE_GPU_LOSS == (int)RT_GPU_LOSS && (int)BE_GPU_UPDATE == (int)RT_GPU_UPDATE && (int)BE_GPU_PARAMS == (int)RT_GPU_PARAMS &&
                   (int)BE_GPU_STATE == (int)RT_GPU_STATE && (int)BE_GPU_OPT_W == (int)RT_GPU_OPT_W && (int)BE_GPU_OPT_B2 == (int)RT_GPU_OPT_B2 &&
                   (int)BE_GPU_OPT_C2 == (int)RT_GPU_OPT_C2 && (int)BE_GPU_OPT_EPS == (int)RT_GPU_OPT_EPS &&
                   (int)BE_GPU_OPT_BC2 == (int)RT_GPU_OPT_BC2 && (int)BE_GPU_OPT_STEP == (int)RT_GPU_OPT_STEP &&
                   (int)BE_GPU_TEAM_BLOCKS == (int)RT_GPU_TEAM_BLOCKS &&
                   (int)BE_GPU_ARGS == (int)RT_GPU_ARGS,
               "backend/gpu.h and runtime/cuda.h lay the kernel's context out alike");

static const SrcLoc no_loc = {0};

static BeGpuOptions meta_step_only(const BeGpuOptions *o)
{
    BeGpuOptions g = *o;
    g.only = "meta_step";
    return g;
}

bool gpu_emit(FILE *out, const IrModule *m, bool ptx, const BeGpuOptions *o, Diag *d)
{
    BeGpuOptions g = meta_step_only(o);
    if (!ptx)
        return be_gpu_emit_llvm(out, m, &g, d);
    char *text = be_gpu_ptx(m, &g, d);
    bool ok = text && fputs(text, out) >= 0;
    if (text && !ok)
        diag_error(d, no_loc, "cannot write the PTX");
    free(text);
    return ok;
}

/* C source defining mamlc__gpu with the PTX as a string, a line per
 * literal; malloc'd. */
static char *gpu_source(const char *ptx, size_t task_bytes, size_t stage_elems)
{
    size_t n = strlen(ptx), cap = 4 * n + 512, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    len += (size_t)snprintf(s, cap, "\n/* --device cuda: the meta-step's kernel (docs/gpu.md). */\n"
                                    "static const char mamlc__ptx[] =\n    \"");
    for (const char *p = ptx; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n')
            len += (size_t)snprintf(s + len, cap - len, "\\n\"\n    \"");
        else if (c == '"' || c == '\\')
            len += (size_t)snprintf(s + len, cap - len, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            len += (size_t)snprintf(s + len, cap - len, "\\%03o", c);
        else
            s[len++] = (char)c;
    }
    snprintf(s + len, cap - len,
             "\";\n__attribute__((visibility(\"hidden\"))) const MamlcGpu mamlc__gpu = "
             "{mamlc__ptx, \"meta_step\", %zu, %zu};\n", task_bytes, stage_elems);
    return s;
}

/* Whether the GPU target runs md's meta configuration: its meta-step takes
 * the params and the four data arrays, and its last stage applies plain Adam
 * or SGD; false after reporting the first switch it does not run. */
static bool gpu_meta_supported(const Model *md, Diag *d)
{
    const MetaConfig *mc = &md->meta;
    const OptimizerConfig *oc = &mc->optimizer;
    const char *what = oc->kind == OPT_ADAMW ? "optimizer = adamw(..)"
                       : oc->weight_decay    ? "weight_decay"
                       : oc->cosine          ? "schedule = cosine(..)"
                       : mc->clip_norm       ? "clip_norm"
                       : mc->msl_iterations  ? "multi_step_loss"
                       : mc->order == ORDER_ANNEAL ? "order = anneal(..)"
                       : mc->per_step        ? "per_step params"
                       : mc->eval_mode != EVAL_MODE_NONE ? "eval_mode"
                                                         : NULL;
    if (what)
        diag_error(d, mc->loc, "--device cuda does not run %s yet (docs/gpu.md); without --device it runs on the CPU",
                   what);
    return !what;
}

bool gpu_lib_build(const Model *md, const IrModule *m, const char *path, const char *header, const BeOptions *be,
                   const BeGpuOptions *o, Diag *d)
{
    if (!gpu_meta_supported(md, d))
        return false;
    BeGpuOptions g = meta_step_only(o);
    char *ptx = be_gpu_ptx(m, &g, d);
    const IrFunc *f = ir_module_find(m, "meta_step");
    char *src = ptx ? gpu_source(ptx, be_gpu_task_bytes(f), be_gpu_stage_elems(f)) : NULL;
    if (ptx && !src)
        diag_error(d, no_loc, "out of memory embedding the PTX");
    bool ok = src && lib_build(md, m, path, header, be, src, d);
    free(src);
    free(ptx);
    return ok;
}

/* --- mamlc run --device cuda --- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The options of mamlc run that a GPU run takes: --iters, --seed, --quiet. */
static bool run_options_ok(const RunOptions *r, Diag *d)
{
    const char *other = r->save ? "--save" : r->resume ? "--resume" : r->report ? "--report" : r->log ? "--log"
                        : r->data ? "--data" : r->eval_data ? "--eval-data" : r->tasks ? "--tasks"
                        : r->threads > 1 ? "--threads" : r->cluster ? "mamlc-mpi" : NULL;
    if (other)
        diag_error(d, no_loc, "%s does not go with --device cuda yet (it takes --iters, --seed and --quiet)", other);
    return !other;
}

int gpu_run_model(const Model *md, IrModule *m, const BeGpuOptions *o, const RunOptions *r, Diag *d)
{
    if (!r->train) {
        diag_error(d, no_loc, "--device cuda goes with 'mamlc run'");
        return 1;
    }
    if (!run_options_ok(r, d) || !gpu_meta_supported(md, d))
        return 1;
    if (strcmp(md->task.kind, "sinusoid") != 0) {
        diag_error(d, md->task.loc, "mamlc run --device cuda draws sinusoid tasks so far; for '%s' build a library "
                   "with -o --device cuda and feed it the tasks (docs/gpu.md)", md->task.kind);
        return 1;
    }
    IrFunc *f = ir_module_find(m, "meta_step");
    BeGpuOptions g = meta_step_only(o);
    char *ptx = f ? be_gpu_ptx(m, &g, d) : NULL;
    if (!ptx)
        return 1;
    int ntensor = md->ntensor;
    size_t *offset = calloc((size_t)ntensor + 1, sizeof *offset), *count = calloc((size_t)ntensor + 1, sizeof *count);
    RtParam *param = calloc((size_t)ntensor + 1, sizeof *param);
    size_t nreal = 0;
    for (int i = 0; param && offset && count && i < ntensor; i++) {
        const ModelParam *mp = &md->param[i];
        offset[i] = nreal;
        count[i] = (size_t)ir_numel(mp->type);
        param[i] = (RtParam){mp->name, nreal, count[i], run_param_init(mp)};
        nreal += count[i];
    }
    const ModelTask *t = &md->task;
    RtReal real = md->real == DT_F64 ? RT_F64 : RT_F32;
    RtCudaModel cm = {real, nreal, ntensor, offset, count,
                      {run_value_bytes(t->support_x), run_value_bytes(t->support_y), run_value_bytes(t->query_x),
                       run_value_bytes(t->query_y)},
                      be_gpu_task_bytes(f), be_gpu_stage_elems(f)};
    char err[2048];
    RtCuda *c = param && offset && count ? rt_cuda_open(ptx, "meta_step", &cm, err, sizeof err) : NULL;
    free(ptx);
    int status = 1;
    if (!c) {
        diag_error(d, no_loc, "--device cuda: %s", param ? err : "out of memory");
    } else {
        int B = md->meta.meta_batch, teams, blocks, threads;
        long iters = r->iters ? r->iters : md->meta.iterations;
        rt_cuda_grid(c, B, &teams, &blocks, &threads);
        fprintf(stderr, "mamlc: %s, %d teams in %d blocks of %d threads\n", rt_cuda_device(c), teams, blocks,
                threads);
        RtProgram p = {.real = real, .nreal = nreal, .param = param, .nparam = ntensor};
        RtOptimizer opt = run_optimizer(&md->meta);
        size_t rb = rt_real_bytes(real);
        RtSinusoidSource src = {run_sinusoid(t), real};
        void *params = calloc(nreal + 1, rb), *state = calloc(2 * nreal + 1, rb), *data[4];
        for (int k = 0; k < 4; k++)
            data[k] = calloc((size_t)B * cm.data_bytes[k] + 1, 1);
        double *secs = calloc((size_t)iters + 1, sizeof *secs), loss = NAN;
        bool good = params && state && data[0] && data[1] && data[2] && data[3] && secs;
        if (good)
            rt_init_params(&p, r->seed, params);
        long it = 0;
        for (; good && it < iters; it++) {
            double t0 = now();
            for (int b = 0; b < B; b++)
                rt_sinusoid_sample(&src, r->seed, (uint64_t)it * (uint64_t)B + (uint64_t)b,
                                   (char *)data[0] + (size_t)b * cm.data_bytes[0],
                                   (char *)data[1] + (size_t)b * cm.data_bytes[1],
                                   (char *)data[2] + (size_t)b * cm.data_bytes[2],
                                   (char *)data[3] + (size_t)b * cm.data_bytes[3]);
            const void *const in[4] = {data[0], data[1], data[2], data[3]};
            good = rt_cuda_step_host(c, B, params, in, NULL, &loss, &opt, state, it + 1, err, sizeof err);
            secs[it] = now() - t0;
            if (good && !r->quiet && ((it + 1) % 1000 == 0 || it + 1 == iters))
                fprintf(stderr, "iteration %ld: meta-loss %.6g\n", it + 1, loss);
        }
        if (!good) {
            diag_error(d, no_loc, "--device cuda: %s", params ? err : "out of memory");
        } else {
            qsort(secs, (size_t)iters, sizeof *secs, cmp_double);
            printf("trained %ld iterations on %s: final meta-loss %.6g, median step %.6g s\n", iters,
                   rt_cuda_device(c), loss, secs[iters / 2]);
            status = 0;
        }
        for (int k = 0; k < 4; k++)
            free(data[k]);
        free(params);
        free(state);
        free(secs);
        rt_cuda_close(c);
    }
    free(param);
    free(offset);
    free(count);
    return status;
}
