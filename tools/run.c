/* mamlc run and mamlc eval: meta-training and evaluation with the JIT-
 * compiled functions, the model's task source, and checkpoints. */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/checkpoint.h"
#include "../runtime/images.h"
#include "../runtime/omniglot.h"
#include "../runtime/runtime.h"
#include "../runtime/tasks.h"
#include "family.h"
#include "plot.h"
#include "runlog.h"

typedef struct {
    RtProgram prog;
    RtParam *param;
    int *step_copy;             /* prog.step_copy */
    RtParam *ckparam;           /* the checkpoint's tensors: prog.param, then the running statistics */
    RtShape *ckshape;
    int nck;
    RtSinusoidSource sinusoid;
    RtOmniglotSource omniglot;
    RtOmniglot *train_data, *eval_data;
    RtTaskFile *train_tasks, *eval_tasks_file;  /* --tasks, --eval-tasks-file */
    RtTasksSource tasks;
    long eval_tasks;            /* evaluation over a task file: its tasks; 0: --eval-tasks */
    const BeOptions *be;        /* how the task family is compiled */
    RunFamily family;
    RtImagesSource images;
    RtImages *train_images, *eval_images;
} Run;

static void run_free(Run *r) {
    rt_omniglot_close(r->train_data);
    rt_omniglot_close(r->eval_data);
    rt_tasks_close(r->train_tasks);
    rt_tasks_close(r->eval_tasks_file);
    run_family_close(&r->family);
    rt_images_close(r->train_images);
    rt_images_close(r->eval_images);
    free(r->param);
    free(r->step_copy);
    for (int i = r->prog.nparam; i < r->nck; i++)
        free((char *)r->ckparam[i].name);
    free(r->ckparam);
    free(r->ckshape);
}

static const TaskArg *task_arg(const ModelTask *t, const char *name) {
    for (int i = 0; i < t->narg; i++)
        if (strcmp(t->arg[i].name, name) == 0)
            return &t->arg[i];
    return NULL;
}

static void range(const ModelTask *t, const char *name, double *lo, double *hi) {
    const TaskArg *a = task_arg(t, name);
    if (a) {
        *lo = a->lo;
        *hi = a->hi;
    }
}

RtSinusoid run_sinusoid(const ModelTask *t) {
    RtSinusoid s = {0.1, 5.0, 0.0, 3.14159265358979, -5.0, 5.0, t->support_x.dim[0], t->query_x.dim[0]};
    range(t, "amplitude", &s.amp_lo, &s.amp_hi);
    range(t, "phase", &s.phase_lo, &s.phase_hi);
    range(t, "x", &s.x_lo, &s.x_hi);
    return s;
}

static bool setup_sinusoid(const Model *md, Run *r) {
    r->sinusoid.sinusoid = run_sinusoid(&md->task);
    r->sinusoid.real = r->prog.real;
    r->prog.sample = rt_sinusoid_sample;
    r->prog.sample_ctx = &r->sinusoid;
    return true;
}

/* A path written in the model (a task's `path` or `split`): relative to the
 * model file's folder unless it is absolute.  Returns it, or a new string
 * in *owned (the caller frees it). */
static const char *model_path(const Model *md, const char *path, char **owned) {
    const char *slash = strrchr(md->file, '/');
    *owned = NULL;
    if (path[0] != '/' && slash && (*owned = malloc((size_t)(slash - md->file) + strlen(path) + 2)))
        sprintf(*owned, "%.*s/%s", (int)(slash - md->file), md->file, path);
    return *owned ? *owned : path;
}

/* One Omniglot split, loaded and checked against the task's shape. */
static RtOmniglot *open_omniglot(const char *path, const ModelTask *t, Diag *d) {
    char err[1024];
    const TaskArg *size = task_arg(t, "size"), *rot = task_arg(t, "rotations");
    int ways = (int)task_arg(t, "ways")->lo, shots = (int)task_arg(t, "shots")->lo;
    int queries = (int)task_arg(t, "queries")->lo;
    RtOmniglot *o = rt_omniglot_open(path, (int)size->lo, rot->lo != 0, err, sizeof err);
    if (o && !rt_omniglot_check(o, ways, shots, queries, err, sizeof err)) {
        rt_omniglot_close(o);
        o = NULL;
    }
    if (!o)
        diag_error(d, (SrcLoc){0}, "%s", err);
    return o;
}

/* Omniglot: meta-train on one split (the task's path, or --data), evaluate
 * on another (--eval-data), or say loudly that evaluation sees the training
 * alphabets. */
/* The process that prints, evaluates and writes files: rank 0, or the only one. */
static bool lead_process(const RunOptions *o) { return !o->cluster || o->cluster->rank == 0; }

static bool setup_omniglot(const Model *md, const RunOptions *o, Run *r, Diag *d) {
    const ModelTask *t = &md->task;
    /* a path in the model is relative to the model file; --data to the caller */
    char *joined = NULL;
    r->train_data = open_omniglot(o->data ? o->data : model_path(md, task_arg(t, "path")->str, &joined), t, d);
    free(joined);
    if (!r->train_data)
        return false;
    if (o->eval_data && !(r->eval_data = open_omniglot(o->eval_data, t, d)))
        return false;
    bool lead = lead_process(o);
    int shared = r->eval_data ? rt_omniglot_drop_alphabets(r->eval_data, r->train_data) : 0;
    if (shared && lead)
        fprintf(stderr, "mamlc: note: %d characters of %s belong to alphabets of the training split; "
                        "evaluation leaves them out\n", shared, o->eval_data);
    char err[1024];
    const TaskArg *ways = task_arg(t, "ways"), *shots = task_arg(t, "shots"), *queries = task_arg(t, "queries");
    if (r->eval_data && !rt_omniglot_check(r->eval_data, (int)ways->lo, (int)shots->lo, (int)queries->lo, err,
                                           sizeof err)) {
        diag_error(d, (SrcLoc){0}, "%s", err);
        return false;
    }
    if (!o->eval_data && lead)
        fprintf(stderr, "mamlc: warning: evaluating on the training split's alphabets; give --eval-data "
                        "with the other split for held-out ones\n");
    r->omniglot = (RtOmniglotSource){.data = r->train_data, .eval = r->eval_data,
                                     .ways = (int)task_arg(t, "ways")->lo, .shots = (int)task_arg(t, "shots")->lo,
                                     .queries = (int)task_arg(t, "queries")->lo, .real = r->prog.real};
    r->prog.sample = rt_omniglot_sample;
    r->prog.sample_ctx = &r->omniglot;
    return true;
}

/* A task family: its functions compiled, sampled by the runtime with a
 * buffer for each thread. */
static bool setup_family(const Model *md, const RunOptions *o, Run *r, Diag *d) {
    if (!run_family_open(&r->family, md, r->be, o->threads, d))
        return false;
    r->prog.sample = rt_family_sample;
    r->prog.sample_ctx = r->family.source;
    return true;
}

/* One image data set (a split CSV, or class folders when split is NULL),
 * loaded and checked against the task's counts; the lead process says what
 * it holds and how long it took. */
static RtImages *open_images(const char *path, const char *split, const ModelTask *t, const RunOptions *o, Diag *d) {
    const TaskArg *mean = task_arg(t, "mean"), *std = task_arg(t, "std");
    RtImagesSpec sp = {.size = (int)task_arg(t, "size")->lo, .channels = (int)task_arg(t, "channels")->lo,
                       .rotations = task_arg(t, "rotations")->lo != 0, .split = split, .nnorm = mean->nvalue};
    for (int c = 0; c < sp.nnorm && c < 3; c++) {
        sp.mean[c] = mean->value[c];
        sp.std[c] = std->value[c];
    }
    char err[1024];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    RtImages *im = rt_images_open(path, &sp, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (im && !rt_images_check(im, (int)task_arg(t, "ways")->lo, (int)task_arg(t, "shots")->lo,
                               (int)task_arg(t, "queries")->lo, err, sizeof err)) {
        rt_images_close(im);
        im = NULL;
    }
    if (!im)
        diag_error(d, (SrcLoc){0}, "%s", err);
    else if (lead_process(o))
        fprintf(stderr, "mamlc: %s: %d classes, %d images of %dx%dx%d (%zu bytes) loaded in %.2f s\n",
                rt_images_name(im), rt_images_classes(im), rt_images_count(im), sp.channels, sp.size, sp.size,
                rt_images_bytes(im), (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return im;
}

/* Image data sets: meta-train on the task's path (or --data) with its split,
 * evaluate on --eval-data and/or --eval-split (the training path with the
 * other CSV), or say loudly that evaluation sees the training classes.
 * mamlc eval with a held-out set leaves the training set unread. */
static bool setup_images(const Model *md, const RunOptions *o, Run *r, Diag *d) {
    const ModelTask *t = &md->task;
    const char *split = task_arg(t, "split")->str;
    char *own_path = NULL, *own_split = NULL;
    const char *path = o->data ? o->data : model_path(md, task_arg(t, "path")->str, &own_path);
    bool held_out = o->eval_data || o->eval_split, ok = true;
    if (o->train || !held_out)
        ok = (r->train_images = open_images(path, split[0] ? model_path(md, split, &own_split) : NULL, t, o, d)) != NULL;
    if (ok && held_out)
        ok = (r->eval_images = open_images(o->eval_data ? o->eval_data : path, o->eval_split, t, o, d)) != NULL;
    free(own_path);
    free(own_split);
    if (!ok)
        return false;
    if (!held_out && lead_process(o))
        fprintf(stderr, "mamlc: warning: evaluating on the training classes; give --eval-split or --eval-data "
                        "for held-out ones\n");
    r->images = (RtImagesSource){.data = r->train_images ? r->train_images : r->eval_images, .eval = r->eval_images,
                                 .ways = (int)task_arg(t, "ways")->lo, .shots = (int)task_arg(t, "shots")->lo,
                                 .queries = (int)task_arg(t, "queries")->lo, .real = r->prog.real};
    r->prog.sample = rt_images_sample;
    r->prog.sample_ctx = &r->images;
    return true;
}

bool run_reads_data(const Model *md) {
    return strcmp(md->task.kind, "omniglot") == 0 || strcmp(md->task.kind, "images") == 0;
}

/* An error message "path: what is wrong" from the runtime, as "path: error: ...". */
static void file_error(Diag *d, const char *path, const char *err) {
    size_t n = strlen(path);
    if (strncmp(err, path, n) == 0 && strncmp(err + n, ": ", 2) == 0)
        diag_error(d, (SrcLoc){path, 0, 0}, "%s", err + n + 2);
    else
        diag_error(d, (SrcLoc){0}, "%s", err);
}

/* A task file, loaded and checked against the model's task fields. */
static RtTaskFile *open_tasks(const char *path, const Model *md, RtReal real, bool lead, Diag *d) {
    const ModelTask *t = &md->task;
    const IrType *field[4] = {&t->support_x, &t->support_y, &t->query_x, &t->query_y};
    RtTaskLayout l = {.real = real};
    for (int k = 0; k < 4; k++)
        l.field[k] = (RtTaskField){field[k]->dtype == DT_I32, t->classes[k / 2][k % 2], field[k]->rank,
                                   field[k]->dim};
    char err[1024];
    RtTaskFile *f = rt_tasks_open(path, &l, err, sizeof err);
    if (!f)
        file_error(d, path, err);
    else if (lead)
        printf("loaded %" PRIu64 " tasks (%" PRIu64 " bytes) from %s\n", rt_tasks_count(f), rt_tasks_bytes(f),
               path);
    return f;
}

/* --tasks FILE: train on (or, for mamlc eval, evaluate) its tasks, whatever
 * the model's task kind; --eval-tasks-file: evaluate on that file's.  An
 * evaluation covers the file's tasks once each, or its first --eval-tasks. */
static bool setup_tasks(const Model *md, const RunOptions *o, Run *r, Diag *d) {
    bool lead = lead_process(o);
    if (!(r->train_tasks = open_tasks(o->tasks, md, r->prog.real, lead, d)) ||
        (o->eval_tasks_file && !(r->eval_tasks_file = open_tasks(o->eval_tasks_file, md, r->prog.real, lead, d))))
        return false;
    r->tasks = (RtTasksSource){r->train_tasks, r->eval_tasks_file};
    const char *path = o->eval_tasks_file ? o->eval_tasks_file : o->tasks;
    uint64_t count = rt_tasks_count(r->eval_tasks_file ? r->eval_tasks_file : r->train_tasks);
    if (o->eval_tasks_given && (uint64_t)o->eval_tasks > count) {
        diag_error(d, (SrcLoc){path, 0, 0}, "--eval-tasks %ld, but the file holds %" PRIu64 " tasks",
                   o->eval_tasks, count);
        return false;
    }
    if (!o->eval_tasks_given && count > 1000000) {
        diag_error(d, (SrcLoc){path, 0, 0}, "%" PRIu64 " tasks are too many to evaluate each: give "
                   "--eval-tasks N (at most 1000000) to evaluate the first N", count);
        return false;
    }
    r->eval_tasks = o->eval_tasks_given ? o->eval_tasks : (long)count;
    if (o->train && !o->eval_tasks_file && lead)
        fprintf(stderr, "mamlc: warning: evaluating on the training tasks of %s; give --eval-tasks-file "
                        "with held-out ones\n", o->tasks);
    r->prog.sample = rt_tasks_sample;
    r->prog.sample_ctx = &r->tasks;
    return true;
}

/* The task source the model declares, wired into the program (the frontend
 * has checked the task's shapes against its kind). */
static bool setup_source(const Model *md, const RunOptions *o, Run *r, Diag *d) {
    const char *kind = md->task.kind;
    if (o->eval_split && (o->tasks || strcmp(kind, "images") != 0)) {
        diag_error(d, md->task.loc, o->tasks ? "--eval-split goes with a task 'images', not with --tasks"
                                             : "--eval-split needs a task 'images', not '%s'", kind);
        return false;
    }
    if (o->tasks)
        return setup_tasks(md, o, r, d);
    if (strcmp(kind, "sinusoid") == 0)
        return setup_sinusoid(md, r);
    if (strcmp(kind, "omniglot") == 0)
        return setup_omniglot(md, o, r, d);
    if (md->task.family)
        return setup_family(md, o, r, d);
    if (strcmp(kind, "images") == 0)
        return setup_images(md, o, r, d);
    diag_error(d, md->task.loc, "'mamlc run' has no data source for task '%s': "
                                "give --tasks FILE.safetensors, or call the model's library", kind);
    return false;
}

/* --- the official 20-way one-shot runs --- */

typedef struct {
    const RtOmniglotRuns *runs;
    int run;
    RtReal real;
} RunsSource;

static void runs_sample(const void *ctx, uint64_t seed, uint64_t task, void *sx, void *sy, void *qx, void *qy) {
    const RunsSource *s = ctx;
    rt_omniglot_runs_task(s->runs, s->run, s->real, sx, sy, qx, qy);
}

/* mamlc eval --omniglot-runs: adapt on each run's training images with the
 * model's inner rule (inner_steps steps), classify its test images with
 * the metric, and print the error rate per run and overall. */
static bool omniglot_runs(const Model *md, const RunOptions *o, Run *r, const void *params, Diag *d) {
    const ModelTask *t = &md->task;
    char err[1024];
    if (strcmp(t->kind, "omniglot") != 0 || !md->has_metric) {
        diag_error(d, t->loc, "--omniglot-runs needs an omniglot task and a 'def metric' (accuracy)");
        return false;
    }
    RtOmniglotRuns *runs = rt_omniglot_runs_open(o->omniglot_runs, (int)task_arg(t, "size")->lo, err, sizeof err);
    if (!runs) {
        diag_error(d, (SrcLoc){0}, "%s", err);
        return false;
    }
    int ways = rt_omniglot_runs_ways(runs), tests = rt_omniglot_runs_tests(runs);
    if (t->support_x.dim[0] != ways || t->query_x.dim[0] != tests) {
        diag_error(d, t->loc, "the one-shot runs are %d-way with %d test images: compile the model with "
                              "ways = %d, shots = 1 and %d query images (here %d and %d)",
                   ways, tests, ways, tests, t->support_x.dim[0], t->query_x.dim[0]);
        rt_omniglot_runs_close(runs);
        return false;
    }
    RunsSource src = {runs, 0, r->prog.real};
    RtProgram p = r->prog;
    p.sample = runs_sample;
    p.sample_ctx = &src;
    int steps = md->meta.inner_steps;
    RtTrainOptions to = {.eval_tasks = 1, .nsteps = 1, .steps = &steps};
    double total = 0;
    bool ok = true;
    printf("%d-way one-shot runs, %d inner step%s:\n", ways, steps, steps == 1 ? "" : "s");
    for (src.run = 0; ok && src.run < rt_omniglot_runs_count(runs); src.run++) {
        RtEvalPoint pt;
        ok = rt_evaluate(&p, &to, params, &pt);
        printf("  run%02d  error %5.1f%%\n", src.run + 1, 100 * (1 - pt.metric));
        total += 1 - pt.metric;
    }
    if (ok)
        printf("  overall error %.1f%% (accuracy %.1f%%)\n", 100 * total / rt_omniglot_runs_count(runs),
               100 - 100 * total / rt_omniglot_runs_count(runs));
    rt_omniglot_runs_close(runs);
    return ok;
}

static bool entry(BeJit *j, IrModule *m, const char *name, RtEntry *e, Diag *d) {
    IrFunc *f = ir_module_find(m, name);
    e->fn = f ? (RtFn)be_jit_lookup(j, name) : NULL;
    e->arena_bytes = f ? be_arena_bytes(f) : 0;
    if (f && !e->fn) {
        diag_error(d, (SrcLoc){0}, "compiled function '%s' is missing", name);
        return false;
    }
    return true;
}

RtInit run_param_init(const ModelParam *mp) {
    static const RtInitKind kind[] = {
        [INIT_ZEROS] = RT_INIT_ZEROS, [INIT_ONES] = RT_INIT_ONES, [INIT_HE] = RT_INIT_HE,
        [INIT_GLOROT] = RT_INIT_GLOROT, [INIT_NORMAL] = RT_INIT_NORMAL,
        [INIT_UNIFORM] = RT_INIT_UNIFORM, [INIT_CONST] = RT_INIT_CONST};
    return (RtInit){kind[mp->init.kind], mp->init.a, mp->init.b, mp->type.rank, mp->type.dim};
}

size_t run_value_bytes(IrType t) { return (size_t)ir_numel(t) * ir_dtype_size(t.dtype); }

RtOptimizer run_optimizer(const MetaConfig *mc) {
    const OptimizerConfig *oc = &mc->optimizer;
    static const RtOptKind kind[] = {[OPT_ADAM] = RT_ADAM, [OPT_SGD] = RT_SGD, [OPT_ADAMW] = RT_ADAMW};
    return (RtOptimizer){.kind = kind[oc->kind], .lr = oc->lr, .beta1 = oc->beta1, .beta2 = oc->beta2,
                         .eps = oc->eps, .weight_decay = oc->weight_decay, .clip_norm = mc->clip_norm,
                         .cosine = oc->cosine, .min_lr = oc->min_lr, .t_max = mc->iterations};
}

/* RtProgram's step_copy for md (NULL if it has no per-step params), and S
 * into *copies. */
static int *step_copies(const Model *md, int *copies) {
    const MetaConfig *mc = &md->meta;
    int next = md->ntensor, *copy = NULL;
    *copies = mc->inner_steps;
    for (int i = 0; i < md->nparam; i++)
        next -= ir_meta_per_step(mc, i) ? mc->inner_steps - 1 : 0;
    for (int i = 0; mc->per_step && i < md->nparam; i++) {
        if (!copy)
            copy = malloc((size_t)md->ntensor * sizeof *copy);
        copy[i] = ir_meta_per_step(mc, i) ? next : -1;
        next += ir_meta_per_step(mc, i) ? mc->inner_steps - 1 : 0;
    }
    for (int i = md->nparam; copy && i < md->ntensor; i++)
        copy[i] = -1;
    return copy;
}

/* Batch norm's running statistics (MAML++'s BNRS, md->bn), S copies of L
 * reals after the nreal: the checkpoint's tensors bn.NAME.mean.s and
 * bn.NAME.var.s (r->ckparam, after the program's), and prog.nstat. */
static void running_tensors(const Model *md, Run *r) {
    RtProgram *p = &r->prog;
    int S = md->meta.inner_steps;
    size_t L = 0;
    for (int b = 0; b < md->nbn; b++)
        L += 2 * (size_t)md->bn[b].channels;
    p->nstat = (size_t)S * L;
    r->nck = p->nparam + 2 * S * md->nbn;
    r->ckparam = calloc((size_t)r->nck + 1, sizeof *r->ckparam);
    r->ckshape = calloc((size_t)r->nck + 1, sizeof *r->ckshape);
    for (int i = 0; i < p->nparam; i++) {
        r->ckparam[i] = r->param[i];
        r->ckshape[i] = (RtShape){md->param[i].type.rank, md->param[i].type.dim};
    }
    size_t at = p->nreal;
    for (int s = 0, k = p->nparam; s < S; s++)
        for (int b = 0; b < md->nbn; b++)
            for (int v = 0; v < 2; v++, k++) {
                size_t len = strlen(md->bn[b].name) + 32;
                char *name = malloc(len);
                snprintf(name, len, "bn.%s.%s.%d", md->bn[b].name, v ? "var" : "mean", s);
                r->ckparam[k] = (RtParam){name, at, (size_t)md->bn[b].channels, {0}};
                r->ckshape[k] = (RtShape){1, &md->bn[b].channels};
                at += (size_t)md->bn[b].channels;
            }
}

/* The running statistics' first values in params (after the nreal): means
 * 0 and variances 1, as torch.nn.BatchNorm's. */
static void init_running(const Run *r, void *params) {
    size_t rb = rt_real_bytes(r->prog.real);
    for (int k = r->prog.nparam; k < r->nck; k++)
        for (size_t e = 0; strstr(r->ckparam[k].name, ".var.") && e < r->ckparam[k].count; e++) {
            char *at = (char *)params + (r->ckparam[k].offset + e) * rb;
            if (r->prog.real == RT_F32)
                *(float *)at = 1;
            else
                *(double *)at = 1;
        }
}

static bool setup_program(const Model *md, BeJit *j, IrModule *m, Run *r, Diag *d) {
    RtProgram *p = &r->prog;
    p->nparam = md->ntensor;
    r->param = calloc((size_t)md->ntensor, sizeof *r->param);
    for (int i = 0; i < md->ntensor; i++) {
        const ModelParam *mp = &md->param[i];
        r->param[i] = (RtParam){mp->name, p->nreal, (size_t)ir_numel(mp->type), run_param_init(mp)};
        p->nreal += r->param[i].count;
    }
    p->param = r->param;
    p->step_copy = r->step_copy = step_copies(md, &p->step_copies);
    const ModelTask *t = &md->task;
    p->sx_bytes = run_value_bytes(t->support_x);
    p->sy_bytes = run_value_bytes(t->support_y);
    p->qx_bytes = run_value_bytes(t->query_x);
    p->qy_bytes = run_value_bytes(t->query_y);
    p->meta_batch = md->meta.meta_batch;
    p->optimizer = run_optimizer(&md->meta);
    p->first_until = md->meta.first_until;
    p->loss_weights = md->meta.msl_iterations ? md->meta.inner_steps : 0;
    p->msl_iterations = md->meta.msl_iterations;
    running_tensors(md, r);
    return entry(j, m, "meta_step", &p->meta_step, d) && entry(j, m, "adapt_step", &p->adapt_step, d) &&
           entry(j, m, "meta_step_first", &p->meta_step_first, d) &&
           entry(j, m, "eval_loss", &p->loss, d) && entry(j, m, "metric", &p->metric, d) &&
           (!p->nstat || (entry(j, m, "adapt_step.running", &p->adapt_running, d) &&
                          entry(j, m, "eval_loss.running", &p->loss_running, d) &&
                          entry(j, m, "metric.running", &p->metric_running, d)));
}


/* plot --fit: the trained model's fit to a few held-out tasks, before and
 * after adaptation (the caller has checked that the task is a sinusoid and
 * the model has `def net`). */
static bool run_fit(const Model *md, BeJit *j, IrModule *m, const Run *r, const void *params, const RunOptions *o,
                    Diag *d) {
    PlotFit f = {.prog = &r->prog, .q = md->task.query_x.dim[0], .sinusoid = &r->sinusoid.sinusoid,
                 .params = params, .seed = o->seed, .tasks = o->eval_tasks_given ? (int)o->eval_tasks : 3,
                 .steps = md->meta.eval_steps, .nsteps = md->meta.neval_steps, .title = md->file};
    if (!entry(j, m, "predict", &f.predict, d))
        return false;
    return plot_fit(&f, o->fit, d);
}

/* The final evaluation over `tasks` held-out tasks; +- is the half-width of
 * a 95% confidence interval.  With running statistics, which batch-norm
 * statistics it used. */
static void print_eval(const RtEvalPoint *pt, int n, long tasks, const RtTrainOptions *to, const RtProgram *p) {
    printf("held-out evaluation over %ld tasks%s (+- 95%% confidence):\n", tasks,
           !p->nstat ? "" : to->eval_running ? ", batch norm with running statistics"
                                            : ", batch norm with transductive statistics");
    for (int i = 0; i < n; i++) {
        printf("  after %2d inner step%s: loss %.6g +- %.2g", pt[i].steps, pt[i].steps == 1 ? " " : "s", pt[i].loss,
               pt[i].loss_ci);
        if (pt[i].has_metric)
            printf("  metric %.6g +- %.2g", pt[i].metric, pt[i].metric_ci);
        printf("\n");
    }
}

/* --eval-mode both: the final evaluation again with the other statistics
 * (to's mode flipped back afterwards). */
static bool eval_other_mode(const RtProgram *p, RtTrainOptions *to, const void *params, const RunOptions *o) {
    if (!o->eval_both)
        return true;
    RtEvalPoint pt[16];
    to->eval_running = !to->eval_running;
    bool ok = rt_evaluate(p, to, params, pt);
    if (ok)
        print_eval(pt, to->nsteps, to->eval_tasks, to, p);
    to->eval_running = !to->eval_running;
    return ok;
}

/* --expect-improvement: the held-out loss after the most inner steps that
 * are evaluated must be lower after training than before it (the same
 * tasks both times).  False after reporting through d. */
static bool check_improvement(const Model *md, const RtEvalPoint *before, const RtReport *rep, Diag *d) {
    int k = rep->neval - 1;
    if (k < 0)
        return true;
    if (rep->eval[k].loss < before[k].loss) {
        printf("improved: held-out loss after %d inner steps %.6g before training, %.6g after\n",
               before[k].steps, before[k].loss, rep->eval[k].loss);
        return true;
    }
    diag_error(d, md->meta.loc.file ? md->meta.loc : (SrcLoc){md->file, 0, 0},
               "--expect-improvement: the held-out loss after %d inner steps did not improve: %.6g before "
               "training, %.6g after", before[k].steps, before[k].loss, rep->eval[k].loss);
    return false;
}

/* A checkpoint of the run's flat vector (and optimiser state). */
typedef struct {
    RtCheckpoint ck;
    char fingerprint[RT_FINGERPRINT_SIZE];
} Checkpoint;

static void checkpoint_init(Checkpoint *c, const Model *md, const Run *r, void *params, void *state) {
    c->ck = (RtCheckpoint){.real = r->prog.real, .nparam = r->nck, .param = r->ckparam,   /* with bn.* */
                           .shape = r->ckshape, .nreal = r->prog.nreal + r->prog.nstat, .params = params,
                           .nstate = rt_opt_state_count(&r->prog.optimizer, r->prog.nreal), .state = state};
    rt_checkpoint_fingerprint(&c->ck, NULL, c->fingerprint);
    c->ck.model = c->fingerprint;
}

static bool checkpoint_io(Checkpoint *c, bool save, const char *path, Diag *d) {
    char err[1024];
    bool ok = save ? rt_checkpoint_save(path, &c->ck, err, sizeof err) : rt_checkpoint_load(path, &c->ck, err, sizeof err);
    if (!ok)
        file_error(d, path, err);
    return ok;
}

/* --checkpoint-every: the run's checkpoint, with the optimiser state, after
 * iteration `done` (rank 0 only). */
typedef struct {
    Checkpoint *c;
    const char *path;
    Diag *d;
    bool failed;
} Periodic;

static bool save_periodic(void *ctx, long done, const void *params, const void *opt_state) {
    Periodic *s = ctx;
    s->c->ck.has_state = true;
    s->c->ck.iteration = done;
    s->failed = !checkpoint_io(s->c, true, s->path, s->d);
    return !s->failed;
}

/* "meta-training FILE: ..." with how the work is shared, when it is. */
static void print_plan(const Model *md, const RtProgram *p, const RtTrainOptions *to) {
    printf("meta-training %s: %zu parameters, %d tasks per meta-batch, %ld iterations", md->file, p->nreal,
           p->meta_batch, to->iterations);
    if (to->nranks > 1)
        printf(", %d processes", to->nranks);
    if (to->threads > 1)
        printf(", %d threads%s", to->threads, to->nranks > 1 ? " each" : "");
    printf(to->start ? " (resuming after %ld)\n" : "\n", to->start);
    fflush(stdout);
}

int run_model(const Model *md, IrModule *m, const BeOptions *be, const RunOptions *o, Diag *d) {
    /* the data first: a bad data set is refused before any compiling */
    Run r = {.prog.real = md->real == DT_F64 ? RT_F64 : RT_F32, .be = be};
    bool ok = setup_source(md, o, &r, d);
    BeJit *j = ok ? be_jit_compile(m, be, d) : NULL;
    ok = j && setup_program(md, j, m, &r, d);
    if (ok && (o->eval_mode || o->eval_both) && !r.prog.nstat) {
        diag_error(d, md->meta.loc.file ? md->meta.loc : (SrcLoc){md->file, 0, 0}, "--eval-mode needs running "
                   "statistics: a batch_norm, and 'eval_mode' in the meta block");
        ok = false;
    }
    size_t rb = ir_dtype_size(md->real), nstate = ok ? rt_opt_state_count(&r.prog.optimizer, r.prog.nreal) : 0;
    void *params = ok ? calloc(r.prog.nreal + r.prog.nstat + 1, rb) : NULL;     /* then the running statistics */
    void *state = ok ? calloc(nstate + 1, rb) : NULL;
    if (ok && (!params || !state)) {
        diag_error(d, (SrcLoc){0}, "out of memory for %zu parameters", r.prog.nreal);
        ok = false;
    }
    Checkpoint c = {0};
    if (ok) {
        rt_init_params(&r.prog, o->seed, params);
        init_running(&r, params);
        checkpoint_init(&c, md, &r, params, state);
        c.ck.has_state = o->train;
        const char *from = o->train ? o->resume : o->load;
        ok = !from || checkpoint_io(&c, false, from, d);
    }
    long iterations = o->iters ? o->iters : md->meta.iterations;
    if (ok && o->train && o->resume && c.ck.iteration >= iterations) {
        diag_error(d, (SrcLoc){o->resume, 0, 0}, "the checkpoint is already at iteration %ld, and %s is %ld: "
                   "nothing is left to train (give --iters above %ld)", c.ck.iteration,
                   o->iters ? "--iters" : "the model's 'iterations'", iterations, c.ck.iteration);
        ok = false;
    }
    const RunCluster *cl = o->cluster;
    bool lead = lead_process(o);
    if (ok && lead && o->train && o->resume && !o->save)
        fprintf(stderr, "mamlc: warning: --resume without --save: the training goes on but nothing is saved "
                        "(give --save %s to continue it in place)\n", o->resume);
    RunLog log = {.fd = -1};
    bool logs = ok && lead && (o->log || o->report);     /* the log, or the report's config and history */
    if (logs && !runlog_open(&log, o->log, o->train && o->resume)) {
        diag_error(d, (SrcLoc){o->log, 0, 0}, "cannot write the log: %s", strerror(errno));
        ok = logs = false;
    }
    Periodic periodic = {&c, o->save, d, false};
    RtTrainOptions to = {
        .iterations = iterations,
        .start = o->resume ? c.ck.iteration : 0,
        .opt_state = state,
        .seed = o->seed,
        .eval_every = o->eval_every,
        .eval_tasks = lead ? (int)(r.eval_tasks ? r.eval_tasks : o->eval_tasks) : 0,
        .nsteps = md->meta.neval_steps,
        .steps = md->meta.eval_steps,
        .progress = !o->quiet && lead,
        .log = lead ? stdout : NULL,
        .threads = o->threads,
        .rank = cl ? cl->rank : 0,
        .nranks = cl ? cl->size : 1,
        .gather = cl ? cl->gather : NULL,
        .gather_ctx = cl ? cl->gather_ctx : NULL,
        .checkpoint_every = o->checkpoint_every,
        .checkpoint = lead && o->save ? save_periodic : NULL,
        .checkpoint_ctx = &periodic,
        .progress_every = o->log_every,
        .on_progress = logs && o->log ? runlog_train : NULL,
        .on_eval = logs ? runlog_eval : NULL,
        .hook_ctx = &log,
        .eval_running = (o->eval_mode ? o->eval_mode : md->meta.eval_mode) == EVAL_MODE_RUNNING_STATS,
    };
    if (logs)
        runlog_config(&log, md, be, o, o->train ? iterations : 0, to.start, to.eval_tasks);
    RtReport rep = {.iterations = to.start};
    bool improved = true;       /* --expect-improvement held (the outputs are kept either way) */
    if (ok && !o->train && lead && o->fit) {
        ok = run_fit(md, j, m, &r, params, o, d);
    } else if (ok && !o->train && lead && o->omniglot_runs) {   /* evaluation is rank 0's alone */
        ok = omniglot_runs(md, o, &r, params, d);
    } else if (ok && !o->train && lead) {
        rep.neval = to.nsteps;
        ok = rt_evaluate(&r.prog, &to, params, rep.eval);
        if (ok)
            print_eval(rep.eval, rep.neval, to.eval_tasks, &to, &r.prog);
        ok = ok && eval_other_mode(&r.prog, &to, params, o);
    } else if (ok && o->train) {
        RtEvalPoint before[16];
        bool evaluates = lead && to.eval_tasks > 0 && to.nsteps > 0, expect = o->expect_improvement && evaluates;
        if (lead)
            print_plan(md, &r.prog, &to);
        /* the log's held-out curves start where training does */
        ok = (!(expect || (evaluates && o->log)) || rt_evaluate(&r.prog, &to, params, before));
        if (ok && evaluates && o->log)
            runlog_eval(&log, to.start, before, to.nsteps);
        ok = ok && rt_train(&r.prog, &to, params, &rep);
        if (!ok && !rep.stopped)
            diag_error(d, (SrcLoc){0}, "meta-training failed: out of memory or threads");
        else if (!ok && !periodic.failed)
            diag_error(d, (SrcLoc){0}, "meta-training stopped after %ld iterations: the processes "
                                       "could not exchange their gradients", rep.iterations);
        if (ok && rep.diverged) {
            const char *what = rep.diverged == RT_DIVERGED_GRADIENT ? "the meta-gradient has a NaN or infinite value"
                               : rep.diverged == RT_DIVERGED_UPDATE ? "the update gives a NaN or infinite parameter"
                               : isnan(rep.final_meta_loss) ? "the meta-loss is NaN"
                                                             : "the meta-loss is infinite";
            diag_error(d, md->meta.loc.file ? md->meta.loc : (SrcLoc){md->file, 0, 0},
                       "%s at iteration %ld; training stopped, nothing saved (try a smaller inner_lr "
                       "or outer learning rate)", what, rep.iterations + 1);
            ok = false;
        }
        if (ok && lead) {
            printf("trained %ld iterations in %.1f s (%.0f steps/s)\n", rep.iterations, rep.seconds,
                   rep.steps_per_second);
            print_eval(rep.eval, rep.neval, to.eval_tasks, &to, &r.prog);
            ok = eval_other_mode(&r.prog, &to, params, o);
        }
        if (ok && lead && o->save) {
            c.ck.has_state = o->save_state || o->checkpoint_every > 0;
            c.ck.iteration = rep.iterations;
            ok = checkpoint_io(&c, true, o->save, d);
        }
        improved = !ok || !expect || check_improvement(md, before, &rep, d);
    }
    char *members = ok && logs && o->report ? runlog_report_members(&log, o->train) : NULL;
    if (ok && lead && o->report && (!members || !rt_write_report(o->report, &rep, members))) {
        diag_error(d, (SrcLoc){o->report, 0, 0}, "cannot write the report: %s", strerror(members ? errno : ENOMEM));
        ok = false;
    }
    free(members);
    if (logs && !runlog_close(&log)) {
        diag_error(d, (SrcLoc){o->log, 0, 0}, "the log is incomplete: a line could not be written: %s",
                   strerror(log.error));
        ok = false;
    }
    free(params);
    free(state);
    run_free(&r);
    be_jit_free(j);
    return ok && improved ? 0 : 1;
}

