/* The meta-training loop, held-out evaluation and the JSON report.
 *
 * rt_train allocates every buffer before its first iteration; an iteration
 * only samples tasks into those buffers, calls the compiled meta-step once
 * per task, sums the task gradients in task order (so a run is bitwise
 * reproducible) and applies the outer optimiser. */
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
    ALIGN = 64,                 /* alignment of every buffer handed to compiled code */
    LOSS_WINDOW = 100,          /* iterations in the progress line's running mean */
};

static const double TTY_PERIOD = 0.1;   /* seconds between redraws on a terminal */
static const double LOG_PERIOD = 2.0;   /* seconds between lines otherwise */

static size_t real_bytes(RtReal real)
{
    return real == RT_F32 ? sizeof(float) : sizeof(double);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t round_up(size_t n)
{
    return (n + (ALIGN - 1)) & ~(size_t)(ALIGN - 1);
}

/* bytes rounded up to ALIGN (at least ALIGN, so the result is never NULL
 * for lack of size), zeroed; NULL when the size overflows or memory is out. */
static void *alloc_zeroed(size_t bytes)
{
    if (bytes > SIZE_MAX - ALIGN)
        return NULL;
    size_t n = bytes == 0 ? ALIGN : round_up(bytes);
    void *p = aligned_alloc(ALIGN, n);
    if (p)
        memset(p, 0, n);
    return p;
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
    size_t rb = real_bytes(p->real);
    for (int i = 0; i < p->nparam; i++)
        slot[i] = (const char *)base + p->param[i].offset * rb;
}

static void point_out(const RtProgram *p, void *base, void **slot)
{
    size_t rb = real_bytes(p->real);
    for (int i = 0; i < p->nparam; i++)
        slot[i] = (char *)base + p->param[i].offset * rb;
}


/* ------------------------------------------------------------------------
 * Evaluation */

typedef struct {
    void *cur, *next;           /* flat parameter vectors, swapped every step */
    void *sx, *sy, *qx, *qy;
    void *arena;                /* large enough for adapt_step, loss and metric */
    const void **in;
    void **out;
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
    size_t pbytes = mul_size(p->nreal, real_bytes(p->real));
    size_t arena = p->adapt_step.arena_bytes;
    if (p->loss.arena_bytes > arena)
        arena = p->loss.arena_bytes;
    if (p->metric.fn && p->metric.arena_bytes > arena)
        arena = p->metric.arena_bytes;
    *b = (EvalBuffers){
        .cur = alloc_zeroed(pbytes),
        .next = alloc_zeroed(pbytes),
        .sx = alloc_zeroed(p->sx_bytes),
        .sy = alloc_zeroed(p->sy_bytes),
        .qx = alloc_zeroed(p->qx_bytes),
        .qy = alloc_zeroed(p->qy_bytes),
        .arena = alloc_zeroed(arena),
        .in = calloc((size_t)p->nparam + 2, sizeof(void *)),
        .out = calloc((size_t)p->nparam + 1, sizeof(void *)),
    };
    if (b->cur && b->next && b->sx && b->sy && b->qx && b->qy && b->arena && b->in && b->out)
        return true;
    eval_free(b);
    return false;
}

/* Runs entry e (loss or metric) on the parameters in b->cur and the query set. */
static double query_value(const RtProgram *p, const RtEntry *e, EvalBuffers *b)
{
    Scalar value = {0};
    point_in(p, b->cur, b->in);
    b->in[p->nparam] = b->qx;
    b->in[p->nparam + 1] = b->qy;
    b->out[0] = &value;
    e->fn(b->in, b->out, b->arena);
    return scalar_value(p->real, &value);
}

/* One inner step on the support set: b->cur <- adapt(b->cur). */
static void adapt(const RtProgram *p, EvalBuffers *b)
{
    Scalar support_loss;
    point_in(p, b->cur, b->in);
    b->in[p->nparam] = b->sx;
    b->in[p->nparam + 1] = b->sy;
    point_out(p, b->next, b->out);
    b->out[p->nparam] = &support_loss;
    p->adapt_step.fn(b->in, b->out, b->arena);
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
    size_t pbytes = p->nreal * real_bytes(p->real);
    for (int task = 0; task < o->eval_tasks; task++) {
        p->sample(p->sample_ctx, o->seed, RT_EVAL_TASK | (uint64_t)task, b.sx, b.sy, b.qx, b.qy);
        /* Both vectors start as params, so reals outside every parameter
         * (which adapt_step never writes) keep their values. */
        memcpy(b.cur, params, pbytes);
        memcpy(b.next, params, pbytes);
        for (int step = 0; step <= max_steps; step++) {
            if (step > 0)
                adapt(p, &b);
            for (int k = 0; k < o->nsteps; k++) {
                if (o->steps[k] != step)
                    continue;
                double loss = query_value(p, &p->loss, &b);
                points[k].loss += loss;
                points[k].loss_ci += loss * loss;
                if (p->metric.fn) {
                    double metric = query_value(p, &p->metric, &b);
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

/* --- one meta-gradient over a batch of tasks --- */

void rt_step_work_free(RtStepWork *w)
{
    free(w->arena);
    free(w->task_grad);
    free(w->grad_sum);
    free(w->in);
    free(w->out);
    *w = (RtStepWork){0};
}

bool rt_step_work_alloc(const RtProgram *p, RtStepWork *w)
{
    *w = (RtStepWork){
        .arena = alloc_zeroed(p->meta_step.arena_bytes),
        .task_grad = alloc_zeroed(mul_size(p->nreal, real_bytes(p->real))),
        .grad_sum = alloc_zeroed(mul_size(p->nreal, sizeof(double))),
        .in = calloc((size_t)p->nparam + 4, sizeof(void *)),
        .out = calloc((size_t)p->nparam + 1, sizeof(void *)),
    };
    if (w->arena && w->task_grad && w->grad_sum && w->in && w->out)
        return true;
    rt_step_work_free(w);
    return false;
}

double rt_meta_grad(const RtProgram *p, RtStepWork *w, const void *params, int ntasks,
                    const RtTask *tasks, void *grad)
{
    int np = p->nparam;
    memset(w->grad_sum, 0, p->nreal * sizeof(double));
    point_in(p, params, w->in);
    point_out(p, w->task_grad, w->out + 1);
    double loss_sum = 0.0;
    for (int t = 0; t < ntasks; t++) {
        Scalar loss = {0};
        w->in[np] = tasks[t].sx;
        w->in[np + 1] = tasks[t].sy;
        w->in[np + 2] = tasks[t].qx;
        w->in[np + 3] = tasks[t].qy;
        w->out[0] = &loss;
        p->meta_step.fn(w->in, w->out, w->arena);
        loss_sum += scalar_value(p->real, &loss);
        if (p->real == RT_F32)
            for (size_t i = 0; i < p->nreal; i++)
                w->grad_sum[i] += (double)((const float *)w->task_grad)[i];
        else
            for (size_t i = 0; i < p->nreal; i++)
                w->grad_sum[i] += ((const double *)w->task_grad)[i];
    }
    double inv = ntasks > 0 ? 1.0 / ntasks : 0.0;
    if (p->real == RT_F32)
        for (size_t i = 0; i < p->nreal; i++)
            ((float *)grad)[i] = (float)(w->grad_sum[i] * inv);
    else
        for (size_t i = 0; i < p->nreal; i++)
            ((double *)grad)[i] = w->grad_sum[i] * inv;
    return loss_sum * inv;
}

/* Everything rt_train allocates. */
typedef struct {
    RtStepWork work;
    unsigned char *task_mem;    /* meta_batch tasks, each four 64-byte-aligned tensors */
    RtTask *task;
    void *grad;                 /* the meta-batch's mean gradient, in the element type */
    void *opt_state;
    RtEvalPoint *points;
} TrainBuffers;

static void train_free(TrainBuffers *b)
{
    rt_step_work_free(&b->work);
    free(b->task_mem);
    free(b->task);
    free(b->grad);
    free(b->opt_state);
    free(b->points);
}

static bool train_alloc(const RtProgram *p, const RtTrainOptions *o, TrainBuffers *b)
{
    size_t rb = real_bytes(p->real);
    size_t batch = (size_t)p->meta_batch;
    size_t stride = round_up(p->sx_bytes) + round_up(p->sy_bytes) + round_up(p->qx_bytes) +
                    round_up(p->qy_bytes);
    *b = (TrainBuffers){
        .task_mem = alloc_zeroed(mul_size(batch, stride)),
        .task = calloc(batch, sizeof(RtTask)),
        .grad = alloc_zeroed(mul_size(p->nreal, rb)),
        .opt_state = alloc_zeroed(mul_size(rt_opt_state_count(&p->optimizer, p->nreal), rb)),
        .points = calloc(o->nsteps > 0 ? (size_t)o->nsteps : 1, sizeof(RtEvalPoint)),
    };
    bool work = rt_step_work_alloc(p, &b->work);
    if (!(work && b->task_mem && b->task && b->grad && b->opt_state && b->points)) {
        train_free(b);
        return false;
    }
    for (size_t t = 0; t < batch; t++) {
        unsigned char *at = b->task_mem + t * stride;
        b->task[t].sx = at;
        at += round_up(p->sx_bytes);
        b->task[t].sy = at;
        at += round_up(p->sy_bytes);
        b->task[t].qx = at;
        at += round_up(p->qx_bytes);
        b->task[t].qy = at;
    }
    return true;
}

/* One meta-iteration: sample the batch's tasks, then their mean meta-gradient
 * into b->grad; returns the mean query loss. */
static double meta_iteration(const RtProgram *p, const RtTrainOptions *o, TrainBuffers *b,
                             const void *params, long it)
{
    for (int t = 0; t < p->meta_batch; t++) {
        uint64_t task = (uint64_t)it * (uint64_t)p->meta_batch + (uint64_t)t;
        const RtTask *d = &b->task[t];
        p->sample(p->sample_ctx, o->seed, task, (void *)d->sx, (void *)d->sy, (void *)d->qx, (void *)d->qy);
    }
    return rt_meta_grad(p, &b->work, params, p->meta_batch, b->task, b->grad);
}

/* Evaluates params and prints one line to o->log; false when out of memory. */
static bool evaluate_and_log(const RtProgram *p, const RtTrainOptions *o, const void *params,
                             long done, RtEvalPoint *points, Progress *g)
{
    if (!rt_evaluate(p, o, params, points))
        return false;
    if (!o->log)
        return true;
    progress_clear(g);
    fprintf(o->log, "eval @ %ld:", done);
    for (int k = 0; k < o->nsteps; k++) {
        fprintf(o->log, "%s steps %d loss %.4g", k ? " |" : "", points[k].steps, points[k].loss);
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
    *rep = (RtReport){.final_meta_loss = NAN};
    if (p->meta_batch < 1 || o->iterations < 0 || o->nsteps < 0)
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
    long done = o->start > 0 ? o->start : 0;
    double trained = 0.0;       /* seconds spent in meta-iterations */
    double start = now();
    while (ok && done < o->iterations) {
        double loss = meta_iteration(p, o, &b, params, done);
        if (!isfinite(loss)) {      /* stop with the last finite params */
            rep->diverged = true;
            rep->final_meta_loss = loss;
            break;
        }
        rt_opt_step(&p->optimizer, p->real, p->nreal, params, b.grad, opt_state, done + 1);
        done++;
        rep->final_meta_loss = loss;
        progress_update(&g, done, loss, trained + (now() - start));
        if (evaluating && o->eval_every > 0 && done % o->eval_every == 0 && done < o->iterations) {
            trained += now() - start;
            ok = evaluate_and_log(p, o, params, done, b.points, &g);
            start = now();
        }
    }
    trained += now() - start;
    progress_finish(&g, done, trained);
    if (ok && evaluating && !rep->diverged)
        ok = evaluate_and_log(p, o, params, done, b.points, &g);

    rep->iterations = done;
    rep->seconds = trained;
    rep->steps_per_second = trained > 0.0 ? (double)(done - g.first) / trained : 0.0;
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
    fputs(", \"final_meta_loss\": ", f);
    put_number(f, rep->final_meta_loss);
    fputs(", \"eval\": [", f);
    for (int k = 0; k < rep->neval; k++) {
        const RtEvalPoint *e = &rep->eval[k];
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
    fputs("]}\n", f);
}

bool rt_write_report(const char *path, const RtReport *rep)
{
    RtReplace r;
    if (!rt_replace_begin(&r, path))
        return false;
    put_report(r.f, rep);
    return rt_replace_end(&r, true);
}
