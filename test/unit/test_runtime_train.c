/* Runtime tests, part 2: the meta-training loop, evaluation and the report,
 * driven by hand-written stand-ins for compiled entry points.
 *
 * The stand-in model is a quadratic with a closed-form MAML meta-gradient:
 * task c (one target per parameter), support loss Ls = sum (theta - c_s)^2,
 * one inner step theta' = theta - alpha * 2 (theta - c_s), query loss
 * Lq = sum (theta' - c_q)^2 and d Lq / d theta = 2 (theta' - c_q)(1 - 2 alpha).
 * With c_s = c_q = c the meta-optimum is theta = E[c]. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"

#include "alloc_count.h"
#include "check.h"

/* Two parameters, w (3 reals) and b (2 reals), in a flat vector of 5. */
enum { N = 5 };
static const RtParam PARAMS[] = {{"w", 0, 3, {0}}, {"b", 3, 2, {0}}};
static const double MU[N] = {1.0, -2.0, 3.0, 0.5, -1.0};

/* The stand-ins' settings and what they saw. */
static double alpha = 0.1;
static bool arena_misaligned;
static uint64_t seen_task[64];
static int nseen;
static bool record_tasks;

/* Task data: sx = qx = c (N reals), sy = qy = the task index (1 real).
 * c = MU + U(-1, 1) per coordinate for training tasks; evaluation tasks
 * (RT_EVAL_TASK set) are drawn the same way from their own index. */
static void task_targets(uint64_t seed, uint64_t task, double *c)
{
    RtRng r;
    rt_rng_stream(&r, seed, task);
    for (int i = 0; i < N; i++)
        c[i] = MU[i] + rt_rng_uniform(&r, -1.0, 1.0);
}

#define DEFINE_STANDINS(T, SUFFIX)                                                     \
    static void sample_##SUFFIX(const void *ctx, uint64_t seed, uint64_t task,         \
                                void *sx, void *sy, void *qx, void *qy)                \
    {                                                                                  \
        double c[N];                                                                   \
        (void)ctx;                                                                     \
        task_targets(seed, task, c);                                                   \
        for (int i = 0; i < N; i++)                                                    \
            ((T *)sx)[i] = ((T *)qx)[i] = (T)c[i];                                     \
        *(T *)sy = *(T *)qy = (T)(task & ~RT_EVAL_TASK);                               \
        if (record_tasks && nseen < 64)                                                \
            seen_task[nseen++] = task;                                                 \
    }                                                                                  \
    /* in: w, b, sx, sy, qx, qy   out: Lq, dLq/dw, dLq/db */                           \
    static void meta_step_##SUFFIX(const void *const *in, void *const *out, void *arena) \
    {                                                                                  \
        arena_misaligned |= ((uintptr_t)arena % 64) != 0;                              \
        T *adapted = arena;                                                            \
        const T *c_s = in[2], *c_q = in[4];                                            \
        T loss = 0;                                                                    \
        for (int i = 0; i < N; i++) {                                                  \
            T theta = i < 3 ? ((const T *)in[0])[i] : ((const T *)in[1])[i - 3];       \
            adapted[i] = theta - (T)alpha * 2 * (theta - c_s[i]);                      \
        }                                                                              \
        for (int i = 0; i < N; i++) {                                                  \
            T r = adapted[i] - c_q[i];                                                 \
            T g = 2 * r * (1 - 2 * (T)alpha);                                          \
            loss += r * r;                                                             \
            if (i < 3)                                                                 \
                ((T *)out[1])[i] = g;                                                  \
            else                                                                       \
                ((T *)out[2])[i - 3] = g;                                              \
        }                                                                              \
        *(T *)out[0] = loss;                                                           \
    }                                                                                  \
    /* in: w, b, x, y   out: w', b', Ls */                                             \
    static void adapt_##SUFFIX(const void *const *in, void *const *out, void *arena)   \
    {                                                                                  \
        const T *c = in[2];                                                            \
        T loss = 0;                                                                    \
        (void)arena;                                                                   \
        for (int i = 0; i < N; i++) {                                                  \
            T theta = i < 3 ? ((const T *)in[0])[i] : ((const T *)in[1])[i - 3];       \
            T next = theta - (T)alpha * 2 * (theta - c[i]);                            \
            loss += (theta - c[i]) * (theta - c[i]);                                   \
            if (i < 3)                                                                 \
                ((T *)out[0])[i] = next;                                               \
            else                                                                       \
                ((T *)out[1])[i - 3] = next;                                           \
        }                                                                              \
        *(T *)out[2] = loss;                                                           \
    }                                                                                  \
    /* in: w, b, x, y   out: sum (theta - c)^2 */                                      \
    static void loss_##SUFFIX(const void *const *in, void *const *out, void *arena)    \
    {                                                                                  \
        const T *c = in[2];                                                            \
        T loss = 0;                                                                    \
        (void)arena;                                                                   \
        for (int i = 0; i < N; i++) {                                                  \
            T theta = i < 3 ? ((const T *)in[0])[i] : ((const T *)in[1])[i - 3];       \
            loss += (theta - c[i]) * (theta - c[i]);                                   \
        }                                                                              \
        *(T *)out[0] = loss;                                                           \
    }                                                                                  \
    /* in: w, b, x, y   out: max |theta - c| */                                        \
    static void metric_##SUFFIX(const void *const *in, void *const *out, void *arena)  \
    {                                                                                  \
        const T *c = in[2];                                                            \
        T worst = 0;                                                                   \
        (void)arena;                                                                   \
        for (int i = 0; i < N; i++) {                                                  \
            T theta = i < 3 ? ((const T *)in[0])[i] : ((const T *)in[1])[i - 3];       \
            T e = theta > c[i] ? theta - c[i] : c[i] - theta;                          \
            if (e > worst)                                                             \
                worst = e;                                                             \
        }                                                                              \
        *(T *)out[0] = worst;                                                          \
    }

DEFINE_STANDINS(double, f64)
DEFINE_STANDINS(float, f32)

/* The meta-step with one gradient element overflowed to +infinity (the
 * query loss stays finite): what a divergence check must stop at. */
static void meta_step_inf_f64(const void *const *in, void *const *out, void *arena)
{
    meta_step_f64(in, out, arena);
    ((double *)out[2])[1] = INFINITY;
}

static void meta_step_inf_f32(const void *const *in, void *const *out, void *arena)
{
    meta_step_f32(in, out, arena);
    ((float *)out[2])[1] = INFINITY;
}

static RtProgram program(RtReal real)
{
    bool f32 = real == RT_F32;
    size_t rb = rt_real_bytes(real);
    return (RtProgram){
        .real = real, .nreal = N, .param = PARAMS, .nparam = 2,
        .sx_bytes = N * rb, .sy_bytes = rb, .qx_bytes = N * rb, .qy_bytes = rb,
        .meta_step = {f32 ? meta_step_f32 : meta_step_f64, N * rb},
        .adapt_step = {f32 ? adapt_f32 : adapt_f64, 0},
        .loss = {f32 ? loss_f32 : loss_f64, 0},
        .metric = {f32 ? metric_f32 : metric_f64, 0},
        .sample = f32 ? sample_f32 : sample_f64,
        .meta_batch = 25,
        .optimizer = {.kind = RT_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
    };
}

static const int STEPS[] = {0, 1, 10};

static RtTrainOptions options(void)
{
    return (RtTrainOptions){
        .iterations = 2000, .seed = 7, .eval_tasks = 200, .nsteps = 3, .steps = STEPS,
    };
}

/* ------------------------------------------------------------------------
 * Training */

static void test_train_converges(RtReal real)
{
    RtProgram p = program(real);
    RtTrainOptions o = options();
    double theta[N] = {0};
    float theta32[N] = {0};
    void *params = real == RT_F32 ? (void *)theta32 : (void *)theta;
    RtReport rep;
    arena_misaligned = false;
    EXPECT(rt_train(&p, &o, params, &rep));
    EXPECT(!arena_misaligned);
    for (int i = 0; i < N; i++) {
        double t = real == RT_F32 ? theta32[i] : theta[i];
        CHECK_NEAR(t, MU[i], 0.1);
    }
    /* At the optimum: E[Lq] = (1 - 2 alpha)^2 * N * Var U(-1, 1) = 1.0667;
     * one meta-batch of 25 has a standard deviation of about 0.09. */
    double optimum = (1 - 2 * alpha) * (1 - 2 * alpha) * N / 3.0;
    CHECK_NEAR(rep.final_meta_loss, optimum, 0.4);
    EXPECT(rep.iterations == 2000);
    EXPECT(rep.seconds > 0.0 && rep.steps_per_second > 0.0);
    CHECK_NEAR(rep.steps_per_second * rep.seconds, 2000.0, 1e-6);
    /* Evaluation over 200 tasks: before adaptation the loss is about
     * N * Var = 5/3 (se ~0.05); every step scales it by (1 - 2 alpha)^2. */
    EXPECT(rep.neval == 3);
    EXPECT(rep.eval[0].steps == 0 && rep.eval[1].steps == 1 && rep.eval[2].steps == 10);
    CHECK_NEAR(rep.eval[0].loss, N / 3.0, 0.3);
    CHECK_NEAR(rep.eval[1].loss / rep.eval[0].loss, 0.64, real == RT_F32 ? 1e-5 : 1e-12);
    CHECK_NEAR(rep.eval[2].loss / rep.eval[0].loss, pow(0.64, 10), real == RT_F32 ? 1e-6 : 1e-12);
    EXPECT(rep.eval[0].has_metric && rep.eval[2].metric < rep.eval[0].metric);
}

static void test_train_reproducible(RtReal real)
{
    RtProgram p = program(real);
    RtTrainOptions o = options();
    o.iterations = 300;
    o.eval_every = 100;
    double a[N] = {0}, b[N] = {0};     /* room for N reals of either type */
    RtReport ra, rb;
    EXPECT(rt_train(&p, &o, a, &ra));
    EXPECT(rt_train(&p, &o, b, &rb));
    EXPECT(memcmp(a, b, sizeof a) == 0);
    EXPECT(memcmp(&ra.final_meta_loss, &rb.final_meta_loss, sizeof(double)) == 0);
    EXPECT(memcmp(ra.eval, rb.eval, sizeof ra.eval) == 0);

    /* Another seed trains on other tasks. */
    o.seed = 8;
    EXPECT(rt_train(&p, &o, b, &rb));
    EXPECT(memcmp(a, b, sizeof a) != 0);
}

/* --- threads and processes --- */

/* Processes stood in for by threads: the gather copies each rank's vectors
 * into a shared buffer between two barriers. */
enum { MAX_RANKS = 4 };
typedef struct {
    pthread_barrier_t barrier;
    double stage[64 * (N + 1)];
} Exchange;

typedef struct {
    Exchange *x;
    int rank, nranks, threads;
    RtReal real;
    double params[N];           /* room for N reals of either type */
    RtReport rep;
    bool ok;
} Rank;

static bool gather_in_process(void *ctx, const double *send, int nsend, double *recv, const int *counts,
                              const int *displs, size_t unit)
{
    Rank *r = ctx;
    Exchange *x = r->x;
    memcpy(x->stage + (size_t)displs[r->rank] * unit, send, (size_t)nsend * unit * sizeof(double));
    pthread_barrier_wait(&x->barrier);
    int total = displs[r->nranks - 1] + counts[r->nranks - 1];
    memcpy(recv, x->stage, (size_t)total * unit * sizeof(double));
    pthread_barrier_wait(&x->barrier);
    return true;
}

static void *rank_main(void *arg)
{
    Rank *r = arg;
    RtProgram p = program(r->real);
    RtTrainOptions o = options();
    o.iterations = 40;
    o.eval_tasks = r->rank == 0 ? 20 : 0;
    o.threads = r->threads;
    o.rank = r->rank;
    o.nranks = r->nranks;
    o.gather = gather_in_process;
    o.gather_ctx = r;
    memset(r->params, 0, sizeof r->params);
    r->ok = rt_train(&p, &o, r->params, &r->rep);
    return NULL;
}

/* One run of nranks stand-in processes with `threads` threads each; rank
 * 0's parameters and report into params and rep. */
static bool run_ranks(RtReal real, int nranks, int threads, double *params, RtReport *rep)
{
    Exchange x;
    Rank r[MAX_RANKS];
    pthread_t id[MAX_RANKS];
    pthread_barrier_init(&x.barrier, NULL, (unsigned)nranks);
    for (int k = 0; k < nranks; k++) {
        r[k] = (Rank){.x = &x, .rank = k, .nranks = nranks, .threads = threads, .real = real};
        pthread_create(&id[k], NULL, rank_main, &r[k]);
    }
    bool ok = true, same = true;
    for (int k = 0; k < nranks; k++) {
        pthread_join(id[k], NULL);
        ok &= r[k].ok;
        same &= memcmp(r[k].params, r[0].params, sizeof r[0].params) == 0;
    }
    pthread_barrier_destroy(&x.barrier);
    memcpy(params, r[0].params, sizeof r[0].params);
    *rep = r[0].rep;
    return ok && same;
}

/* Any number of threads and processes trains the same bits, with a
 * meta-batch (25) that none of them divides evenly. */
static void test_train_parallel(RtReal real)
{
    double want[N], got[N];
    RtReport first, rep;
    EXPECT(run_ranks(real, 1, 1, want, &first));
    EXPECT(first.neval == 3 && first.median_step_seconds > 0 && first.median_step_seconds <= first.seconds);
    bool same = true;
    for (int nranks = 1; nranks <= MAX_RANKS; nranks++)
        for (int threads = 1; threads <= 3; threads++) {
            bool ok = run_ranks(real, nranks, threads, got, &rep);
            CHECK(ok, "%d ranks, %d threads: every rank trains, to the same parameters", nranks, threads);
            same &= memcmp(got, want, sizeof want) == 0 &&
                    memcmp(&rep.final_meta_loss, &first.final_meta_loss, sizeof(double)) == 0 &&
                    memcmp(rep.eval, first.eval, sizeof rep.eval) == 0;
        }
    CHECK(same, "%s: 1-4 ranks with 1-3 threads each give the bits of one", real == RT_F32 ? "f32" : "f64");
}

/* --- no allocation inside a meta-step --- */

/* Heap allocations of one rt_train run of `iterations`. */
static long train_allocations(long iterations, int threads)
{
    RtProgram p = program(RT_F32);
    RtTrainOptions o = options();
    o.iterations = iterations;
    o.eval_tasks = 0;
    o.threads = threads;
    float theta[N] = {0};
    RtReport rep;
    long before = alloc_count();
    bool ok = rt_train(&p, &o, theta, &rep);
    long n = alloc_count() - before;
    return ok ? n : -1;
}

/* rt_train allocates as much for 3 iterations as for 300: nothing per
 * iteration, with or without threads. */
static void test_train_allocations(void)
{
    alloc_count_start();
    for (int threads = 1; threads <= 2; threads++) {
        long few = train_allocations(3, threads), many = train_allocations(300, threads);
        CHECK(few > 0 && few == many, "%d thread(s): %ld allocations for 3 iterations, %ld for 300", threads,
              few, many);
    }
}

/* --- checkpoints --- */

typedef struct {
    long at[16];
    int n;
    long fail_at;
} Saves;

static bool save_stub(void *ctx, long done, const void *params, const void *opt_state)
{
    Saves *s = ctx;
    if (s->n < 16)
        s->at[s->n++] = done;
    return done != s->fail_at;
}

/* Every checkpoint_every iterations but not after the last (the caller
 * saves then); a failed one stops training. */
static void test_train_checkpoints(void)
{
    RtProgram p = program(RT_F64);
    RtTrainOptions o = options();
    o.eval_tasks = 0;
    o.iterations = 25;
    o.start = 3;
    o.checkpoint_every = 5;
    Saves s = {.fail_at = -1};
    o.checkpoint = save_stub;
    o.checkpoint_ctx = &s;
    double theta[N] = {0};
    RtReport rep;
    EXPECT(rt_train(&p, &o, theta, &rep) && rep.iterations == 25 && !rep.stopped);
    EXPECT(s.n == 4 && s.at[0] == 5 && s.at[1] == 10 && s.at[3] == 20);
    s = (Saves){.fail_at = 10};
    EXPECT(!rt_train(&p, &o, theta, &rep) && rep.stopped && rep.iterations == 10 && s.n == 2);
}

/* The loop samples task it * meta_batch + b in order, and evaluation uses
 * RT_EVAL_TASK | i. */
static void test_train_tasks(void)
{
    RtProgram p = program(RT_F64);
    p.meta_batch = 4;
    RtTrainOptions o = options();
    o.iterations = 3;
    o.eval_tasks = 2;
    double theta[N] = {0};
    RtReport rep;
    nseen = 0;
    record_tasks = true;
    EXPECT(rt_train(&p, &o, theta, &rep));
    record_tasks = false;
    EXPECT(nseen == 14);
    int ok = nseen == 14;
    for (int i = 0; i < 12 && ok; i++)
        ok &= seen_task[i] == (uint64_t)i;
    EXPECT(ok);
    EXPECT(seen_task[12] == (RT_EVAL_TASK | 0) && seen_task[13] == (RT_EVAL_TASK | 1));

    /* Buffers too large to have: refused before anything runs. */
    p.nreal = SIZE_MAX / 4;
    nseen = 0;
    record_tasks = true;
    EXPECT(!rt_train(&p, &o, theta, &rep) && rep.iterations == 0);
    EXPECT(!rt_evaluate(&p, &o, theta, rep.eval));
    record_tasks = false;
    EXPECT(nseen == 0);
    p.nreal = N;

    /* Malformed programs are refused. */
    p.meta_batch = 0;
    EXPECT(!rt_train(&p, &o, theta, &rep));
    p.meta_batch = 1;
    int bad_steps[] = {0, -1};
    o.steps = bad_steps;
    o.nsteps = 2;
    EXPECT(!rt_train(&p, &o, theta, &rep));
}

/* One step of SGD on a batch of two tasks, checked against the formula. */
static void test_train_one_step(void)
{
    RtProgram p = program(RT_F64);
    p.meta_batch = 2;
    p.optimizer = (RtOptimizer){.kind = RT_SGD, .lr = 0.5};
    RtTrainOptions o = options();
    o.iterations = 1;
    o.eval_tasks = 0;
    double theta[N] = {0.25, 0.5, -0.5, 1.0, 2.0}, want[N];
    double c0[N], c1[N], loss = 0;
    task_targets(o.seed, 0, c0);
    task_targets(o.seed, 1, c1);
    for (int i = 0; i < N; i++) {
        double r0 = theta[i] - 2 * alpha * (theta[i] - c0[i]) - c0[i];
        double r1 = theta[i] - 2 * alpha * (theta[i] - c1[i]) - c1[i];
        double g = (2 * r0 * (1 - 2 * alpha) + 2 * r1 * (1 - 2 * alpha)) / 2;
        want[i] = theta[i] - 0.5 * g;
        loss += (r0 * r0 + r1 * r1) / 2;
    }
    RtReport rep;
    EXPECT(rt_train(&p, &o, theta, &rep));
    for (int i = 0; i < N; i++)
        CHECK_NEAR(theta[i], want[i], 1e-14);
    CHECK_NEAR(rep.final_meta_loss, loss, 1e-13);
    EXPECT(rep.neval == 0);

    /* Zero iterations: nothing changes and there is no meta-loss. */
    double before[N];
    memcpy(before, theta, sizeof theta);
    o.iterations = 0;
    EXPECT(rt_train(&p, &o, theta, &rep));
    EXPECT(memcmp(before, theta, sizeof theta) == 0 && isnan(rep.final_meta_loss));
}

/* An infinite element of the meta-gradient, not NaN, with a finite
 * meta-loss, stops training before the first update, with SGD (whose
 * update would turn it into an infinite parameter rather than a NaN) and
 * Adam, in f64 and f32. */
static void test_train_infinite_gradient(RtReal real)
{
    for (int adam = 0; adam < 2; adam++) {
        RtProgram p = program(real);
        p.meta_step.fn = real == RT_F32 ? meta_step_inf_f32 : meta_step_inf_f64;
        if (!adam)
            p.optimizer = (RtOptimizer){.kind = RT_SGD, .lr = 0.5};
        RtTrainOptions o = options();
        o.iterations = 3;
        o.eval_tasks = 0;
        double d[N] = {0.25, 0.5, -0.5, 1.0, 2.0}, d0[N];
        float f[N], f0[N];
        for (int i = 0; i < N; i++)
            f[i] = (float)d[i];
        memcpy(d0, d, sizeof d);
        memcpy(f0, f, sizeof f);
        void *theta = real == RT_F32 ? (void *)f : (void *)d;
        RtReport rep;
        EXPECT(rt_train(&p, &o, theta, &rep));
        EXPECT(rep.diverged == RT_DIVERGED_GRADIENT && rep.iterations == 0 && isfinite(rep.final_meta_loss));
        EXPECT(memcmp(d, d0, sizeof d) == 0 && memcmp(f, f0, sizeof f) == 0);
    }
}

static int count_lines(FILE *f, const char *prefix, char *all, size_t size)
{
    char line[512];
    int n = 0;
    all[0] = '\0';
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        n += strncmp(line, prefix, strlen(prefix)) == 0;
        if (strlen(all) + strlen(line) < size)
            strcat(all, line);
    }
    return n;
}

static void test_train_log(void)
{
    RtProgram p = program(RT_F64);
    RtTrainOptions o = options();
    o.iterations = 10;
    o.eval_every = 4;
    o.eval_tasks = 3;
    FILE *log = tmpfile();
    EXPECT(log != NULL);
    if (!log)
        return;
    o.log = log;
    double theta[N] = {0};
    RtReport rep;
    char text[4096];
    EXPECT(rt_train(&p, &o, theta, &rep));
    EXPECT(count_lines(log, "eval @ ", text, sizeof text) == 3);
    EXPECT(strstr(text, "eval @ 4: steps 0 loss ") != NULL);
    EXPECT(strstr(text, "eval @ 8: ") != NULL && strstr(text, "eval @ 10: ") != NULL);
    EXPECT(strstr(text, " | steps 1 loss ") && strstr(text, " | steps 10 loss ") &&
          strstr(text, " metric "));

    /* The last iteration's evaluation is the final one, not a second one. */
    fclose(log);
    log = tmpfile();
    o.log = log;
    o.iterations = 8;
    EXPECT(log && rt_train(&p, &o, theta, &rep));
    EXPECT(log && count_lines(log, "eval @ ", text, sizeof text) == 2);
    fclose(log);
}

/* With progress on and stderr not a terminal, the loop writes plain lines,
 * the last with the time taken. */
static void test_train_progress(void)
{
    RtProgram p = program(RT_F64);
    RtTrainOptions o = options();
    o.iterations = 50;
    o.progress = true;
    FILE *capture = tmpfile();
    EXPECT(capture != NULL);
    if (!capture)
        return;
    fflush(stderr);
    int saved = dup(fileno(stderr));
    dup2(fileno(capture), fileno(stderr));
    double theta[N] = {0};
    RtReport rep;
    bool ok = rt_train(&p, &o, theta, &rep);
    fflush(stderr);
    dup2(saved, fileno(stderr));
    close(saved);
    EXPECT(ok);
    char text[4096];
    EXPECT(count_lines(capture, "iter ", text, sizeof text) >= 1);
    EXPECT(strstr(text, "iter 50/50 | meta-loss ") != NULL);
    EXPECT(strstr(text, " steps/s | took ") != NULL);
    EXPECT(strchr(text, '\r') == NULL);
    fclose(capture);
}

/* ------------------------------------------------------------------------
 * Evaluation with known numbers */

/* Every task has c = 2 everywhere; with theta = 0 and alpha = 1/4 each step
 * halves theta - c, so after s steps loss = 5 * 4 / 4^s and metric = 2 / 2^s,
 * all exact in binary. */
static void sample_twos(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy,
                        void *qx, void *qy)
{
    (void)ctx, (void)seed, (void)task;
    for (int i = 0; i < N; i++)
        ((double *)sx)[i] = ((double *)qx)[i] = 2.0;
    *(double *)sy = *(double *)qy = 0.0;
}

static void test_evaluate_exact(void)
{
    RtProgram p = program(RT_F64);
    p.sample = sample_twos;
    alpha = 0.25;
    int steps[] = {10, 0, 1, 3};        /* any order */
    RtTrainOptions o = options();
    o.eval_tasks = 5;
    o.steps = steps;
    o.nsteps = 4;
    double theta[N] = {0}, copy[N] = {0};
    RtEvalPoint pt[4];
    EXPECT(rt_evaluate(&p, &o, theta, pt));
    EXPECT(memcmp(theta, copy, sizeof theta) == 0);
    for (int k = 0; k < 4; k++) {
        EXPECT(pt[k].steps == steps[k] && pt[k].has_metric);
        EXPECT(pt[k].loss == 20.0 / pow(4.0, steps[k]));
        EXPECT(pt[k].metric == 2.0 / pow(2.0, steps[k]));
        EXPECT(pt[k].loss_ci == 0.0 && pt[k].metric_ci == 0.0);   /* identical tasks */
    }
    /* Without a metric entry, no metric. */
    p.metric.fn = NULL;
    EXPECT(rt_evaluate(&p, &o, theta, pt));
    EXPECT(!pt[0].has_metric && pt[2].loss == 5.0);
    alpha = 0.1;
}

/* Held-out task i has every value 1 + 2 (i % 2): 1, 3, 1, 3. */
static void sample_alternating(const void *ctx, uint64_t seed, uint64_t task, void *sx,
                               void *sy, void *qx, void *qy)
{
    (void)ctx, (void)seed;
    for (int i = 0; i < N; i++)
        ((double *)sx)[i] = ((double *)qx)[i] = 1.0 + 2.0 * (double)(task & 1);
    *(double *)sy = *(double *)qy = 0.0;
}

/* The 95% interval is 1.96 sample standard deviations over sqrt(tasks);
 * one task has none. */
static void test_evaluate_confidence(void)
{
    RtProgram p = program(RT_F64);
    p.sample = sample_alternating;
    int steps[] = {0};
    RtTrainOptions o = options();
    o.eval_tasks = 4;
    o.steps = steps;
    o.nsteps = 1;
    double theta[N] = {0};
    RtEvalPoint pt;
    EXPECT(rt_evaluate(&p, &o, theta, &pt));
    /* metric max|theta - x| = 1, 3, 1, 3; loss N x^2 = N, 9N, N, 9N */
    CHECK_NEAR(pt.metric, 2.0, 1e-15);
    CHECK_NEAR(pt.metric_ci, 1.96 * sqrt(4.0 / 3.0) / 2.0, 1e-15);
    CHECK_NEAR(pt.loss, 5.0 * N, 1e-13);
    CHECK_NEAR(pt.loss_ci, 1.96 * sqrt(4.0 * 4.0 * N * 4.0 * N / 3.0) / 2.0, 1e-12);
    o.eval_tasks = 1;
    EXPECT(rt_evaluate(&p, &o, theta, &pt));
    EXPECT(pt.metric == 1.0 && isnan(pt.metric_ci) && isnan(pt.loss_ci));
}

/* Random held-out tasks: the mean over tasks of the closed form
 * (1 - 2 alpha)^(2s) * sum (theta - c)^2, the same at every call. */
static void test_evaluate_tasks(void)
{
    RtProgram p = program(RT_F64);
    RtTrainOptions o = options();
    o.eval_tasks = 7;
    double theta[N] = {0.5, 0.0, 1.0, -1.0, 0.25};
    double want[3] = {0};
    for (int t = 0; t < 7; t++) {
        double c[N];
        task_targets(o.seed, RT_EVAL_TASK | (uint64_t)t, c);
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < N; i++)
                want[k] += pow(1 - 2 * alpha, 2 * STEPS[k]) * (theta[i] - c[i]) * (theta[i] - c[i]) / 7;
    }
    RtEvalPoint a[3], b[3];
    EXPECT(rt_evaluate(&p, &o, theta, a));
    EXPECT(rt_evaluate(&p, &o, theta, b));
    EXPECT(memcmp(a, b, sizeof a) == 0);
    for (int k = 0; k < 3; k++)
        CHECK_NEAR(a[k].loss, want[k], 1e-12 * want[k]);

    /* f32 agrees to float precision. */
    RtProgram p32 = program(RT_F32);
    float theta32[N];
    for (int i = 0; i < N; i++)
        theta32[i] = (float)theta[i];
    EXPECT(rt_evaluate(&p32, &o, theta32, b));
    for (int k = 0; k < 3; k++)
        CHECK_NEAR(b[k].loss, want[k], 1e-5 * want[k]);

    /* No held-out tasks: NaN means; a negative step count is refused. */
    o.eval_tasks = 0;
    EXPECT(rt_evaluate(&p, &o, theta, a) && isnan(a[0].loss));
    o.eval_tasks = 1;
    int bad[] = {-2};
    o.steps = bad;
    o.nsteps = 1;
    EXPECT(!rt_evaluate(&p, &o, theta, a));
}

/* ------------------------------------------------------------------------
 * Report */

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_report(void)
{
    char dir[] = "/tmp/mamlc-rt-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/report.json", dir);

    RtReport rep = {
        .iterations = 70000, .seconds = 12.5, .steps_per_second = 5600,
        .median_step_seconds = 0.000125, .final_meta_loss = 0.1, .neval = 3,
        .eval = {{0, 4.0, 0.5, 1.0, 0.125, true}, {1, NAN, 0.0, 0.0, 0.0, false},
                 {10, 0.25, INFINITY, 1.0, NAN, true}},
    };
    EXPECT(rt_write_report(path, &rep, NULL));
    const char *want =
        "{\"iterations\": 70000, \"seconds\": 12.5, \"steps_per_second\": 5600, "
        "\"median_step_seconds\": 0.000125, \"final_meta_loss\": 0.10000000000000001, "
        "\"eval\": [{\"steps\": 0, \"loss\": 4, "
        "\"loss_ci95\": 1, \"metric\": 0.5, \"metric_ci95\": 0.125}, {\"steps\": 1, \"loss\": null, "
        "\"loss_ci95\": 0}, {\"steps\": 10, \"loss\": 0.25, \"loss_ci95\": 1, \"metric\": null, "
        "\"metric_ci95\": null}]}\n";
    const char *got = read_all(path);
    EXPECT(got && strcmp(got, want) == 0);
    if (got && strcmp(got, want) != 0)
        fprintf(stderr, "got:  %swant: %s", got, want);
    EXPECT(count_entries(dir) == 1);

    /* Rewriting replaces the file whole; an empty evaluation is []; the
     * caller's members follow. */
    rep = (RtReport){.iterations = 0, .final_meta_loss = NAN, .median_step_seconds = NAN};
    EXPECT(rt_write_report(path, &rep, "\"history\": []"));
    got = read_all(path);
    EXPECT(got && strcmp(got, "{\"iterations\": 0, \"seconds\": 0, \"steps_per_second\": 0, "
                             "\"median_step_seconds\": null, \"final_meta_loss\": null, \"eval\": [], "
                             "\"history\": []}\n") == 0);
    EXPECT(count_entries(dir) == 1);

    /* A directory that does not exist: failure, and nothing left behind. */
    char bad[160];
    snprintf(bad, sizeof bad, "%s/missing/report.json", dir);
    errno = 0;
    EXPECT(!rt_write_report(bad, &rep, NULL) && errno == ENOENT);
    EXPECT(count_entries(dir) == 1);

    /* The target is a directory: rename fails and the temporary goes. */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    EXPECT(mkdir(sub, 0700) == 0);
    errno = 0;
    EXPECT(!rt_write_report(sub, &rep, NULL) && errno == EISDIR);
    EXPECT(count_entries(dir) == 2);

    rmdir(sub);
    unlink(path);
    EXPECT(rmdir(dir) == 0);
}

int main(void)
{
    test_train_converges(RT_F64);
    test_train_converges(RT_F32);
    test_train_reproducible(RT_F64);
    test_train_reproducible(RT_F32);
    test_train_parallel(RT_F64);
    test_train_parallel(RT_F32);
    test_train_checkpoints();
    test_train_allocations();
    test_train_tasks();
    test_train_one_step();
    test_train_infinite_gradient(RT_F64);
    test_train_infinite_gradient(RT_F32);
    test_train_log();
    test_train_progress();
    test_evaluate_exact();
    test_evaluate_confidence();
    test_evaluate_tasks();
    test_report();
    return check_summary();
}
