/* The mamlc runtime: what compiled meta-steps are driven with.  Plain C with
 * no dependency on the compiler, so it can be linked into generated
 * libraries.  Nothing here allocates inside a meta-step. */
#ifndef MAMLC_RUNTIME_H
#define MAMLC_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { RT_F32, RT_F64 } RtReal;     /* element type of reals */

/* Write a printf-style message into err (errsize bytes; nothing when err is
 * NULL) and return false: how the runtime fails with a reason. */
bool rt_errorf(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- replacing files (runtime/replace.c) ---
 * rt_replace_begin opens a new file beside path for writing (r->f);
 * rt_replace_end(r, ok) syncs and closes it and, if ok and every write
 * succeeded, renames it over path and syncs the folder, so path is either
 * the complete new file or untouched; otherwise the new file is removed.
 * Both return false with errno set on failure. */
typedef struct {
    FILE *f;
    const char *path;
    char *tmp;
} RtReplace;
bool rt_replace_begin(RtReplace *r, const char *path);
bool rt_replace_end(RtReplace *r, bool ok);

/* --- random numbers (runtime/rng.c) ---
 * xoshiro256** seeded through splitmix64: the same seed gives the same
 * stream on every machine. */
typedef struct { uint64_t s[4]; } RtRng;
void rt_rng_seed(RtRng *r, uint64_t seed);
/* A generator for sub-stream `stream` of `seed` (e.g. one per task index),
 * independent of how many numbers other streams drew. */
void rt_rng_stream(RtRng *r, uint64_t seed, uint64_t stream);
uint64_t rt_rng_u64(RtRng *r);
double rt_rng_uniform(RtRng *r, double lo, double hi);   /* [lo, hi) */
double rt_rng_normal(RtRng *r);                         /* N(0, 1) */
/* A uniform integer in [0, n), without modulo bias; 0 when n is 0. */
uint32_t rt_rng_below(RtRng *r, uint32_t n);

/* --- parameter initialisation (runtime/init.c) --- */
typedef enum {
    RT_INIT_ZEROS, RT_INIT_ONES, RT_INIT_HE, RT_INIT_GLOROT, RT_INIT_NORMAL,
    RT_INIT_UNIFORM, RT_INIT_CONST
} RtInitKind;
typedef struct {
    RtInitKind kind;
    double a, b;                /* NORMAL: std; UNIFORM: [a, b); CONST: a */
    int rank;
    const int *dim;             /* [out, in, ...]: fan_in = prod(dim[1..]), fan_out = dim[0] * receptive */
} RtInit;
/* Fill n = prod(dim) reals at out.  He: N(0, 2/fan_in); Glorot: U(+-sqrt(6/(fan_in+fan_out))).
 * A rank-1 tensor has fan_in = dim[0]. */
void rt_init(const RtInit *init, RtRng *r, RtReal real, void *out);

/* --- outer optimisers (runtime/optim.c) --- */
typedef enum { RT_ADAM, RT_SGD } RtOptKind;
typedef struct {
    RtOptKind kind;
    double lr, beta1, beta2, eps;
} RtOptimizer;
/* Reals of optimiser state for n parameters (Adam: 2n, SGD: 0). */
size_t rt_opt_state_count(const RtOptimizer *o, size_t n);
/* One update of params[0..n) with grad; `t` is the 1-based step number.
 * state holds rt_opt_state_count reals, zero before the first step. */
void rt_opt_step(const RtOptimizer *o, RtReal real, size_t n, void *params,
                 const void *grad, void *state, long t);

/* --- task sources (runtime/sinusoid.c, ...) ---
 * A source fills one task's support and query sets.  `task` is the global
 * index of the task; the data depends only on (seed, task), never on how
 * many tasks were drawn before. */
typedef struct {
    double amp_lo, amp_hi, phase_lo, phase_hi, x_lo, x_hi;
    int k, q;                   /* support and query points */
} RtSinusoid;
void rt_sinusoid_task(const RtSinusoid *s, uint64_t seed, uint64_t task, RtReal real,
                      void *sx, void *sy, void *qx, void *qy);

typedef void (*RtSampleFn)(const void *ctx, uint64_t seed, uint64_t task,
                           void *sx, void *sy, void *qx, void *qy);

/* Evaluation tasks are numbered RT_EVAL_TASK | i, so they never coincide
 * with a training task and a source can tell them apart (e.g. to draw from
 * held-out classes). */
#define RT_EVAL_TASK (UINT64_C(1) << 63)

/* The sinusoid source as an RtSampleFn: ctx is a const RtSinusoidSource *. */
typedef struct {
    RtSinusoid sinusoid;
    RtReal real;
} RtSinusoidSource;
void rt_sinusoid_sample(const void *ctx, uint64_t seed, uint64_t task,
                        void *sx, void *sy, void *qx, void *qy);

/* --- the meta-training loop (runtime/train.c) ---
 * Compiled entry points share one calling convention (backend/backend.h):
 *   void fn(const void *const *in, void *const *out, void *arena). */
typedef void (*RtFn)(const void *const *in, void *const *out, void *arena);

typedef struct {
    RtFn fn;
    size_t arena_bytes;
} RtEntry;

typedef struct {
    const char *name;
    size_t offset, count;       /* in reals, within the flat parameter vector */
    RtInit init;                /* how rt_init_params fills it */
} RtParam;

typedef struct {
    RtReal real;
    size_t nreal;               /* length of the flat parameter vector */
    const RtParam *param;
    int nparam;
    /* element counts and byte sizes of one task's tensors */
    size_t sx_bytes, sy_bytes, qx_bytes, qy_bytes;
    /* in: params..., sx, sy, qx, qy   out: query loss, d loss / d param... */
    RtEntry meta_step;
    /* in: params..., x, y   out: params'..., support loss (one inner step) */
    RtEntry adapt_step;
    /* in: params..., x, y   out: loss */
    RtEntry loss;
    /* in: params..., x, y   out: metric; fn NULL when the model has none */
    RtEntry metric;
    RtSampleFn sample;
    const void *sample_ctx;
    int meta_batch;
    RtOptimizer optimizer;
} RtProgram;

typedef struct {
    long iterations;            /* train until this many are done in all */
    long start;                 /* iterations already done (a resumed run) */
    void *opt_state;            /* the optimiser's state (rt_opt_state_count reals) to
                                   continue from and leave updated; NULL: start afresh */
    uint64_t seed;
    long eval_every;            /* 0: only at the end */
    int eval_tasks;             /* held-out tasks per evaluation */
    int nsteps;                 /* evaluation after these inner step counts */
    const int *steps;           /* e.g. {0, 1, 10} */
    bool progress;              /* live progress line on stderr */
    FILE *log;                  /* evaluation lines (stdout) */
} RtTrainOptions;

typedef struct {
    int steps;
    double loss, metric;        /* means over the evaluation tasks */
    double loss_ci, metric_ci;  /* half-widths of their 95% confidence intervals
                                   (1.96 standard errors; NAN for one task) */
    bool has_metric;
} RtEvalPoint;

typedef struct {
    long iterations;            /* done in all, earlier runs included */
    double seconds;             /* this run's meta-training time, evaluation excluded */
    double steps_per_second;
    double final_meta_loss;     /* mean query loss of the last meta-batch */
    bool diverged;              /* the meta-loss of iteration `iterations` + 1 was
                                   not finite: training stopped before applying it */
    int neval;
    RtEvalPoint eval[16];       /* the final evaluation */
} RtReport;

/* Initial values of the whole flat vector: tensor i from its own stream
 * (seed, i) of rt_rng_stream by its RtParam's init, so each tensor's values
 * depend only on the seed and its position. */
void rt_init_params(const RtProgram *p, uint64_t seed, void *params);

/* One task's data, as meta_step reads it. */
typedef struct {
    const void *sx, *sy, *qx, *qy;
} RtTask;

/* What rt_meta_grad needs besides its arguments, allocated once. */
typedef struct {
    void *arena;                /* meta_step's */
    void *task_grad;            /* one task's gradient */
    double *grad_sum;           /* the tasks' gradients, summed in task order */
    const void **in;
    void **out;
} RtStepWork;
bool rt_step_work_alloc(const RtProgram *p, RtStepWork *w);
void rt_step_work_free(RtStepWork *w);

/* The mean meta-gradient of n tasks at params into grad (nreal reals), and
 * their mean query loss as the result: meta_step once per task, gradients
 * summed in task order in double precision, so the result is the same bits
 * for the same inputs wherever it runs.  Allocates nothing. */
double rt_meta_grad(const RtProgram *p, RtStepWork *w, const void *params, int n,
                    const RtTask *tasks, void *grad);

/* Meta-train params (nreal reals, initialised by the caller) in place.
 * Iteration it (0-based) trains on tasks it * meta_batch + b; evaluation
 * runs every eval_every iterations and at the end, one line each to log.
 * Returns false when memory for the buffers cannot be had, or when
 * meta_batch < 1 or a count is negative; rep is filled either way. */
bool rt_train(const RtProgram *p, const RtTrainOptions *o, void *params, RtReport *rep);
/* Evaluate params on o->eval_tasks held-out tasks (RT_EVAL_TASK | i, the
 * same tasks every call): points[k] gets the mean query loss (and metric)
 * after o->steps[k] inner steps, for k < o->nsteps.  Returns false when
 * memory cannot be had or a step count is negative. */
bool rt_evaluate(const RtProgram *p, const RtTrainOptions *o, const void *params,
                 RtEvalPoint *points);
/* Write rep as JSON (the `--report` format), through a temporary file
 * renamed over path, so path is either complete or untouched.  On failure
 * errno says why. */
bool rt_write_report(const char *path, const RtReport *rep);

#endif
