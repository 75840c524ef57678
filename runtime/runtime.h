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

/* Bytes of one real of type real. */
static inline size_t rt_real_bytes(RtReal real)
{
    return real == RT_F32 ? sizeof(float) : sizeof(double);
}

/* Write a printf-style message into err (errsize bytes; nothing when err is
 * NULL) and return false: how the runtime fails with a reason. */
bool rt_errorf(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- replacing files (runtime/replace.c) ---
 * rt_replace_begin opens a new file beside path for writing (r->f), named
 * after this host and process, after removing any such file of path that a
 * dead process of this host left;
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
typedef enum { RT_ADAM, RT_SGD, RT_ADAMW } RtOptKind;
typedef struct {
    RtOptKind kind;
    double lr, beta1, beta2, eps;
    double weight_decay;        /* Adam: w p added to the gradient; AdamW: p scaled by 1 - lr w */
    double clip_norm;           /* > 0: the gradient's L2 norm clipped to it first */
    bool cosine;                /* the lr anneals from lr to min_lr over t_max steps */
    double min_lr;
    long t_max;
} RtOptimizer;
/* Reals of optimiser state for n parameters (Adam, AdamW: 2n, SGD: 0). */
size_t rt_opt_state_count(const RtOptimizer *o, size_t n);
/* The learning rate of step t (1-based): lr, or with the cosine schedule
 * torch's CosineAnnealingLR (T_max = t_max, eta_min = min_lr) in its closed
 * form, min_lr + (lr - min_lr) (1 + cos(pi (t - 1) / t_max)) / 2, which
 * depends on t alone, so a resumed run needs no state for it. */
double rt_opt_lr(const RtOptimizer *o, long t);
/* What the gradient is multiplied by before a step, as
 * torch.nn.utils.clip_grad_norm_(max_norm = clip_norm): min(1, clip_norm /
 * (||grad||_2 + 1e-6)), the norm summed in double over the whole vector;
 * 1 without clipping. */
double rt_opt_grad_scale(const RtOptimizer *o, RtReal real, size_t n, const void *grad);
/* One update of params[0..n) with grad; `t` is the 1-based step number.
 * state holds rt_opt_state_count reals, zero before the first step. */
void rt_opt_step(const RtOptimizer *o, RtReal real, size_t n, void *params,
                 const void *grad, void *state, long t);
/* The same update of elements [from, to) of the n alone, the gradient
 * scaled by `scale` (rt_opt_grad_scale of the whole): disjoint ranges
 * together make rt_opt_step, bit for bit, whoever computes them. */
void rt_opt_step_range(const RtOptimizer *o, RtReal real, size_t n, size_t from, size_t to,
                       void *params, const void *grad, void *state, long t, double scale);

/* MAML++'s multi-step loss weights (Antoniou et al. 2019,
 * get_per_step_loss_importance_vector) of iteration `it` (0-based) of a run
 * whose weights anneal over `anneal` iterations, for `steps` inner steps,
 * into out[0..steps) as reals of type real: while it < anneal, each of the
 * first steps - 1 is max(1/steps - it / (steps anneal), 0.03 / steps) and
 * the last min(1/steps + it (steps - 1) / (steps anneal), 1 - (steps - 1)
 * 0.03 / steps), computed in double; from `anneal` on, as in MAML++, the
 * last step's loss alone (0, ..., 0, 1). */
void rt_msl_weights(int steps, long anneal, long it, RtReal real, void *out);

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
/* The amplitude A and phase phi of that task: y = A sin(x - phi). */
void rt_sinusoid_params(const RtSinusoid *s, uint64_t seed, uint64_t task, double *amp, double *phase);

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
    /* the same at first order, for order = anneal(first_until): the
       iterations below first_until take it (fn NULL: none) */
    RtEntry meta_step_first;
    long first_until;
    /* multi_step_loss = anneal(msl_iterations): meta_step takes loss_weights
       reals (rt_msl_weights) after qy; 0: none */
    int loss_weights;
    long msl_iterations;
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
    /* Per-step params (MAML++): per tensor, for a per-step param's slot
     * (which holds its copy 0), the tensor of its copy 1, copies 1 ..
     * step_copies - 1 following; else -1.  Evaluation passes the loss after
     * k inner steps, and inner step k + 1, copy min(max(k - 1, 0), S - 1)
     * in the slot (S = step_copies).  NULL: the model has none. */
    const int *step_copy;
    int step_copies;
    /* Running statistics of batch norm (MAML++'s BNRS); nstat 0: none.
     * meta_step's last result is the batch statistics of its inner steps
     * 1..S, S vectors of nstat / S reals (each batch_norm's means, then its
     * unbiased variances, in the model's order).  The flat vectors that
     * rt_train and rt_evaluate take then hold nstat more reals after the
     * nreal: the running statistics, in that layout, which rt_train
     * updates after each meta-iteration, in double and rounded to the real
     * type, as torch.nn.BatchNorm does with momentum 0.1:
     *   running <- 0.9 running + 0.1 mean over the tasks of their batch statistics
     * (the mean summed in double along the meta-batch's tree, as the
     * gradients are).  The inference forms take the statistics of one
     * step (nstat / S reals) after the tensors:
     *   in: params..., bn, x, y   out: as adapt_step, loss and metric */
    size_t nstat;
    RtEntry adapt_running, loss_running, metric_running;
} RtProgram;

/* How a process of a distributed run (mamlc-mpi) exchanges its node sums
 * with the others: every process sends nsend vectors of `unit` doubles and
 * receives all processes' vectors into recv, process k's counts[k] of them
 * at vector displs[k], in process order (MPI_Allgatherv).  False on failure. */
typedef bool (*RtGatherFn)(void *ctx, const double *send, int nsend, double *recv,
                           const int *counts, const int *displs, size_t unit);

/* Called by rt_train after iteration `done` when done is a multiple of
 * checkpoint_every, with the parameters and optimiser state after it;
 * returning false stops training (rt_train then returns false). */
typedef bool (*RtCheckpointFn)(void *ctx, long done, const void *params, const void *opt_state);

typedef struct {
    int steps;
    double loss, metric;        /* means over the evaluation tasks */
    double loss_ci, metric_ci;  /* half-widths of their 95% confidence intervals
                                   (1.96 standard errors; NAN for one task) */
    bool has_metric;
} RtEvalPoint;

/* Called by rt_train every progress_every iterations and after the last
 * one, with the iterations done, the mean meta-loss of the iterations since
 * the previous call and their rate in iterations per second of training
 * (evaluation and checkpoints excluded). */
typedef void (*RtProgressFn)(void *ctx, long done, double mean_loss, double steps_per_second);
/* Called by rt_train after each held-out evaluation it runs, with the
 * iterations done and the evaluation's npoints points. */
typedef void (*RtEvalFn)(void *ctx, long done, const RtEvalPoint *points, int npoints);

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
    int threads;                /* threads sharing each meta-batch's tasks (0 or 1: the caller only) */
    int rank, nranks;           /* this process computes tasks [rank B / nranks, (rank + 1) B / nranks)
                                   of each meta-batch of B; nranks 0 or 1: all of them */
    RtGatherFn gather;          /* how the processes exchange node sums (nranks > 1) */
    void *gather_ctx;
    long checkpoint_every;      /* 0: never */
    RtCheckpointFn checkpoint;
    void *checkpoint_ctx;
    long progress_every;        /* 0: on_progress is never called */
    RtProgressFn on_progress;   /* NULL: none */
    RtEvalFn on_eval;           /* NULL: none */
    bool eval_running;          /* evaluate with the running statistics (p->nstat > 0):
                                   step k's inference forms get those of copy
                                   min(max(k - 1, 0), S - 1), as per-step params */
    void *hook_ctx;             /* on_progress's and on_eval's */
} RtTrainOptions;

/* What made meta-training stop as diverged: the first value found NaN or
 * infinite in an iteration (checked in this order, the first two before
 * the update, the last after it). */
typedef enum {
    RT_FINITE,                  /* nothing: the run did not diverge */
    RT_DIVERGED_LOSS,           /* the meta-batch's mean query loss */
    RT_DIVERGED_GRADIENT,       /* an element of the mean meta-gradient */
    RT_DIVERGED_UPDATE,         /* an updated parameter or optimiser state */
} RtDiverged;

typedef struct {
    long iterations;            /* done in all, earlier runs included */
    double seconds;             /* this run's meta-training time, evaluation excluded */
    double steps_per_second;
    double median_step_seconds; /* median wall time of one iteration (sampling, meta-gradient,
                                   exchange, update) of this run's first 2^20, the first left
                                   out as warm-up unless it is the only one; NAN if none */
    double final_meta_loss;     /* mean query loss of the last meta-batch */
    RtDiverged diverged;        /* what of iteration `iterations` + 1 was not
                                   finite (RT_FINITE: nothing); training stopped
                                   there, and the caller must not save params */
    bool stopped;               /* the exchange or a checkpoint failed (the callback
                                   says why): training stopped after `iterations` */
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

/* --- meta-gradients of a meta-batch (runtime/batch.c) ---
 * The tasks [0, B) of a meta-batch are summed along one fixed binary tree:
 * node [lo, hi) with hi - lo > 1 is the sum of its children [lo, mid) and
 * [mid, hi), mid = lo + (hi - lo) / 2; leaf [t, t + 1) is task t's gradient
 * and query loss in double.  A node's sums are one vector of nreal + 1
 * doubles (rt_node_reals): the gradient's, then the loss's.  Whoever
 * computes a part of the tree (a thread, a process), the root is the same
 * bits, because its shape depends on B alone.  Whoever owns tasks [a, b)
 * computes the maximal nodes inside [a, b) ("the nodes of [a, b)"); the
 * nodes above are then summed from the parts' nodes. */

size_t rt_node_reals(const RtProgram *p);       /* nreal + 1 */
/* The number of nodes of [a, b) in B's tree (0 when a >= b). */
int rt_tree_count(int B, int a, int b);
/* At least rt_tree_count(B, a, a + n) for every a, for ranges of n tasks. */
int rt_tree_capacity(int n);
/* Levels below a node of n tasks: ceil(log2 n). */
int rt_tree_depth(int n);

/* n * size bytes (at least 64), 64-byte aligned and zeroed, as compiled
 * code's buffers must be; NULL when the size overflows or memory is out.
 * Free with free(). */
void *rt_alloc_zeroed(size_t n, size_t size);

/* What one thread needs to compute nodes, allocated once: enough for nodes
 * of up to max_tasks tasks. */
typedef struct {
    void *arena;                /* meta_step's */
    void *task_grad;            /* 1 + rt_tree_depth(max_tasks) tasks' gradients and losses, in the element type */
    double *stack;              /* 1 + rt_tree_depth(max_tasks) node vectors */
    const void **in;
    void **out;
    RtTask drawn;               /* where tasks are sampled to (programs that sample) */
} RtStepWork;
bool rt_step_work_alloc(const RtProgram *p, int max_tasks, RtStepWork *w);
void rt_step_work_free(RtStepWork *w);

/* The mean meta-gradient of n tasks at params into grad (nreal reals), and
 * their mean query loss as the result: meta_step once per task, summed
 * along the tree of n in double precision.  w holds at least n tasks.
 * Allocates nothing. */
double rt_meta_grad(const RtProgram *p, RtStepWork *w, const void *params, int n,
                    const RtTask *tasks, void *grad);

/* A thread team: `threads` members, the caller being member 0 and the
 * others threads started by rt_team_new and ended by rt_team_free. */
typedef struct RtTeam RtTeam;
RtTeam *rt_team_new(int threads);               /* NULL when a thread cannot be had */
void rt_team_free(RtTeam *t);
int rt_team_size(const RtTeam *t);
/* fn(ctx, i) on every member i at once; returns when all have returned. */
void rt_team_run(RtTeam *t, void (*fn)(void *ctx, int member), void *ctx);

/* The most tasks of one meta-batch, and the most threads sharing them.  A
 * meta-batch's bookkeeping is a few dozen bytes a task and its data (given
 * all at once through the ABI) far more, so 2^20 tasks leave every count and
 * index of the tree well inside int; no machine has 1024 cores for one
 * meta-batch. */
#define RT_MAX_BATCH (1 << 20)
#define RT_MAX_THREADS 1024

/* Meta-gradients of meta-batches of up to max_batch tasks, shared among
 * `threads` threads (the caller included), each with its own arena and
 * buffers: everything allocated by rt_batch_new, nothing by the others.
 * NULL when max_batch is outside [1, RT_MAX_BATCH], threads is above
 * RT_MAX_THREADS (threads <= 1: the caller alone), or memory or threads
 * cannot be had. */
typedef struct RtBatch RtBatch;
RtBatch *rt_batch_new(const RtProgram *p, int max_batch, int threads);
void rt_batch_free(RtBatch *b);

/* Tasks [first, first + count) of a meta-batch of B <= max_batch. */
typedef struct {
    int B, first, count;
    const RtTask *task;         /* task[i] is task first + i (unused when sampling) */
    bool sample;                /* draw task first + i with p->sample(seed, task_base + first + i)
                                   into the drawn task of the thread computing it, just before */
    uint64_t seed, task_base;
    const void *loss_weights;   /* the meta-step's weights (p->loss_weights reals), or NULL */
    bool first_order;           /* run p->meta_step_first instead of p->meta_step */
} RtSlice;

/* The node sums of s's tasks at params: rt_tree_count(B, first, first +
 * count) vectors of rt_node_reals doubles at out, left to right. */
void rt_batch_nodes(RtBatch *b, const void *params, const RtSlice *s, double *out);
/* The mean gradient (into grad, nreal reals) and mean query loss (returned)
 * of a meta-batch of B <= max_batch tasks from the node sums of nparts
 * parts: part k holds tasks [bound[k], bound[k + 1]) (bound[0] = 0,
 * bound[nparts] = B, non-decreasing) and sums holds every part's nodes,
 * part after part. */
double rt_batch_mean(RtBatch *b, int B, int nparts, const int *bound, const double *sums,
                     void *grad);
/* The mean over the tasks of their batch statistics (p->nstat doubles) as
 * of the last rt_batch_mean. */
const double *rt_batch_stats(const RtBatch *b);
/* rt_opt_step on p->nreal parameters, its elements shared among b's threads. */
void rt_batch_opt_step(RtBatch *b, const RtOptimizer *o, void *params, const void *grad, void *state,
                       long t);

/* Meta-train params (nreal reals, initialised by the caller) in place.
 * Iteration it (0-based) trains on tasks it * meta_batch + b, b < meta_batch;
 * this process computes its share of them (all, unless nranks > 1) with
 * o->threads threads and, with nranks > 1, exchanges node sums through
 * o->gather, so every process applies the same update.  Evaluation runs
 * every eval_every iterations and at the end, one line each to log; the
 * checkpoint callback every checkpoint_every iterations.  Returns false
 * when memory or threads cannot be had, when meta_batch or o->threads is
 * outside rt_batch_new's range or a count is negative, or when a callback
 * failed (rep->stopped); rep is filled either way. */
bool rt_train(const RtProgram *p, const RtTrainOptions *o, void *params, RtReport *rep);
/* Evaluate params on o->eval_tasks held-out tasks (RT_EVAL_TASK | i, the
 * same tasks every call): points[k] gets the mean query loss (and metric)
 * after o->steps[k] inner steps, for k < o->nsteps.  Returns false when
 * memory cannot be had or a step count is negative. */
bool rt_evaluate(const RtProgram *p, const RtTrainOptions *o, const void *params,
                 RtEvalPoint *points);
/* Write rep as JSON (the `--report` format), through a temporary file
 * renamed over path, so path is either complete or untouched; `more`, if
 * not NULL, is JSON text of further members of its object ("\"k\": v, ...").
 * On failure errno says why. */
bool rt_write_report(const char *path, const RtReport *rep, const char *more);
/* points[0..n) as the JSON array of the report's "eval": objects with
 * "steps", "loss", "loss_ci95" and, where there is a metric, "metric" and
 * "metric_ci95" (null for a value that is not finite). */
void rt_put_eval_json(FILE *f, const RtEvalPoint *points, int n);

/* --- task families (runtime/family.c) ---
 * A task distribution written in the model (`task family`) and compiled:
 * per task, its variables are drawn once and then, per set, the draws of
 * the set's lines, from which the set's compiled function computes x and y. */
typedef enum { RT_DRAW_UNIFORM, RT_DRAW_NORMAL } RtDrawKind;
/* n reals, each uniform on [a, b) or normal with mean a and std b. */
typedef struct {
    RtDrawKind kind;
    double a, b;
    size_t n;
} RtDraw;
typedef struct {
    RtEntry fn;                 /* in: the variables, then draw[0..ndraw)   out: x, y */
    const RtDraw *draw;
    int ndraw;
} RtFamilySet;
typedef struct {
    RtReal real;
    const RtDraw *var;          /* the task variables */
    int nvar;
    RtFamilySet set[2];         /* support, query */
} RtFamily;

/* A source of f's tasks (f and its arrays are borrowed, and must outlive
 * it) with buffers for `callers` concurrent calls, allocated here; a call
 * beyond those waits for one to end.  NULL when memory cannot be had. */
typedef struct RtFamilySource RtFamilySource;
RtFamilySource *rt_family_new(const RtFamily *f, int callers);
void rt_family_free(RtFamilySource *s);
/* An RtSampleFn (ctx: an RtFamilySource *), safe to call from several
 * threads at once.  From rt_rng_stream(seed, task) it draws the variables
 * in order, then the support set's draws, then the query set's, each
 * element in row-major order: uniform(a, b) as rt_rng_uniform(a, b),
 * normal(a, b) as a + b * rt_rng_normal, in double, then rounded to the
 * real type (a uniform draw that rounds to b or above takes the real just
 * below); then it runs each set's function into sx, sy and qx, qy. */
void rt_family_sample(const void *ctx, uint64_t seed, uint64_t task,
                      void *sx, void *sy, void *qx, void *qy);

#endif
