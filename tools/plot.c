/* mamlc plot: the learning curves of an experiment log, and the fit of a
 * trained sinusoid regressor before and after adaptation, as SVG. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "svg.h"

enum { MAX_POINTS = 16 };       /* evaluated step counts (the runtime's RtReport.eval) */

/* Writes the picture draw(ctx, f) makes to path through a new file renamed
 * over it, so path is either the whole picture or untouched. */
static bool write_svg(const char *path, void (*draw)(FILE *f, const void *ctx), const void *ctx, Diag *d) {
    RtReplace r;
    if (!rt_replace_begin(&r, path)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot write the picture: %s", strerror(errno));
        return false;
    }
    draw(r.f, ctx);
    if (!rt_replace_end(&r, true)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot write the picture: %s", strerror(errno));
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------
 * The log */

typedef struct {
    long iteration;
    int n;
    RtEvalPoint point[MAX_POINTS];
} Eval;

typedef struct {
    long iteration;
    double loss;                /* the mean meta-loss of the line's iterations */
} Train;

typedef struct {
    Train *train;               /* the "train" lines */
    int ntrain, train_cap;
    Eval *eval;
    int neval, eval_cap;
    char *model;                /* the model file of the first config line, or NULL */
    long seed, inner_steps;     /* -1: not given */
    bool metric;                /* some evaluation has a metric */
} Curves;

static void curves_free(Curves *c) {
    free(c->train);
    free(c->eval);
    free(c->model);
}

/* Room for one more of each array; false when memory is short. */
static bool grow(void **a, int n, int *cap, size_t size) {
    if (n < *cap)
        return true;
    int ncap = *cap ? 2 * *cap : 256;
    void *b = realloc(*a, (size_t)ncap * size);
    if (!b)
        return false;
    *a = b;
    *cap = ncap;
    return true;
}

/* Member key of line v as a whole number >= 0, or false. */
static bool count_member(const JsonValue *v, const char *key, long *out) {
    double x = json_number(v, key);
    if (!(x >= 0 && x <= 9e15 && x == floor(x)))
        return false;
    *out = (long)x;
    return true;
}

/* A value that may be null (NAN) or a number: member key of v. */
static bool optional_number(const JsonValue *v, const char *key, double *out) {
    const JsonValue *m = json_get(v, key);
    *out = m && m->kind == JSON_NUMBER ? m->number : NAN;
    return !m || m->kind == JSON_NUMBER || m->kind == JSON_NULL;
}

/* The "eval" array of an eval line into e; NULL, or what is wrong. */
static const char *read_points(const JsonValue *a, Eval *e) {
    if (!a || a->kind != JSON_ARRAY)
        return "an \"eval\" line needs \"eval\": [{\"steps\": ..., \"loss\": ...}, ...]";
    if (a->n > MAX_POINTS)
        return "an evaluation of over 16 step counts";
    e->n = a->n;
    for (int k = 0; k < a->n; k++) {
        const JsonValue *p = &a->item[k];
        RtEvalPoint *pt = &e->point[k];
        long steps;
        if (p->kind != JSON_OBJECT || !count_member(p, "steps", &steps) || steps > 1000000)
            return "each item of \"eval\" needs \"steps\", a count of inner steps";
        pt->steps = (int)steps;
        if (!optional_number(p, "loss", &pt->loss) || !optional_number(p, "loss_ci95", &pt->loss_ci) ||
            !optional_number(p, "metric", &pt->metric) || !optional_number(p, "metric_ci95", &pt->metric_ci))
            return "\"loss\", \"loss_ci95\", \"metric\" and \"metric_ci95\" must be numbers or null";
        if (!json_get(p, "loss"))
            return "each item of \"eval\" needs \"loss\"";
        pt->has_metric = json_get(p, "metric") != NULL;
    }
    return NULL;
}

/* A config line: remember the model, and when a resumed run starts after
 * `start`, forget what the log holds after it (the earlier run went on
 * past the checkpoint it resumes from). */
static const char *read_config(const JsonValue *v, Curves *c) {
    long start = 0;
    if (json_get(v, "start") && !count_member(v, "start", &start))
        return "\"start\" must be a count of iterations";
    while (c->ntrain > 0 && c->train[c->ntrain - 1].iteration > start)
        c->ntrain--;
    while (c->neval > 0 && c->eval[c->neval - 1].iteration >= start)
        c->neval--;
    const JsonValue *file = json_get(v, "model_file");
    if (!c->model && file && file->kind == JSON_STRING && !(c->model = strdup(file->string)))
        return "out of memory";
    long n;
    if (c->seed < 0 && count_member(v, "seed", &n))
        c->seed = n;
    const JsonValue *meta = json_get(json_get(v, "model"), "meta");
    if (c->inner_steps < 0 && count_member(meta, "inner_steps", &n))
        c->inner_steps = n;
    return NULL;
}

/* One line of the log into c: NULL, or what is wrong with it. */
static const char *read_line(const JsonValue *v, Curves *c) {
    const JsonValue *event = json_get(v, "event");
    if (v->kind != JSON_OBJECT)
        return "a line must be a JSON object";
    if (!event || event->kind != JSON_STRING)
        return "a line needs \"event\": \"config\", \"train\" or \"eval\"";
    if (strcmp(event->string, "config") == 0)
        return read_config(v, c);
    long it;
    if (!count_member(v, "iteration", &it))
        return "a \"train\" or \"eval\" line needs \"iteration\", a count";
    if (strcmp(event->string, "train") == 0) {
        double loss;
        if (!optional_number(v, "loss", &loss) || !json_get(v, "loss"))
            return "a \"train\" line needs \"loss\", a number or null";
        if (!grow((void **)&c->train, c->ntrain, &c->train_cap, sizeof *c->train))
            return "out of memory";
        c->train[c->ntrain++] = (Train){it, loss};
        return NULL;
    }
    if (strcmp(event->string, "eval") != 0)
        return "unknown \"event\" (the events are \"config\", \"train\" and \"eval\")";
    if (!grow((void **)&c->eval, c->neval, &c->eval_cap, sizeof *c->eval))
        return "out of memory";
    Eval *e = &c->eval[c->neval];
    *e = (Eval){.iteration = it};
    const char *why = read_points(json_get(v, "eval"), e);
    if (why)
        return why;
    for (int k = 0; k < e->n; k++)
        c->metric |= e->point[k].has_metric;
    c->neval++;
    return NULL;
}

/* The log at path, line by line; false after reporting path:line:col. */
static bool read_log(const char *path, Curves *c, Diag *d) {
    FILE *f = fopen(path, "r");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot read the log: %s",
                   !f ? strerror(errno) : S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
        if (f)
            fclose(f);
        return false;
    }
    char *line = NULL, err[160];
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    for (int lineno = 1; ok && (n = getline(&line, &cap, f)) >= 0; lineno++) {
        size_t len = (size_t)n, at;
        if (strspn(line, " \t\r\n") == len)
            continue;
        if (memchr(line, 0, len)) {
            diag_error(d, (SrcLoc){path, lineno, 0}, "a NUL byte: this is no log of mamlc run --log");
            ok = false;
            break;
        }
        JsonValue *v = json_parse(line, len, err, sizeof err, &at);
        const char *why = v ? read_line(v, c) : NULL;
        if (!v)
            diag_error(d, (SrcLoc){path, lineno, (int)at + 1}, "not JSON: %s", err);
        else if (why)
            diag_error(d, (SrcLoc){path, lineno, 1}, "%s", why);
        ok = v && !why;
        json_free(v);
    }
    if (ok && ferror(f)) {
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot read the log: %s", strerror(errno));
        ok = false;
    }
    free(line);
    fclose(f);
    if (ok && c->ntrain == 0 && c->neval == 0) {
        diag_error(d, (SrcLoc){path, 0, 0}, "no \"train\" or \"eval\" lines to draw");
        ok = false;
    }
    return ok;
}

/* ------------------------------------------------------------------------
 * Learning curves */

typedef struct {
    const Curves *c;
    const char *log;
} CurvesPicture;

/* The inner step counts evaluated, in the order of the first evaluation. */
static int step_counts(const Curves *c, int *steps) {
    int n = 0;
    for (int e = 0; e < c->neval; e++)
        for (int k = 0; k < c->eval[e].n; k++) {
            int s = c->eval[e].point[k].steps, j = 0;
            while (j < n && steps[j] != s)
                j++;
            if (j == n && n < MAX_POINTS)
                steps[n++] = s;
        }
    return n;
}

/* The held-out series of step count `steps`: x, value, and value -+ ci;
 * its length. */
static int series(const Curves *c, int steps, bool metric, double *x, double *y, double *lo, double *hi) {
    int n = 0;
    for (int e = 0; e < c->neval; e++)
        for (int k = 0; k < c->eval[e].n; k++) {
            const RtEvalPoint *p = &c->eval[e].point[k];
            if (p->steps != steps)
                continue;
            double v = metric ? p->metric : p->loss, ci = metric ? p->metric_ci : p->loss_ci;
            x[n] = (double)c->eval[e].iteration;
            y[n] = v;
            lo[n] = isfinite(ci) ? v - ci : v;
            hi[n] = isfinite(ci) ? v + ci : v;
            n++;
        }
    return n;
}

static void widen(double *lo, double *hi, double v, bool log) {
    if (isfinite(v) && (!log || v > 0)) {
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
    }
}

/* One panel: the held-out loss (or metric), and for the loss the training
 * loss, against iterations. */
static void draw_panel(FILE *f, const Curves *c, bool metric, int id, double left, double top, double width,
                       double height) {
    int steps[MAX_POINTS], nsteps = step_counts(c, steps);
    size_t cap = (size_t)c->neval + 1;
    double *x = malloc(cap * sizeof *x), *y = malloc(cap * sizeof *y), *lo = malloc(cap * sizeof *lo),
           *hi = malloc(cap * sizeof *hi), *tx = malloc(((size_t)c->ntrain + 1) * sizeof *tx),
           *ty = malloc(((size_t)c->ntrain + 1) * sizeof *ty);
    if (!x || !y || !lo || !hi || !tx || !ty)
        goto done;
    /* the ranges: a log axis where positive losses span over a decade and a half */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; !metric && i < c->ntrain; i++) {
        tx[i] = (double)c->train[i].iteration;
        ty[i] = c->train[i].loss;
        widen(&xlo, &xhi, tx[i], false);
        widen(&ylo, &yhi, ty[i], false);
    }
    bool positive = true;
    for (int s = 0; s < nsteps; s++) {
        int n = series(c, steps[s], metric, x, y, lo, hi);
        for (int i = 0; i < n; i++) {
            widen(&xlo, &xhi, x[i], false);
            widen(&ylo, &yhi, y[i], false);
            positive &= !(y[i] <= 0);
        }
    }
    for (int i = 0; !metric && i < c->ntrain; i++)
        positive &= !(ty[i] <= 0);
    bool log = !metric && positive && ylo > 0 && yhi / ylo > 30;
    for (int s = 0; s < nsteps; s++) {  /* the intervals, as far as the axis shows them */
        int n = series(c, steps[s], metric, x, y, lo, hi);
        for (int i = 0; i < n; i++) {
            widen(&ylo, &yhi, lo[i], log);
            widen(&ylo, &yhi, hi[i], log);
        }
    }
    if (!(xhi >= xlo) || !(yhi >= ylo)) {
        xlo = ylo = 0;
        xhi = yhi = 1;
    }
    xlo = xlo > 0 ? 0 : xlo;
    svg_range(&xlo, &xhi, false);
    svg_range(&ylo, &yhi, log);
    SvgChart ch = {.f = f, .id = id, .left = left, .top = top, .width = width, .height = height, .x0 = xlo,
                   .x1 = xhi, .y0 = log ? log10(ylo) : ylo, .y1 = log ? log10(yhi) : yhi, .logy = log,
                   .xthousands = true};
    svg_axes(&ch, metric ? "held-out metric" : "loss", "meta-training iteration",
             metric ? "metric (mean over tasks)" : log ? "loss (log scale)" : "loss");
    SvgKey key[MAX_POINTS + 2];
    int nkey = 0;
    char labels[MAX_POINTS + 1][96];
    if (!metric && c->ntrain > 0) {
        svg_line(&ch, tx, ty, c->ntrain, "#999999", 1, NULL);
        if (c->inner_steps >= 0)
            snprintf(labels[nkey], sizeof labels[nkey], "meta-training (query loss after %ld inner step%s)",
                     c->inner_steps, c->inner_steps == 1 ? "" : "s");
        else
            snprintf(labels[nkey], sizeof labels[nkey], "meta-training (query loss)");
        key[nkey] = (SvgKey){labels[nkey], "#999999", NULL, true, false, false};
        nkey++;
    }
    for (int s = 0; s < nsteps; s++) {
        int n = series(c, steps[s], metric, x, y, lo, hi);
        const char *color = svg_palette[s % svg_npalette];
        for (int i = 0; log && i < n; i++)
            lo[i] = lo[i] > 0 ? lo[i] : ylo;    /* an interval reaching below 0 runs off the axis */
        svg_band(&ch, x, lo, hi, n, color, 0.18);
        svg_line(&ch, x, y, n, color, 2, NULL);
        svg_dots(&ch, x, y, n, color, 3);
        if (n == 0)
            continue;
        snprintf(labels[nkey], sizeof labels[nkey], "held-out, after %d inner step%s", steps[s],
                 steps[s] == 1 ? "" : "s");
        key[nkey] = (SvgKey){labels[nkey], color, NULL, true, true, false};
        nkey++;
    }
    key[nkey++] = (SvgKey){"95% confidence interval", "#555555", NULL, false, false, true};
    svg_legend(&ch, key, nkey);
done:
    free(x);
    free(y);
    free(lo);
    free(hi);
    free(tx);
    free(ty);
}

static void draw_curves(FILE *f, const void *ctx) {
    const CurvesPicture *p = ctx;
    const Curves *c = p->c;
    int panels = c->metric ? 2 : 1;
    double pw = 560, ph = 380, width = 90 + panels * (pw + 90), height = ph + 130;
    svg_begin(f, width, height);
    char title[512];
    snprintf(title, sizeof title, "%s%s", c->model ? c->model : p->log, c->model ? "" : " (log)");
    if (c->seed >= 0)
        snprintf(title + strlen(title), sizeof title - strlen(title), ", seed %ld", c->seed);
    svg_text(f, width / 2, 26, "middle", 16, "bold", title);
    for (int k = 0; k < panels; k++)
        draw_panel(f, c, k == 1, k, 90 + k * (pw + 90), 70, pw, ph);
    svg_end(f);
}

bool plot_curves(const char *log, const char *out, Diag *d) {
    Curves c = {.seed = -1, .inner_steps = -1};
    bool ok = read_log(log, &c, d);
    CurvesPicture p = {&c, log};
    ok = ok && write_svg(out, draw_curves, &p, d);
    curves_free(&c);
    return ok;
}

/* ------------------------------------------------------------------------
 * The fit before and after adaptation (Finn et al. 2017, Figure 2) */

enum { GRID = 200, FIT_MAX_TASKS = 8 };

typedef struct {
    double amp, phase;
    double *sx, *sy;            /* the K support points */
    double *pred[MAX_POINTS];   /* the prediction on the grid after steps[k] inner steps */
} FitTask;

typedef struct {
    const PlotFit *f;
    int k, ngrid;
    double *grid;
    FitTask task[FIT_MAX_TASKS];
} Fit;

static void fit_free(Fit *fit) {
    free(fit->grid);
    for (int t = 0; t < FIT_MAX_TASKS; t++) {
        free(fit->task[t].sx);
        free(fit->task[t].sy);
        for (int k = 0; k < MAX_POINTS; k++)
            free(fit->task[t].pred[k]);
    }
}

static double real_at(RtReal real, const void *v, int i) {
    return real == RT_F32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

static void set_real(RtReal real, void *v, int i, double x) {
    if (real == RT_F32)
        ((float *)v)[i] = (float)x;
    else
        ((double *)v)[i] = x;
}

/* The buffers of one adaptation: parameter vectors, a task, a chunk of the
 * grid and its prediction, an arena for adapt_step and predict. */
typedef struct {
    void *cur, *next, *sx, *sy, *qx, *qy, *x, *y, *arena;
    const void **in;
    void **out;
} FitWork;

static void work_free(FitWork *w) {
    void *all[] = {w->cur, w->next, w->sx, w->sy, w->qx, w->qy, w->x, w->y, w->arena, (void *)w->in, w->out};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i]);
}

static bool work_alloc(const PlotFit *f, FitWork *w) {
    const RtProgram *p = f->prog;
    size_t rb = rt_real_bytes(p->real), arena = p->adapt_step.arena_bytes;
    arena = f->predict.arena_bytes > arena ? f->predict.arena_bytes : arena;
    *w = (FitWork){
        .cur = rt_alloc_zeroed(p->nreal + 1, rb), .next = rt_alloc_zeroed(p->nreal + 1, rb),
        .sx = rt_alloc_zeroed(p->sx_bytes, 1), .sy = rt_alloc_zeroed(p->sy_bytes, 1),
        .qx = rt_alloc_zeroed(p->qx_bytes, 1), .qy = rt_alloc_zeroed(p->qy_bytes, 1),
        .x = rt_alloc_zeroed((size_t)f->q, rb), .y = rt_alloc_zeroed((size_t)f->q, rb),
        .arena = rt_alloc_zeroed(arena + 1, 1),
        .in = calloc((size_t)p->nparam + 2, sizeof(void *)), .out = calloc((size_t)p->nparam + 1, sizeof(void *)),
    };
    if (w->cur && w->next && w->sx && w->sy && w->qx && w->qy && w->x && w->y && w->arena && w->in && w->out)
        return true;
    work_free(w);
    return false;
}

static void point_params(const RtProgram *p, const void *base, void **slot) {
    for (int i = 0; i < p->nparam; i++)
        slot[i] = (char *)base + p->param[i].offset * rt_real_bytes(p->real);
}

/* One inner step on the support set: w->cur <- adapt_step(w->cur). */
static void fit_adapt(const RtProgram *p, FitWork *w) {
    double support_loss[1];
    point_params(p, w->cur, (void **)w->in);
    w->in[p->nparam] = w->sx;
    w->in[p->nparam + 1] = w->sy;
    point_params(p, w->next, w->out);
    w->out[p->nparam] = support_loss;
    p->adapt_step.fn(w->in, w->out, w->arena);
    void *t = w->cur;
    w->cur = w->next;
    w->next = t;
}

/* net(grid) at the parameters w->cur, q points at a time, into pred. */
static void fit_predict(const PlotFit *f, const Fit *fit, FitWork *w, double *pred) {
    const RtProgram *p = f->prog;
    for (int at = 0; at < fit->ngrid; at += f->q) {
        for (int i = 0; i < f->q; i++)
            set_real(p->real, w->x, i, fit->grid[at + i]);
        point_params(p, w->cur, (void **)w->in);
        w->in[p->nparam] = w->x;
        w->out[0] = w->y;
        f->predict.fn(w->in, w->out, w->arena);
        for (int i = 0; i < f->q; i++)
            pred[at + i] = real_at(p->real, w->y, i);
    }
}

/* Every task's support set and predictions; false when memory is short. */
static bool fit_compute(const PlotFit *f, Fit *fit) {
    const RtProgram *p = f->prog;
    const RtSinusoid *s = f->sinusoid;
    fit->k = s->k;
    fit->ngrid = (GRID + f->q - 1) / f->q * f->q;
    if (!(fit->grid = malloc((size_t)fit->ngrid * sizeof *fit->grid)))
        return false;
    for (int i = 0; i < fit->ngrid; i++)
        fit->grid[i] = s->x_lo + (s->x_hi - s->x_lo) * i / (fit->ngrid - 1);
    int max_steps = 0;
    for (int k = 0; k < f->nsteps; k++)
        max_steps = f->steps[k] > max_steps ? f->steps[k] : max_steps;
    FitWork w;
    if (!work_alloc(f, &w))
        return false;
    size_t pbytes = p->nreal * rt_real_bytes(p->real);
    bool ok = true;
    for (int t = 0; ok && t < f->tasks; t++) {
        FitTask *task = &fit->task[t];
        uint64_t id = RT_EVAL_TASK | (uint64_t)t;
        rt_sinusoid_params(s, f->seed, id, &task->amp, &task->phase);
        rt_sinusoid_task(s, f->seed, id, p->real, w.sx, w.sy, w.qx, w.qy);
        task->sx = malloc((size_t)s->k * sizeof(double));
        task->sy = malloc((size_t)s->k * sizeof(double));
        for (int k = 0; k < f->nsteps; k++)
            ok &= (task->pred[k] = malloc((size_t)fit->ngrid * sizeof(double))) != NULL;
        if (!ok || !task->sx || !task->sy) {
            ok = false;
            break;
        }
        for (int i = 0; i < s->k; i++) {
            task->sx[i] = real_at(p->real, w.sx, i);
            task->sy[i] = real_at(p->real, w.sy, i);
        }
        memcpy(w.cur, f->params, pbytes);      /* reals outside every param keep their values */
        memcpy(w.next, f->params, pbytes);
        for (int step = 0; step <= max_steps; step++) {
            if (step > 0)
                fit_adapt(p, &w);
            for (int k = 0; k < f->nsteps; k++)
                if (f->steps[k] == step)
                    fit_predict(f, fit, &w, task->pred[k]);
        }
    }
    work_free(&w);
    return ok;
}

/* The colour and dash of the prediction after steps[k] inner steps. */
static const char *step_color(const PlotFit *f, int k) {
    static const char *const colors[] = {"#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
    return f->steps[k] == 0 ? "#7f7f7f" : colors[k % (int)(sizeof colors / sizeof *colors)];
}

static void draw_fit(FILE *out, const void *ctx) {
    const Fit *fit = ctx;
    const PlotFit *f = fit->f;
    double pw = 340, ph = 280, gap = 80, keyw = 230;
    double width = gap + f->tasks * (pw + gap) + keyw, height = ph + 140;
    svg_begin(out, width, height);
    char text[512];
    snprintf(text, sizeof text, "%s: held-out tasks, K = %d support points, before and after adaptation",
             f->title, fit->k);
    svg_text(out, width / 2, 26, "middle", 16, "bold", text);
    double *truth = malloc((size_t)fit->ngrid * sizeof *truth);
    for (int t = 0; truth && t < f->tasks; t++) {
        const FitTask *task = &fit->task[t];
        double lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < fit->ngrid; i++) {
            truth[i] = task->amp * sin(fit->grid[i] - task->phase);
            widen(&lo, &hi, truth[i], false);
        }
        for (int i = 0; i < fit->k; i++)
            widen(&lo, &hi, task->sy[i], false);
        /* the predictions, as far as they stay near the task */
        double span = hi - lo, tlo = lo - span, thi = hi + span;
        for (int k = 0; k < f->nsteps; k++)
            for (int i = 0; i < fit->ngrid; i++)
                if (task->pred[k][i] > tlo && task->pred[k][i] < thi)
                    widen(&lo, &hi, task->pred[k][i], false);
        double xlo = fit->grid[0], xhi = fit->grid[fit->ngrid - 1];
        svg_range(&lo, &hi, false);
        SvgChart ch = {.f = out, .id = t, .left = gap + t * (pw + gap), .top = 70, .width = pw, .height = ph,
                       .x0 = xlo, .x1 = xhi, .y0 = lo, .y1 = hi};
        snprintf(text, sizeof text, "task %d: A = %.2f, phase = %.2f", t + 1, task->amp, task->phase);
        svg_axes(&ch, text, "x", t == 0 ? "y" : NULL);
        svg_line(&ch, fit->grid, truth, fit->ngrid, "#d62728", 2.5, NULL);
        for (int k = 0; k < f->nsteps; k++)
            svg_line(&ch, fit->grid, task->pred[k], fit->ngrid, step_color(f, k), 2, f->steps[k] ? NULL : "6,4");
        svg_dots(&ch, task->sx, task->sy, fit->k, "#ff7f0e", 4.5);
    }
    free(truth);
    SvgKey key[MAX_POINTS + 2];
    char labels[MAX_POINTS][64];
    int nkey = 0;
    key[nkey++] = (SvgKey){"ground truth", "#d62728", NULL, true, false, false};
    key[nkey++] = (SvgKey){"support points", "#ff7f0e", NULL, false, true, false};
    for (int k = 0; k < f->nsteps; k++) {
        if (f->steps[k] == 0)
            snprintf(labels[k], sizeof labels[k], "before adaptation");
        else
            snprintf(labels[k], sizeof labels[k], "after %d inner step%s", f->steps[k], f->steps[k] == 1 ? "" : "s");
        key[nkey++] = (SvgKey){labels[k], step_color(f, k), f->steps[k] ? NULL : "6,4", true, false, false};
    }
    SvgChart area = {.f = out, .left = width - keyw - 10, .top = 70, .width = keyw, .height = ph};
    svg_legend(&area, key, nkey);
    svg_end(out);
}

bool plot_fit(const PlotFit *f, const char *out, Diag *d) {
    Fit fit = {.f = f};
    if (f->tasks < 1 || f->tasks > FIT_MAX_TASKS || f->nsteps > MAX_POINTS || f->q < 1) {
        diag_error(d, (SrcLoc){0}, "plot --fit draws 1 to %d tasks (--eval-tasks), not %d", FIT_MAX_TASKS, f->tasks);
        return false;
    }
    bool ok = fit_compute(f, &fit);
    if (!ok)
        diag_error(d, (SrcLoc){0}, "out of memory for the fit");
    ok = ok && write_svg(out, draw_fit, &fit, d);
    fit_free(&fit);
    return ok;
}
