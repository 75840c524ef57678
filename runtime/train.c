/* The meta-training loop, held-out evaluation and the JSON report.
 *
 * rt_train allocates every buffer (and starts every thread) before its
 * first iteration; an iteration only samples tasks into those buffers, calls
 * the compiled meta-step once per task, sums the task gradients along the
 * meta-batch's fixed tree (runtime/batch.c: so a run is the same bits for
 * any number of threads and processes), and applies the outer optimiser. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

enum {
    LOSS_WINDOW = 100,          /* iterations in the progress line's running mean */
    MAX_TIMED = 1 << 20,        /* iterations whose times the median is taken over */
};

static const double TTY_PERIOD = 0.1;   /* seconds between redraws on a terminal */
static const double LOG_PERIOD = 2.0;   /* seconds between lines otherwise */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a * b, or SIZE_MAX when that overflows (which no allocation satisfies). */
static size_t mul_size(size_t a, size_t b)
{
    return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

/* One real of scalar output (a loss), with room for either element type. */
typedef union {
    float f;
    double d;
} Scalar;

static double scalar_value(RtReal real, const Scalar *s)
{
    return real == RT_F32 ? (double)s->f : s->d;
}

/* slot[0..nparam) <- the parameters' places in the flat vector at base,
 * as inputs (point_in) or outputs (point_out). */
static void point_in(const RtProgram *p, const void *base, const void **slot)
{
    size_t rb = rt_real_bytes(p->real);
    for (int i = 0; i < p->nparam; i++)
        slot[i] = (const char *)base + p->param[i].offset * rb;
}

static void point_out(const RtProgram *p, void *base, void **slot)
{
    size_t rb = rt_real_bytes(p->real);
    for (int i = 0; i < p->nparam; i++)
        slot[i] = (char *)base + p->param[i].offset * rb;
}

/* The per-step params' slots of slot[0..nparam) <- their copy `copy` in
 * the flat vector at base. */
static void point_copies(const RtProgram *p, const void *base, const void **slot, int copy)
{
    size_t rb = rt_real_bytes(p->real);
    for (int i = 0; p->step_copy && copy > 0 && i < p->nparam; i++)
        if (p->step_copy[i] >= 0)
            slot[i] = (const char *)base + p->param[p->step_copy[i] + copy - 1].offset * rb;
}

/* ------------------------------------------------------------------------
 * Evaluation */

typedef struct {
    void *cur, *next;           /* flat parameter vectors, swapped every step */
    void *sx, *sy, *qx, *qy;
    void *arena;                /* large enough for adapt_step, loss and metric */
    const void **in;
    void **out;
    int copy;                   /* of the per-step params, for this step */
    const void *running;        /* the running statistics of that copy; NULL: batch statistics */
} EvalBuffers;

static void eval_free(EvalBuffers *b)
{
    free(b->cur);
    free(b->next);
    free(b->sx);
    free(b->sy);
    free(b->qx);
    free(b->qy);
    free(b->arena);
    free(b->in);
    free(b->out);
}

static bool eval_alloc(const RtProgram *p, EvalBuffers *b)
{
    size_t arena = p->adapt_step.arena_bytes;
    if (p->loss.arena_bytes > arena)
        arena = p->loss.arena_bytes;
    if (p->metric.fn && p->metric.arena_bytes > arena)
        arena = p->metric.arena_bytes;
    const RtEntry *running[] = {&p->adapt_running, &p->loss_running, &p->metric_running};
    for (int i = 0; p->nstat && i < 3; i++)
        arena = running[i]->arena_bytes > arena ? running[i]->arena_bytes : arena;
    *b = (EvalBuffers){
        .cur = rt_alloc_zeroed(p->nreal, rt_real_bytes(p->real)),
        .next = rt_alloc_zeroed(p->nreal, rt_real_bytes(p->real)),
        .sx = rt_alloc_zeroed(p->sx_bytes, 1),
        .sy = rt_alloc_zeroed(p->sy_bytes, 1),
        .qx = rt_alloc_zeroed(p->qx_bytes, 1),
        .qy = rt_alloc_zeroed(p->qy_bytes, 1),
        .arena = rt_alloc_zeroed(arena, 1),
        .in = calloc((size_t)p->nparam + 3, sizeof(void *)),
        .out = calloc((size_t)p->nparam + 1, sizeof(void *)),
    };
    if (b->cur && b->next && b->sx && b->sy && b->qx && b->qy && b->arena && b->in && b->out)
        return true;
    eval_free(b);
    return false;
}

/* in[nparam..] <- the inference forms' running statistics (if b has
 * them), then x and y; returns the entry that takes them: e, or running. */
static const RtEntry *point_data(const RtProgram *p, EvalBuffers *b, const RtEntry *e, const RtEntry *running,
                                 const void *x, const void *y)
{
    int at = p->nparam;
    if (b->running)
        b->in[at++] = b->running;
    b->in[at] = x;
    b->in[at + 1] = y;
    return b->running ? running : e;
}

/* Runs entry e (loss or metric; running: its inference form) on the
 * parameters in b->cur and the query set. */
static double query_value(const RtProgram *p, const RtEntry *e, const RtEntry *running, EvalBuffers *b)
{
    Scalar value = {0};
    point_in(p, b->cur, b->in);
    point_copies(p, b->cur, b->in, b->copy);
    e = point_data(p, b, e, running, b->qx, b->qy);
    b->out[0] = &value;
    e->fn(b->in, b->out, b->arena);
    return scalar_value(p->real, &value);
}

/* One inner step on the support set: b->cur <- adapt(b->cur). */
static void adapt(const RtProgram *p, EvalBuffers *b)
{
    Scalar support_loss;
    point_in(p, b->cur, b->in);
    point_copies(p, b->cur, b->in, b->copy);
    const RtEntry *e = point_data(p, b, &p->adapt_step, &p->adapt_running, b->sx, b->sy);
    point_out(p, b->next, b->out);
    point_copies(p, b->next, (const void **)b->out, b->copy);  /* the copy, unchanged, onto itself */
    b->out[p->nparam] = &support_loss;
    e->fn(b->in, b->out, b->arena);
    void *t = b->cur;
    b->cur = b->next;
    b->next = t;
}

/* From the sum and the sum of squares of n per-task values, their mean and
 * the half-width of its normal 95% confidence interval, 1.96 s / sqrt(n)
 * with s the sample standard deviation. */
static void mean_and_ci(int n, double *sum_to_mean, double *sumsq_to_ci)
{
    double mean = *sum_to_mean / n;
    double var = n > 1 ? (*sumsq_to_ci - n * mean * mean) / (n - 1) : NAN;
    *sum_to_mean = mean;
    *sumsq_to_ci = 1.96 * sqrt(var > 0.0 ? var : 0.0) / sqrt((double)n);
    if (n < 2)
        *sumsq_to_ci = NAN;
}

bool rt_evaluate(const RtProgram *p, const RtTrainOptions *o, const void *params,
                 RtEvalPoint *points)
{
    int max_steps = 0;
    for (int k = 0; k < o->nsteps; k++) {
        if (o->steps[k] < 0)
            return false;
        if (o->steps[k] > max_steps)
            max_steps = o->steps[k];
        points[k] = (RtEvalPoint){
            .steps = o->steps[k], .has_metric = p->metric.fn != NULL,
        };
    }
    if (o->nsteps <= 0)
        return true;
    if (o->eval_tasks <= 0) {
        for (int k = 0; k < o->nsteps; k++)
            points[k].loss = points[k].metric = points[k].loss_ci = points[k].metric_ci = NAN;
        return true;
    }
    EvalBuffers b;
    if (!eval_alloc(p, &b))
        return false;
    size_t pbytes = p->nreal * rt_real_bytes(p->real);
    int last = p->step_copies > 0 ? p->step_copies - 1 : 0;     /* the last copy of per-step params */
    size_t per_step = p->nstat / (size_t)(last + 1);            /* running statistics of one copy */
    for (int task = 0; task < o->eval_tasks; task++) {
        p->sample(p->sample_ctx, o->seed, RT_EVAL_TASK | (uint64_t)task, b.sx, b.sy, b.qx, b.qy);
        /* Both vectors start as params, so reals outside every parameter
         * (which adapt_step never writes) keep their values. */
        memcpy(b.cur, params, pbytes);
        memcpy(b.next, params, pbytes);
        for (int step = 0; step <= max_steps; step++) {
            b.copy = step < 1 ? 0 : step - 1 < last ? step - 1 : last;
            if (o->eval_running && p->nstat)    /* the running statistics of the step's copy */
                b.running = (const char *)params + (p->nreal + (size_t)b.copy * per_step) * rt_real_bytes(p->real);
            if (step > 0)
                adapt(p, &b);
            for (int k = 0; k < o->nsteps; k++) {
                if (o->steps[k] != step)
                    continue;
                double loss = query_value(p, &p->loss, &p->loss_running, &b);
                points[k].loss += loss;
                points[k].loss_ci += loss * loss;
                if (p->metric.fn) {
                    double metric = query_value(p, &p->metric, &p->metric_running, &b);
                    points[k].metric += metric;
                    points[k].metric_ci += metric * metric;
                }
            }
        }
    }
    for (int k = 0; k < o->nsteps; k++) {
        mean_and_ci(o->eval_tasks, &points[k].loss, &points[k].loss_ci);
        if (p->metric.fn)
            mean_and_ci(o->eval_tasks, &points[k].metric, &points[k].metric_ci);
        else
            points[k].metric = points[k].metric_ci = NAN;
    }
    eval_free(&b);
    return true;
}

/* ------------------------------------------------------------------------
 * Progress */

typedef struct {
    bool on, tty;
    bool drawn;                 /* a TTY line is on screen without its newline */
    long first, total;          /* iterations done before this run, and in all */
    double window[LOSS_WINDOW]; /* meta-losses of the latest iterations, a ring */
    long nseen;
    double last;                /* training seconds at the last print */
} Progress;

static double window_mean(const Progress *g)
{
    long n = g->nseen < LOSS_WINDOW ? g->nseen : LOSS_WINDOW;
    double sum = 0.0;
    for (long i = 0; i < n; i++)
        sum += g->window[i];
    return n ? sum / (double)n : NAN;
}

/* Seconds as m:ss or h:mm:ss. */
static void format_duration(char *buf, size_t size, double seconds)
{
    if (!(seconds >= 0.0) || seconds > 1e8) {
        snprintf(buf, size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

/* One progress line; the last one shows the time taken instead of the ETA. */
static void progress_print(Progress *g, long done, double seconds, bool last)
{
    double rate = seconds > 0.0 ? (double)(done - g->first) / seconds : 0.0;
    char when[32];
    if (last)
        format_duration(when, sizeof when, seconds);
    else
        format_duration(when, sizeof when, rate > 0.0 ? (double)(g->total - done) / rate : -1.0);
    fprintf(stderr, "%siter %ld/%ld | meta-loss %.4g | %.0f steps/s | %s %s%s",
            g->tty ? "\r\033[K" : "", done, g->total, window_mean(g), rate,
            last ? "took" : "ETA", when, g->tty ? "" : "\n");
    fflush(stderr);
    g->drawn = g->tty;
    g->last = seconds;
}

/* Records iteration `done`'s meta-loss and prints when the period is up. */
static void progress_update(Progress *g, long done, double loss, double seconds)
{
    g->window[g->nseen % LOSS_WINDOW] = loss;
    g->nseen++;
    if (g->on && seconds - g->last >= (g->tty ? TTY_PERIOD : LOG_PERIOD))
        progress_print(g, done, seconds, false);
}

/* Takes a TTY progress line off the screen before other output; it is
 * drawn again at the next update. */
static void progress_clear(Progress *g)
{
    if (g->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        g->drawn = false;
        g->last = -INFINITY;
    }
}

static void progress_finish(Progress *g, long done, double seconds)
{
    if (!g->on)
        return;
    progress_print(g, done, seconds, true);
    if (g->tty)
        fputc('\n', stderr);
    g->drawn = false;
}

/* ------------------------------------------------------------------------
 * Training */

/* Everything rt_train allocates. */
typedef struct {
    RtBatch *batch;
    int nranks, rank;
    int *bound;                 /* nranks + 1: each process's tasks of a meta-batch */
    int *count, *displ;         /* nranks: each process's node vectors, and where they go */
    double *mine, *all;         /* this process's node sums, and every process's */
    void *grad;                 /* the meta-batch's mean gradient, in the element type */
    void *opt_state;
    void *loss_weights;         /* the meta-step's multi-step loss weights (p->loss_weights reals) */
    RtEvalPoint *points;
    double *step_seconds;       /* the wall time of each iteration of this run */
} TrainBuffers;

static void train_free(TrainBuffers *b)
{
    rt_batch_free(b->batch);
    free(b->bound);
    free(b->count);
    free(b->displ);
    if (b->all != b->mine)
        free(b->all);
    free(b->mine);
    free(b->grad);
    free(b->opt_state);
    free(b->loss_weights);
    free(b->points);
    free(b->step_seconds);
}

/* This process's share of a meta-batch of B among nranks: bound, count
 * and displ; false when a count overflows an int. */
static bool split_ranks(int B, TrainBuffers *b)
{
    long total = 0;
    for (int k = 0; k <= b->nranks; k++)
        b->bound[k] = (int)((long)k * B / b->nranks);
    for (int k = 0; k < b->nranks; k++) {
        b->count[k] = rt_tree_count(B, b->bound[k], b->bound[k + 1]);
        b->displ[k] = (int)total;
        total += b->count[k];
    }
    return total <= INT32_MAX;
}

static bool train_alloc(const RtProgram *p, const RtTrainOptions *o, TrainBuffers *b)
{
    size_t rb = rt_real_bytes(p->real);
    size_t v = rt_node_reals(p);
    int nranks = o->nranks > 1 ? o->nranks : 1;
    long timed = o->iterations - (o->start > 0 ? o->start : 0);
    timed = timed < MAX_TIMED ? timed : MAX_TIMED;
    *b = (TrainBuffers){
        .nranks = nranks, .rank = nranks > 1 ? o->rank : 0,
        .bound = calloc((size_t)nranks + 1, sizeof(int)),
        .count = calloc((size_t)nranks, sizeof(int)),
        .displ = calloc((size_t)nranks, sizeof(int)),
        .grad = rt_alloc_zeroed(p->nreal, rb),
        .opt_state = rt_alloc_zeroed(rt_opt_state_count(&p->optimizer, p->nreal), rb),
        .loss_weights = rt_alloc_zeroed((size_t)p->loss_weights, rb),
        .points = calloc(o->nsteps > 0 ? (size_t)o->nsteps : 1, sizeof(RtEvalPoint)),
        .step_seconds = calloc(timed > 0 ? (size_t)timed : 1, sizeof(double)),
    };
    if (!(b->bound && b->count && b->displ && b->grad && b->opt_state && b->loss_weights && b->points &&
          b->step_seconds) ||
        b->rank < 0 || b->rank >= nranks || !split_ranks(p->meta_batch, b)) {
        train_free(b);
        return false;
    }
    int total = b->displ[nranks - 1] + b->count[nranks - 1];
    b->mine = rt_alloc_zeroed(mul_size((size_t)b->count[b->rank], v), sizeof(double));
    b->all = nranks > 1 ? rt_alloc_zeroed(mul_size((size_t)total, v), sizeof(double)) : b->mine;
    b->batch = rt_batch_new(p, p->meta_batch, o->threads);
    if (!(b->mine && b->all && b->batch)) {
        train_free(b);
        return false;
    }
    return true;
}

/* One meta-iteration: sample this process's tasks of the batch and compute
 * their node sums, exchange them with the other processes, and put the
 * mean meta-gradient into b->grad; *loss gets the mean query loss.  False
 * when the exchange fails. */
static bool meta_iteration(const RtProgram *p, const RtTrainOptions *o, TrainBuffers *b,
                           const void *params, long it, double *loss)
{
    int B = p->meta_batch, first = b->bound[b->rank];
    RtSlice s = {
        .B = B, .first = first, .count = b->bound[b->rank + 1] - first,
        .sample = true, .seed = o->seed, .task_base = (uint64_t)it * (uint64_t)B,
        .loss_weights = p->loss_weights ? b->loss_weights : NULL,
        .first_order = p->meta_step_first.fn && it < p->first_until,
    };
    if (p->loss_weights)    /* MAML++'s multi-step loss: this iteration's weights */
        rt_msl_weights(p->loss_weights, p->msl_iterations, it, p->real, b->loss_weights);
    rt_batch_nodes(b->batch, params, &s, b->mine);
    if (b->nranks > 1 &&
        !o->gather(o->gather_ctx, b->mine, b->count[b->rank], b->all, b->count, b->displ, rt_node_reals(p)))
        return false;
    *loss = rt_batch_mean(b->batch, B, b->nranks, b->bound, b->all, b->grad);
    return true;
}

/* The running statistics after params' nreal reals <- 0.9 of them + 0.1
 * of the meta-batch's mean batch statistics (momentum 0.1, as
 * torch.nn.BatchNorm), in double, rounded to the real type. */
static void update_running(const RtProgram *p, const double *mean, void *params)
{
    size_t rb = rt_real_bytes(p->real);
    void *running = (char *)params + p->nreal * rb;
    for (size_t i = 0; i < p->nstat; i++)
        if (p->real == RT_F32)
            ((float *)running)[i] = (float)(0.9 * ((float *)running)[i] + 0.1 * mean[i]);
        else
            ((double *)running)[i] = 0.9 * ((double *)running)[i] + 0.1 * mean[i];
}

/* Whether all n values of type real at x are finite. */
static bool all_finite(RtReal real, const void *x, size_t n)
{
    if (real == RT_F32) {
        const float *v = x;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(v[i]))
                return false;
    } else {
        const double *v = x;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(v[i]))
                return false;
    }
    return true;
}

/* The k-th smallest (0-based) of t[0..n), by Hoare's selection: t is
 * reordered so that t[0..k) are no larger and t(k..n) no smaller.  Unlike
 * qsort, it allocates nothing. */
static double select_kth(double *t, long n, long k)
{
    long lo = 0, hi = n - 1;
    while (lo < hi) {
        double pivot = t[lo + (hi - lo) / 2];
        long i = lo, j = hi;
        while (i <= j) {
            while (t[i] < pivot)
                i++;
            while (t[j] > pivot)
                j--;
            if (i <= j) {
                double x = t[i];
                t[i++] = t[j];
                t[j--] = x;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return t[k];
}

/* The median of t[1..n) (t[0] is the warm-up), reordering it; t[0] alone
 * when n is 1, NAN when 0. */
static double median_step(double *t, long n)
{
    if (n <= 1)
        return n == 1 ? t[0] : NAN;
    double *u = t + 1;
    long m = n - 1;
    double upper = select_kth(u, m, m / 2);
    if (m % 2)
        return upper;
    double lower = u[0];
    for (long i = 1; i < m / 2; i++)
        lower = u[i] > lower ? u[i] : lower;
    return 0.5 * (lower + upper);
}

/* The iterations since the last on_progress call: their count, the sum of
 * their meta-losses, and the training seconds when it was made. */
typedef struct {
    long n;
    double loss, seconds;
} Window;

/* Calls o->on_progress with w's iterations, up to `done` at `seconds`, and
 * starts a new window. */
static void report_progress(const RtTrainOptions *o, Window *w, long done, double seconds)
{
    if (!o->on_progress || w->n == 0)
        return;
    double span = seconds - w->seconds;
    o->on_progress(o->hook_ctx, done, w->loss / (double)w->n, span > 0.0 ? (double)w->n / span : 0.0);
    *w = (Window){.seconds = seconds};
}

/* Evaluates params and prints one line to o->log; false when out of memory. */
static bool evaluate_and_log(const RtProgram *p, const RtTrainOptions *o, const void *params,
                             long done, RtEvalPoint *points, Progress *g)
{
    if (!rt_evaluate(p, o, params, points))
        return false;
    if (o->on_eval)
        o->on_eval(o->hook_ctx, done, points, o->nsteps);
    if (!o->log)
        return true;
    progress_clear(g);
    fprintf(o->log, "eval @ %ld:", done);
    for (int k = 0; k < o->nsteps; k++) {
        fprintf(o->log, "%s steps %d loss %.4g +- %.2g", k ? " |" : "", points[k].steps, points[k].loss,
                points[k].loss_ci);
        if (points[k].has_metric)
            fprintf(o->log, " metric %.4g +- %.2g", points[k].metric, points[k].metric_ci);
    }
    fputc('\n', o->log);
    fflush(o->log);
    return true;
}

bool rt_train(const RtProgram *p, const RtTrainOptions *o, void *params, RtReport *rep)
{
    const int max_points = (int)(sizeof rep->eval / sizeof rep->eval[0]);
    *rep = (RtReport){.final_meta_loss = NAN, .median_step_seconds = NAN};
    if (p->meta_batch < 1 || o->iterations < 0 || o->nsteps < 0 || (o->nranks > 1 && !o->gather))
        return false;
    for (int k = 0; k < o->nsteps; k++)
        if (o->steps[k] < 0)
            return false;
    TrainBuffers b;
    if (!train_alloc(p, o, &b))
        return false;
    bool evaluating = o->eval_tasks > 0 && o->nsteps > 0;
    Progress g = {
        .on = o->progress, .tty = o->progress && isatty(fileno(stderr)), .total = o->iterations,
        .first = o->start,
    };
    void *opt_state = o->opt_state ? o->opt_state : b.opt_state;

    bool ok = true;
    long done = o->start > 0 ? o->start : 0, timed = 0;
    double trained = 0.0;       /* seconds spent in meta-iterations */
    Window window = {0};
    double start = now();
    while (ok && done < o->iterations) {
        double loss, began = now();
        if (!meta_iteration(p, o, &b, params, done, &loss)) {
            rep->stopped = true;
            ok = false;
            break;
        }
        rep->diverged = !isfinite(loss) ? RT_DIVERGED_LOSS
                        : !all_finite(p->real, b.grad, p->nreal) ? RT_DIVERGED_GRADIENT : RT_FINITE;
        if (rep->diverged) {        /* stop with the last finite params */
            rep->final_meta_loss = loss;
            break;
        }
        rt_batch_opt_step(b.batch, &p->optimizer, params, b.grad, opt_state, done + 1);
        update_running(p, rt_batch_stats(b.batch), params);
        if (!all_finite(p->real, params, p->nreal) ||
            !all_finite(p->real, opt_state, rt_opt_state_count(&p->optimizer, p->nreal))) {
            rep->diverged = RT_DIVERGED_UPDATE;
            rep->final_meta_loss = loss;
            break;
        }
        if (timed < MAX_TIMED)
            b.step_seconds[timed++] = now() - began;
        done++;
        rep->final_meta_loss = loss;
        progress_update(&g, done, loss, trained + (now() - start));
        window.n++;
        window.loss += loss;
        if (o->progress_every > 0 && done % o->progress_every == 0)
            report_progress(o, &window, done, trained + (now() - start));
        if (done >= o->iterations)
            break;
        bool eval_now = evaluating && o->eval_every > 0 && done % o->eval_every == 0;
        bool save_now = o->checkpoint && o->checkpoint_every > 0 && done % o->checkpoint_every == 0;
        if (eval_now || save_now) {
            trained += now() - start;
            if (eval_now)
                ok = evaluate_and_log(p, o, params, done, b.points, &g);
            if (ok && save_now && !o->checkpoint(o->checkpoint_ctx, done, params, opt_state)) {
                rep->stopped = true;
                ok = false;
            }
            start = now();
        }
    }
    trained += now() - start;
    report_progress(o, &window, done, trained);
    progress_finish(&g, done, trained);
    if (ok && evaluating && !rep->diverged)
        ok = evaluate_and_log(p, o, params, done, b.points, &g);

    rep->iterations = done;
    rep->seconds = trained;
    rep->steps_per_second = trained > 0.0 ? (double)(done - g.first) / trained : 0.0;
    rep->median_step_seconds = median_step(b.step_seconds, timed);
    if (ok && evaluating && !rep->diverged) {
        rep->neval = o->nsteps < max_points ? o->nsteps : max_points;
        memcpy(rep->eval, b.points, (size_t)rep->neval * sizeof(RtEvalPoint));
    }
    train_free(&b);
    return ok;
}

/* ------------------------------------------------------------------------
 * Report */

/* A JSON number, or null for NaN and infinities (which JSON lacks). */
static void put_number(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.17g", x);
    else
        fputs("null", f);
}

static void put_report(FILE *f, const RtReport *rep)
{
    fprintf(f, "{\"iterations\": %ld, \"seconds\": ", rep->iterations);
    put_number(f, rep->seconds);
    fputs(", \"steps_per_second\": ", f);
    put_number(f, rep->steps_per_second);
    fputs(", \"median_step_seconds\": ", f);
    put_number(f, rep->median_step_seconds);
    fputs(", \"final_meta_loss\": ", f);
    put_number(f, rep->final_meta_loss);
    fputs(", \"eval\": ", f);
    rt_put_eval_json(f, rep->eval, rep->neval);
}

void rt_put_eval_json(FILE *f, const RtEvalPoint *points, int n)
{
    fputc('[', f);
    for (int k = 0; k < n; k++) {
        const RtEvalPoint *e = &points[k];
        fprintf(f, "%s{\"steps\": %d, \"loss\": ", k ? ", " : "", e->steps);
        put_number(f, e->loss);
        fputs(", \"loss_ci95\": ", f);
        put_number(f, e->loss_ci);
        if (e->has_metric) {
            fputs(", \"metric\": ", f);
            put_number(f, e->metric);
            fputs(", \"metric_ci95\": ", f);
            put_number(f, e->metric_ci);
        }
        fputc('}', f);
    }
    fputc(']', f);
}

bool rt_write_report(const char *path, const RtReport *rep, const char *more)
{
    RtReplace r;
    if (!rt_replace_begin(&r, path))
        return false;
    put_report(r.f, rep);
    if (more)
        fprintf(r.f, ", %s", more);
    fputs("}\n", r.f);
    return rt_replace_end(&r, true);
}
