/* Meta-steps on an NVIDIA GPU through the CUDA driver API (cuda.h).
 *
 * The driver is loaded with dlopen when a GPU is first asked for, never
 * linked: the library and mamlc build and run everywhere else.  It is
 * libcuda.so.1, or the file the environment variable MAMLC_CUDA_DRIVER
 * names (tests name one that is missing).  Its
 * functions are declared here with the driver's own types reduced to what
 * C needs (CUdeviceptr is a 64-bit integer, handles are pointers).  One
 * launch computes a meta-step: the kernel is persistent and synchronises
 * its grid itself, so it is launched cooperatively (cuLaunchCooperativeKernel)
 * with at most as many blocks as the device holds at once: a team of
 * blocks per task (teams_for). */
#include "cuda.h"

#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;           /* 0: CUDA_SUCCESS */
typedef uint64_t CUdeviceptr;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream;

enum {
    ATTR_MULTIPROCESSOR_COUNT = 16,
    ATTR_COOPERATIVE_LAUNCH = 95,
    JIT_ERROR_LOG_BUFFER = 5,
    JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
    THREADS = 256,              /* a block's threads */
};

/* The driver's functions this file calls, by their exported names. */
typedef struct {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGet)(int *, int);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGetName)(char *, int, int);
    CUresult (*DeviceGetAttribute)(int *, int, int);
    CUresult (*PrimaryCtxRetain)(CUcontext *, int);
    CUresult (*PrimaryCtxRelease)(int);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*CtxSynchronize)(void);
    CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*Occupancy)(int *, CUfunction, int, size_t);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*HtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*DtoH)(void *, CUdeviceptr, size_t);
    CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*LaunchCooperative)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  CUstream, void **);
    CUresult (*GetErrorString)(CUresult, const char **);
} Driver;

struct RtCuda {
    void *lib;                  /* libcuda.so.1 */
    Driver cu;
    int dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    char name[128];
    int blocks;
    RtCudaModel m;
    size_t *offset, *count;     /* m's, owned */
    /* device buffers, grown to the largest B seen */
    int cap;
    CUdeviceptr work, leaf, slots, barrier, loss;
    CUdeviceptr h_params, h_data[4], h_grad, h_state;   /* rt_cuda_step_host's copies */
    size_t leaf_stride;
};

static bool fail(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t size, const char *fmt, ...)
{
    if (err && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* false with "what: the driver's message" when r is an error. */
static bool ok(const RtCuda *c, CUresult r, const char *what, char *err, size_t size)
{
    if (r == 0)
        return true;
    const char *msg = NULL;
    if (c->cu.GetErrorString)
        c->cu.GetErrorString(r, &msg);
    return fail(err, size, "%s: %s (CUDA error %d)", what, msg ? msg : "unknown error", r);
}

static bool load_driver(RtCuda *c, char *err, size_t size)
{
    const char *path = getenv("MAMLC_CUDA_DRIVER");
    if (!path || !*path)
        path = "libcuda.so.1";
    c->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!c->lib)
        return fail(err, size, "no CUDA driver: cannot load %s (%s); --device cuda needs an NVIDIA GPU and its "
                    "driver", path, dlerror());
    static const struct {
        const char *name;
        size_t at;
    } syms[] = {
        {"cuInit", offsetof(Driver, Init)},
        {"cuDeviceGet", offsetof(Driver, DeviceGet)},
        {"cuDeviceGetCount", offsetof(Driver, DeviceGetCount)},
        {"cuDeviceGetName", offsetof(Driver, DeviceGetName)},
        {"cuDeviceGetAttribute", offsetof(Driver, DeviceGetAttribute)},
        {"cuDevicePrimaryCtxRetain", offsetof(Driver, PrimaryCtxRetain)},
        {"cuDevicePrimaryCtxRelease_v2", offsetof(Driver, PrimaryCtxRelease)},
        {"cuCtxSetCurrent", offsetof(Driver, CtxSetCurrent)},
        {"cuCtxSynchronize", offsetof(Driver, CtxSynchronize)},
        {"cuModuleLoadDataEx", offsetof(Driver, ModuleLoadDataEx)},
        {"cuModuleUnload", offsetof(Driver, ModuleUnload)},
        {"cuModuleGetFunction", offsetof(Driver, ModuleGetFunction)},
        {"cuOccupancyMaxActiveBlocksPerMultiprocessor", offsetof(Driver, Occupancy)},
        {"cuMemAlloc_v2", offsetof(Driver, MemAlloc)},
        {"cuMemFree_v2", offsetof(Driver, MemFree)},
        {"cuMemcpyHtoD_v2", offsetof(Driver, HtoD)},
        {"cuMemcpyDtoH_v2", offsetof(Driver, DtoH)},
        {"cuMemsetD8_v2", offsetof(Driver, MemsetD8)},
        {"cuLaunchCooperativeKernel", offsetof(Driver, LaunchCooperative)},
        {"cuGetErrorString", offsetof(Driver, GetErrorString)},
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        void *p = dlsym(c->lib, syms[i].name);
        if (!p)
            return fail(err, size, "the CUDA driver libcuda.so.1 has no %s: too old a driver", syms[i].name);
        memcpy((char *)&c->cu + syms[i].at, &p, sizeof p);
    }
    return true;
}

static void free_buffers(RtCuda *c)
{
    CUdeviceptr *all[] = {&c->work, &c->leaf, &c->slots, &c->barrier, &c->loss, &c->h_params, &c->h_data[0],
                          &c->h_data[1], &c->h_data[2], &c->h_data[3], &c->h_grad, &c->h_state};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (*all[i])
            c->cu.MemFree(*all[i]);
        *all[i] = 0;
    }
    c->cap = 0;
}

void rt_cuda_close(RtCuda *c)
{
    if (!c)
        return;
    if (c->ctx) {
        c->cu.CtxSetCurrent(c->ctx);
        free_buffers(c);
        if (c->mod)
            c->cu.ModuleUnload(c->mod);
        c->cu.PrimaryCtxRelease(c->dev);
    }
    if (c->lib)
        dlclose(c->lib);
    free(c->offset);
    free(c->count);
    free(c);
}

RtCuda *rt_cuda_open(const char *ptx, const char *kernel, const RtCudaModel *m, char *err, size_t size)
{
    RtCuda *c = calloc(1, sizeof *c);
    if (!c) {
        fail(err, size, "out of memory");
        return NULL;
    }
    c->m = *m;
    c->offset = malloc(((size_t)m->ntensor + 1) * sizeof *c->offset);
    c->count = malloc(((size_t)m->ntensor + 1) * sizeof *c->count);
    bool good = c->offset && c->count ? true : fail(err, size, "out of memory");
    if (good) {
        memcpy(c->offset, m->offset, (size_t)m->ntensor * sizeof *c->offset);
        memcpy(c->count, m->count, (size_t)m->ntensor * sizeof *c->count);
        c->m.offset = c->offset;
        c->m.count = c->count;
    }
    good = good && load_driver(c, err, size);
    int n = 0, coop = 0, sms = 0, per_sm = 0;
    good = good && ok(c, c->cu.Init(0), "cannot start the CUDA driver", err, size) &&
           ok(c, c->cu.DeviceGetCount(&n), "cannot count the GPUs", err, size);
    if (good && n == 0)
        good = fail(err, size, "the CUDA driver sees no GPU");
    good = good && ok(c, c->cu.DeviceGet(&c->dev, 0), "cannot open GPU 0", err, size) &&
           ok(c, c->cu.DeviceGetName(c->name, sizeof c->name, c->dev), "cannot name GPU 0", err, size) &&
           ok(c, c->cu.PrimaryCtxRetain(&c->ctx, c->dev), "cannot take GPU 0's primary context", err, size) &&
           ok(c, c->cu.CtxSetCurrent(c->ctx), "cannot use GPU 0's primary context", err, size) &&
           ok(c, c->cu.DeviceGetAttribute(&coop, ATTR_COOPERATIVE_LAUNCH, c->dev), "cannot query GPU 0", err, size) &&
           ok(c, c->cu.DeviceGetAttribute(&sms, ATTR_MULTIPROCESSOR_COUNT, c->dev), "cannot query GPU 0", err, size);
    if (good && !coop)
        good = fail(err, size, "GPU 0 (%s) cannot launch cooperative kernels", c->name);
    if (good) {
        char log[8192] = "";
        int opt[2] = {JIT_ERROR_LOG_BUFFER, JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
        void *val[2] = {log, (void *)(uintptr_t)sizeof log};
        CUresult r = c->cu.ModuleLoadDataEx(&c->mod, ptx, 2, opt, val);
        if (r) {
            ok(c, r, "the CUDA driver refuses the PTX", err, size);
            size_t used = err ? strlen(err) : 0;
            if (err && *log && used + 3 < size)
                snprintf(err + used, size - used, ": %s", log);
            good = false;
        }
    }
    good = good && ok(c, c->cu.ModuleGetFunction(&c->fn, c->mod, kernel), "the PTX has no kernel", err, size) &&
           ok(c, c->cu.Occupancy(&per_sm, c->fn, THREADS, 0), "cannot size the grid", err, size);
    if (good && per_sm < 1)
        good = fail(err, size, "the kernel '%s' does not fit on GPU 0 (%s)", kernel, c->name);
    if (!good) {
        rt_cuda_close(c);
        return NULL;
    }
    c->blocks = sms * per_sm;
    return c;
}

const char *rt_cuda_device(const RtCuda *c) { return c->name; }

/* The teams of a launch for B tasks: as many as the tasks (each of
 * P blocks, enough for the largest stage's elements at a few a thread,
 * as many as the grid holds), or, with more tasks than resident blocks,
 * one block each.  MAMLC_CUDA_TEAM_BLOCKS sets P (within what fits). */
static void teams_for(const RtCuda *c, int B, int *teams, int *P)
{
    if (B >= c->blocks) {
        *teams = c->blocks;
        *P = 1;
        return;
    }
    int most = c->blocks / B;
    size_t want = (c->m.stage_elems + 4 * THREADS - 1) / (4 * THREADS);
    const char *env = getenv("MAMLC_CUDA_TEAM_BLOCKS");
    if (env && atoi(env) > 0)
        want = (size_t)atoi(env);
    *teams = B;
    *P = want < 1 ? 1 : want > (size_t)most ? most : (int)want;
}

void rt_cuda_grid(const RtCuda *c, int B, int *teams, int *blocks, int *threads)
{
    int P;
    teams_for(c, B, teams, &P);
    *blocks = *teams * P;
    *threads = THREADS;
}

static size_t real_bytes(const RtCuda *c) { return rt_real_bytes(c->m.real); }

/* Room for B tasks: working memory, leaves, the slots, and the host
 * copies' buffers. */
static bool reserve(RtCuda *c, int B, char *err, size_t size)
{
    if (B <= c->cap)
        return true;
    free_buffers(c);
    size_t rb = real_bytes(c), nreal = c->m.nreal;
    c->leaf_stride = ((nreal + 1) * rb + 63) / 64 * 64;
    size_t bytes[] = {(size_t)B * c->m.task_bytes, (size_t)B * c->leaf_stride,
                      8 * (RT_GPU_ARGS + 2 * ((size_t)c->m.ntensor + 4 + 1 + (size_t)c->m.ntensor)),
                      8 * ((size_t)c->blocks + 1), 64, nreal * rb + 64, (size_t)B * c->m.data_bytes[0] + 64, (size_t)B * c->m.data_bytes[1] + 64,
                      (size_t)B * c->m.data_bytes[2] + 64, (size_t)B * c->m.data_bytes[3] + 64, nreal * rb + 64,
                      2 * nreal * rb + 64};
    CUdeviceptr *at[] = {&c->work, &c->leaf, &c->slots, &c->barrier, &c->loss, &c->h_params, &c->h_data[0],
                         &c->h_data[1], &c->h_data[2], &c->h_data[3], &c->h_grad, &c->h_state};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++)
        if (!ok(c, c->cu.MemAlloc(at[i], bytes[i] ? bytes[i] : 64), "out of GPU memory", err, size)) {
            free_buffers(c);
            return false;
        }
    if (!ok(c, c->cu.MemsetD8(c->barrier, 0, 8 * ((size_t)c->blocks + 1)), "cannot clear the barriers", err, size)) {
        free_buffers(c);
        return false;
    }
    c->cap = B;
    return true;
}

bool rt_cuda_step_device(RtCuda *c, int B, uint64_t params, const uint64_t data[4], uint64_t grad, double *loss,
                         const RtOptimizer *opt, uint64_t state, long t, char *err, size_t size)
{
    if (B < 1 || B > RT_MAX_BATCH)
        return fail(err, size, "a meta-batch of %d tasks is outside [1, %d]", B, RT_MAX_BATCH);
    if (!ok(c, c->cu.CtxSetCurrent(c->ctx), "cannot use GPU 0's primary context", err, size) || !reserve(c, B, err, size))
        return false;
    const RtCudaModel *m = &c->m;
    size_t rb = real_bytes(c), nin = (size_t)m->ntensor + 4;
    uint64_t slot[RT_GPU_ARGS + 2 * (64 + 5 + 64)];
    size_t nslot = RT_GPU_ARGS + 2 * (nin + 1 + (size_t)m->ntensor);
    if (nslot > sizeof slot / sizeof *slot)
        return fail(err, size, "a model of %d tensors has too many for the GPU's context", m->ntensor);
    memset(slot, 0, sizeof slot);
    slot[RT_GPU_TASKS] = (uint64_t)B;
    slot[RT_GPU_WORK] = c->work;
    slot[RT_GPU_BARRIER] = c->barrier;
    slot[RT_GPU_MEAN_N] = m->nreal + 1;
    slot[RT_GPU_LEAF] = c->leaf;
    slot[RT_GPU_LEAF_STRIDE] = c->leaf_stride;
    slot[RT_GPU_GRAD] = grad;
    slot[RT_GPU_LOSS] = c->loss;
    int teams, P;
    teams_for(c, B, &teams, &P);
    slot[RT_GPU_TEAM_BLOCKS] = (uint64_t)P;
    for (int i = 0; i < m->ntensor; i++) {
        slot[RT_GPU_ARGS + 2 * i] = params + m->offset[i] * rb;        /* stride 0: every task's */
        slot[RT_GPU_ARGS + 2 * (nin + 1 + i)] = c->leaf + m->offset[i] * rb;
        slot[RT_GPU_ARGS + 2 * (nin + 1 + i) + 1] = c->leaf_stride;
    }
    for (int k = 0; k < 4; k++) {
        slot[RT_GPU_ARGS + 2 * (m->ntensor + k)] = data[k];
        slot[RT_GPU_ARGS + 2 * (m->ntensor + k) + 1] = m->data_bytes[k];
    }
    slot[RT_GPU_ARGS + 2 * nin] = c->leaf + m->nreal * rb;              /* output 0: the query loss */
    slot[RT_GPU_ARGS + 2 * nin + 1] = c->leaf_stride;
    if (opt) {
        /* runtime/optim.c's scalars, in double, rounded to the real type by the kernel */
        double sc[6] = {1.0 - opt->beta1, opt->beta2, 1.0 - opt->beta2, opt->eps,
                        sqrt(1.0 - pow(opt->beta2, (double)t)), -(opt->lr / (1.0 - pow(opt->beta1, (double)t)))};
        if (opt->kind == RT_SGD)
            sc[5] = -opt->lr;
        slot[RT_GPU_UPDATE] = opt->kind == RT_ADAM ? 1 : 2;
        slot[RT_GPU_PARAMS] = params;
        slot[RT_GPU_STATE] = state;
        memcpy(&slot[RT_GPU_OPT_W], sc, sizeof sc);
    }
    if (!ok(c, c->cu.HtoD(c->slots, slot, nslot * sizeof *slot), "cannot copy to the GPU", err, size))
        return false;
    void *args[1] = {&c->slots};
    return ok(c, c->cu.LaunchCooperative(c->fn, (unsigned)(teams * P), 1, 1, THREADS, 1, 1, 0, NULL, args),
              "cannot launch the meta-step", err, size) &&
           ok(c, c->cu.CtxSynchronize(), "the meta-step failed on the GPU", err, size) &&
           ok(c, c->cu.DtoH(loss, c->loss, sizeof *loss), "cannot copy from the GPU", err, size);
}

bool rt_cuda_step_host(RtCuda *c, int B, void *params, const void *const data[4], void *grad, double *loss,
                       const RtOptimizer *opt, void *state, long t, char *err, size_t size)
{
    if (B < 1 || B > RT_MAX_BATCH)
        return fail(err, size, "a meta-batch of %d tasks is outside [1, %d]", B, RT_MAX_BATCH);
    if (!ok(c, c->cu.CtxSetCurrent(c->ctx), "cannot use GPU 0's primary context", err, size) || !reserve(c, B, err, size))
        return false;
    size_t pb = c->m.nreal * real_bytes(c), sb = opt && opt->kind == RT_ADAM ? 2 * pb : 0;
    bool good = ok(c, c->cu.HtoD(c->h_params, params, pb), "cannot copy to the GPU", err, size);
    for (int k = 0; good && k < 4; k++)
        good = ok(c, c->cu.HtoD(c->h_data[k], data[k], (size_t)B * c->m.data_bytes[k]), "cannot copy to the GPU", err,
                  size);
    if (good && sb)
        good = ok(c, c->cu.HtoD(c->h_state, state, sb), "cannot copy to the GPU", err, size);
    good = good && rt_cuda_step_device(c, B, c->h_params, c->h_data, c->h_grad, loss, opt, c->h_state, t, err, size);
    good = good && (!grad || ok(c, c->cu.DtoH(grad, c->h_grad, pb), "cannot copy from the GPU", err, size));
    if (good && opt)
        good = ok(c, c->cu.DtoH(params, c->h_params, pb), "cannot copy from the GPU", err, size) &&
               (!sb || ok(c, c->cu.DtoH(state, c->h_state, sb), "cannot copy from the GPU", err, size));
    return good;
}
