/* The shared-library builder behind `mamlc FILE.mdl -o LIB.so`. */
#include "library.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../passes/passes.h"
#include "../runtime/abi.h"
#include "run.h"
#include "predict.h"

extern char **environ;

#define PREFIX "mamlc__"

/* --- a growable string --- */

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (b->n + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s)
            abort();
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* s as a JSON (and C) string literal body: quotes, backslashes and control
 * characters escaped. */
static void put_escaped(Buf *b, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(b, "\\%c", c);
        else if (c < 0x20)
            put(b, "\\u%04x", c);
        else
            put(b, "%c", c);
    }
}

static void put_shape(Buf *b, IrType t) {
    put(b, "[");
    for (int i = 0; i < t.rank; i++)
        put(b, i ? ", %d" : "%d", t.dim[i]);
    put(b, "]");
}

static const char *dtype_name(DType dt) { return dt == DT_I32 ? "i32" : ir_dtype_name(dt); }

/* An i32 field's "classes": labels in [0, classes), or null where the loss
 * does not one-hot encode them (any value goes). */
static void put_tensor_type(Buf *b, IrType t, int classes) {
    put(b, "{\"shape\": ");
    put_shape(b, t);
    put(b, ", \"dtype\": \"%s\"", dtype_name(t.dtype));
    if (t.dtype == DT_I32 && classes)
        put(b, ", \"classes\": %d", classes);
    else if (t.dtype == DT_I32)
        put(b, ", \"classes\": null");
    put(b, "}");
}

static const char *init_name(InitKind k) {
    static const char *const names[] = {"zeros", "ones", "he", "glorot", "normal", "uniform", "const"};
    return names[k];
}

/* The task's arguments as an object: numbers, [lo, hi] ranges, strings, booleans, lists. */
static void put_task_args(Buf *b, const ModelTask *t) {
    put(b, "{");
    for (int i = 0; i < t->narg; i++) {
        const TaskArg *a = &t->arg[i];
        put(b, i ? ", \"" : "\"");
        put_escaped(b, a->name);
        put(b, "\": ");
        if (a->is_string) {
            put(b, "\"");
            put_escaped(b, a->str);
            put(b, "\"");
        } else if (a->is_bool) {
            put(b, a->lo != 0 ? "true" : "false");
        } else if (a->is_list) {
            put(b, "[");
            for (int k = 0; k < a->nvalue; k++)
                put(b, k ? ", %.17g" : "%.17g", a->value[k]);
            put(b, "]");
        } else if (a->is_range) {
            put(b, "[%.17g, %.17g]", a->lo, a->hi);
        } else {
            put(b, "%.17g", a->lo);
        }
    }
    put(b, "}");
}

static void put_meta(Buf *b, const Model *md) {
    const MetaConfig *mc = &md->meta;
    static const char *const lr_kind[] = {"fixed", "learned", "learned_scalar", "learned_per_step"};
    static const char *const algorithm[] = {"maml", "reptile", "imaml"};
    put(b, "{\"algorithm\": \"%s\"", algorithm[mc->algorithm]);
    if (mc->algorithm == ALGO_REPTILE)
        put(b, ", \"epsilon\": %.17g", mc->epsilon);
    if (mc->algorithm == ALGO_IMAML)
        put(b, ", \"lambda\": %.17g, \"cg_steps\": %d", mc->lambda, mc->cg_steps);
    static const char *const order[] = {"second", "first", "anneal"};
    put(b, ", \"inner_steps\": %d, \"inner_lr\": %.17g, \"inner_lr_kind\": \"%s\", \"order\": \"%s\"",
        mc->inner_steps, mc->inner_lr, lr_kind[mc->inner_lr_kind], order[mc->order]);
    if (mc->order == ORDER_ANNEAL)
        put(b, ", \"first_until\": %ld", mc->first_until);
    if (mc->msl_iterations)
        put(b, ", \"multi_step_loss\": %ld", mc->msl_iterations);
    if (mc->clip_norm)
        put(b, ", \"clip_norm\": %.17g", mc->clip_norm);
    put(b, ", \"adapt\": [");
    for (int i = 0, k = 0; i < md->nparam; i++)
        if (mc->adapt[i]) {
            put(b, k++ ? ", \"" : "\"");
            put_escaped(b, md->param[i].name);
            put(b, "\"");
        }
    put(b, "], \"meta_batch\": %d, \"iterations\": %ld", mc->meta_batch, mc->iterations);
    const OptimizerConfig *oc = &mc->optimizer;
    if (oc->kind != OPT_SGD)
        put(b, ", \"optimizer\": {\"kind\": \"%s\", \"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, \"eps\": %.17g",
            oc->kind == OPT_ADAMW ? "adamw" : "adam", oc->lr, oc->beta1, oc->beta2, oc->eps);
    else
        put(b, ", \"optimizer\": {\"kind\": \"sgd\", \"lr\": %.17g", oc->lr);
    if (oc->weight_decay)
        put(b, ", \"weight_decay\": %.17g", oc->weight_decay);
    if (oc->cosine)
        put(b, ", \"schedule\": {\"kind\": \"cosine\", \"min_lr\": %.17g}", oc->min_lr);
    put(b, "}}");
}

/* What the library says about md's net (its errors reported on stderr,
 * where --emit=json has not lowered the model before). */
static LibPredict predict_info(const Model *md) {
    LibPredict pr;
    Diag d;
    diag_init(&d, stderr);
    lib_predict_info(md, &pr, &d);
    diag_free(&d);
    return pr;
}

/* The task kinds whose tasks the library draws itself (mamlc_sample_tasks). */
static bool samples(const Model *md) { return strcmp(md->task.kind, "sinusoid") == 0 || md->task.family; }

char *lib_model_json(const Model *md) {
    Buf b = {0};
    LibPredict pr = predict_info(md);
    put(&b, "{\"abi\": %d, \"dtype\": \"%s\", \"dims\": {", MAMLC_ABI, ir_dtype_name(md->real));
    for (int i = 0; i < md->ndim; i++) {
        put(&b, i ? ", \"" : "\"");
        put_escaped(&b, md->dim[i].name);
        put(&b, "\": %d", md->dim[i].value);
    }
    put(&b, "}, \"params\": [");
    size_t offset = 0;
    for (int i = 0; i < md->ntensor; i++) {
        const ModelParam *p = &md->param[i];
        put(&b, i ? ", {\"name\": \"" : "{\"name\": \"");
        put_escaped(&b, p->name);
        put(&b, "\", \"shape\": ");
        put_shape(&b, p->type);
        put(&b, ", \"offset\": %zu, \"init\": \"%s\"}", offset, init_name(p->init.kind));
        offset += (size_t)ir_numel(p->type);
    }
    const ModelTask *t = &md->task;
    put(&b, "], \"param_count\": %zu, \"task\": \"", offset);
    put_escaped(&b, t->kind);
    put(&b, "\", \"task_args\": ");
    put_task_args(&b, t);
    put(&b, ", \"support\": {\"x\": ");
    put_tensor_type(&b, t->support_x, t->classes[0][0]);
    put(&b, ", \"y\": ");
    put_tensor_type(&b, t->support_y, t->classes[0][1]);
    put(&b, "}, \"query\": {\"x\": ");
    put_tensor_type(&b, t->query_x, t->classes[1][0]);
    put(&b, ", \"y\": ");
    put_tensor_type(&b, t->query_y, t->classes[1][1]);
    put(&b, "}, \"predict\": %s", pr.present ? "true" : "false");
    if (pr.present) {
        put(&b, ", \"predict_shape\": ");
        put_shape(&b, pr.out);
        put(&b, ", \"predict_any_points\": %s", pr.any_points ? "true" : "false");
    }
    put(&b, ", \"metric\": %s, \"sample_tasks\": %s, \"meta\": ", md->has_metric ? "true" : "false",
        samples(md) ? "true" : "false");
    put_meta(&b, md);
    put(&b, "}");
    return b.s;
}

/* --- the header --- */

void lib_write_header(FILE *out, const Model *md) {
    const char *real = md->real == DT_F64 ? "double" : "float";
    size_t count = 0;
    for (int i = 0; i < md->ntensor; i++)
        count += (size_t)ir_numel(md->param[i].type);
    fprintf(out,
            "/* The C ABI (version %d) of a meta-training step compiled by mamlc from %s.\n"
            " * See docs/abi.md.  Arrays are row-major; a meta-batch of B tasks is laid\n"
            " * out task after task.  Labels declared i32 are int32_t. */\n"
            "#ifndef MAMLC_TRAIN_H\n"
            "#define MAMLC_TRAIN_H\n\n"
            "#include <stddef.h>\n"
            "#include <stdint.h>\n\n"
            "#ifdef __cplusplus\n"
            "extern \"C\" {\n"
            "#endif\n\n"
            "typedef %s mamlc_real;\n\n"
            "#define MAMLC_ABI_VERSION %d\n"
            "#define MAMLC_PARAM_COUNT %zu\n",
            MAMLC_ABI, md->file, real, MAMLC_ABI, count);
    const ModelTask *t = &md->task;
    const IrType types[4] = {t->support_x, t->support_y, t->query_x, t->query_y};
    const char *names[4] = {"SUPPORT_X", "SUPPORT_Y", "QUERY_X", "QUERY_Y"};
    for (int i = 0; i < 4; i++)
        fprintf(out, "#define MAMLC_%s_COUNT %lld   /* elements of one task's %s */\n", names[i],
                (long long)ir_numel(types[i]), types[i].dtype == DT_I32 ? "int32_t labels" : "reals");
    fprintf(out,
            "\n"
            "int         mamlc_abi_version(void);\n"
            "const char *mamlc_model_json(void);\n"
            "size_t      mamlc_param_count(void);\n"
            "size_t      mamlc_state_count(void);\n"
            "void        mamlc_init(mamlc_real *params, mamlc_real *state, uint64_t seed);\n"
            "mamlc_real  mamlc_meta_grad(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,\n"
            "                            const mamlc_real *qx, const void *qy, mamlc_real *grad);\n"
            "mamlc_real  mamlc_meta_step(mamlc_real *params, mamlc_real *state, int B, const mamlc_real *sx,\n"
            "                            const void *sy, const mamlc_real *qx, const void *qy);\n"
            "void        mamlc_adapt(const mamlc_real *params, int steps, const mamlc_real *sx, const void *sy,\n"
            "                        mamlc_real *adapted);\n"
            "mamlc_real  mamlc_loss(const mamlc_real *params, const mamlc_real *qx, const void *qy);\n"
            "void        mamlc_predict(const mamlc_real *params, const mamlc_real *qx, mamlc_real *out);\n"
            "\n"
            "/* Meta-steps without allocation, on threads, and split among processes. */\n"
            "typedef struct mamlc_workspace mamlc_workspace;\n"
            "mamlc_workspace *mamlc_workspace_new(int max_batch, int threads);\n"
            "void        mamlc_workspace_free(mamlc_workspace *ws);\n"
            "mamlc_real  mamlc_meta_grad_ws(mamlc_workspace *ws, const mamlc_real *params, int B, const mamlc_real *sx,\n"
            "                               const void *sy, const mamlc_real *qx, const void *qy, mamlc_real *grad);\n"
            "mamlc_real  mamlc_meta_step_ws(mamlc_workspace *ws, mamlc_real *params, mamlc_real *state, int B,\n"
            "                               const mamlc_real *sx, const void *sy, const mamlc_real *qx, const void *qy);\n"
            "void        mamlc_apply_grad(mamlc_real *params, mamlc_real *state, const mamlc_real *grad);\n"
            "int         mamlc_partial_count(int B, int first, int n);\n"
            "int         mamlc_meta_grad_tasks(mamlc_workspace *ws, const mamlc_real *params, int B, int first, int n,\n"
            "                                  const mamlc_real *sx, const void *sy, const mamlc_real *qx, const void *qy,\n"
            "                                  double *partial);\n"
            "mamlc_real  mamlc_meta_grad_reduce(mamlc_workspace *ws, int B, int nparts, const int *bound,\n"
            "                                   const double *partials, mamlc_real *grad);\n"
            "\n"
            "/* Version 2: the metric, predictions for any number of points, the model's own tasks. */\n"
            "mamlc_real  mamlc_metric(const mamlc_real *params, const mamlc_real *qx, const void *qy);\n"
            "int         mamlc_predict_points(const mamlc_real *params, size_t n, const mamlc_real *x, mamlc_real *out);\n"
            "int         mamlc_sample_tasks(uint64_t seed, uint64_t first, int n, mamlc_real *sx, void *sy,\n"
            "                               mamlc_real *qx, void *qy);\n"
            "\n"
            "/* Version 3: MAML++'s multi-step loss weights given by the caller. */\n"
            "int         mamlc_loss_weight_count(void);\n"
            "mamlc_real  mamlc_meta_grad_weighted(const mamlc_real *params, int B, const mamlc_real *sx, const void *sy,\n"
            "                                     const mamlc_real *qx, const void *qy, const mamlc_real *weights,\n"
            "                                     int nweights, mamlc_real *grad);\n"
            "mamlc_real  mamlc_meta_step_weighted(mamlc_real *params, mamlc_real *state, int B, const mamlc_real *sx,\n"
            "                                     const void *sy, const mamlc_real *qx, const void *qy,\n"
            "                                     const mamlc_real *weights, int nweights);\n"
            "\n"
            "#ifdef __cplusplus\n"
            "}\n"
            "#endif\n\n"
            "#endif\n");
}

/* --- the generated model file --- */

/* Function `name` as model.c calls it: PREFIX + name, dots as underscores
 * (the symbol itself, PREFIX + name, is given by an asm label). */
static void put_symbol(Buf *b, const char *name) {
    put(b, PREFIX);
    for (; *name; name++)
        put(b, "%c", *name == '.' ? '_' : *name);
}

static void put_declarations(Buf *b, const IrModule *m) {
    for (int i = 0; m && i < m->nfunc; i++) {
        put(b, "void ");
        put_symbol(b, m->func[i]->name);
        put(b, "(const void *const *, void *const *, void *) __asm__(\"" PREFIX "%s\");\n", m->func[i]->name);
    }
}

static void put_entry(Buf *b, const IrModule *m, const char *name) {
    IrFunc *f = m ? ir_module_find(m, name) : NULL;
    if (f) {
        put(b, "{");
        put_symbol(b, name);
        put(b, ", %zu}", be_arena_bytes(f));
    } else {
        put(b, "{0, 0}");
    }
}

/* The sinusoid's [lo, hi) ranges of amplitude, phase and x, as `mamlc run`
 * draws them (run_sinusoid). */
static void put_sinusoid(Buf *b, const ModelTask *t) {
    RtSinusoid s = run_sinusoid(t);
    put(b, "    .sinusoid = {%.17g, %.17g, %.17g, %.17g, %.17g, %.17g},\n", s.amp_lo, s.amp_hi, s.phase_lo, s.phase_hi,
        s.x_lo, s.x_hi);
}

/* A task family's draws (the variables', the support's, the query's) and
 * its functions, from fam (model_lower_family's). */
static void put_family(Buf *b, const ModelFamily *f, const IrModule *fam) {
    put(b, "    .draw = (const MamlcDraw[]){\n");
    const ModelDraw *lists[3] = {f->var, f->draw[0], f->draw[1]};
    const int counts[3] = {f->nvar, f->ndraw[0], f->ndraw[1]};
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < counts[l]; i++) {
            const ModelDraw *d = &lists[l][i];     /* kind: RtDrawKind, uniform 0 and normal 1 */
            put(b, "        {%d, %.17g, %.17g, %lld},\n", d->kind == DRAW_UNIFORM ? 0 : 1, d->a, d->b,
                (long long)ir_numel(d->type));
        }
    put(b, "        {0, 0, 0, 0}},\n    .nvar = %d, .ndraw = {%d, %d},\n    .family = {", f->nvar, f->ndraw[0],
        f->ndraw[1]);
    put_entry(b, fam, "family.support");
    put(b, ", ");
    put_entry(b, fam, "family.query");
    put(b, "},\n");
}

/* C source that describes md to runtime/abi.c as `mamlc__model`: its
 * step functions m and, for a task family, the family's functions fam. */
static char *model_source(const Model *md, const IrModule *m, const IrModule *fam) {
    Buf b = {0};
    put(&b, "/* Generated by mamlc from %s. */\n#include \"mamlc_abi.h\"\n\n", md->file);
    put_declarations(&b, m);
    put_declarations(&b, fam);
    for (int i = 0; i < md->ntensor; i++) {
        put(&b, "static const int dim%d[] = {", i);
        for (int k = 0; k < md->param[i].type.rank; k++)
            put(&b, "%d, ", md->param[i].type.dim[k]);
        put(&b, "0};\n");
    }
    put(&b, "static const MamlcTensor tensors[] = {\n");
    size_t offset = 0;
    for (int i = 0; i < md->ntensor; i++) {
        const ModelParam *p = &md->param[i];
        size_t count = (size_t)ir_numel(p->type);
        put(&b, "    {\"");
        put_escaped(&b, p->name);
        put(&b, "\", %zu, %zu, %d, %.17g, %.17g, %d, dim%d},\n", offset, count, (int)p->init.kind, p->init.a,
            p->init.b, p->type.rank, i);
        offset += count;
    }
    put(&b, "};\n\n__attribute__((visibility(\"hidden\"))) const MamlcModel mamlc__model = {\n");
    const ModelTask *t = &md->task;
    IrFunc *predict = ir_module_find(m, "predict");
    put(&b, "    .f64 = %d,\n    .nreal = %zu,\n    .ntensor = %d,\n    .tensor = tensors,\n", md->real == DT_F64,
        offset, md->ntensor);
    put(&b, "    .sx_bytes = %zu, .sy_bytes = %zu, .qx_bytes = %zu, .qy_bytes = %zu,\n",
        (size_t)ir_numel(t->support_x) * ir_dtype_size(t->support_x.dtype),
        (size_t)ir_numel(t->support_y) * ir_dtype_size(t->support_y.dtype),
        (size_t)ir_numel(t->query_x) * ir_dtype_size(t->query_x.dtype),
        (size_t)ir_numel(t->query_y) * ir_dtype_size(t->query_y.dtype));
    put(&b, "    .classes = {%d, %d, %d, %d},\n", t->classes[0][0], t->classes[0][1], t->classes[1][0],
        t->classes[1][1]);
    put(&b, "    .predict_count = %lld,\n", predict ? (long long)ir_numel(predict->node[predict->output[0]].type) : 0LL);
    const char *entries[5][2] = {{"meta_step", "meta_step"}, {"adapt_step", "adapt_step"}, {"loss", "eval_loss"},
                                 {"predict", "predict"}, {"metric", "metric"}};
    for (int i = 0; i < 5; i++) {
        put(&b, "    .%s = ", entries[i][0]);
        put_entry(&b, m, entries[i][1]);
        put(&b, ",\n");
    }
    RtOptimizer o = run_optimizer(&md->meta);
    put(&b, "    .optimizer = %d, .lr = %.17g, .beta1 = %.17g, .beta2 = %.17g, .eps = %.17g,\n", (int)o.kind, o.lr,
        o.beta1, o.beta2, o.eps);
    put(&b, "    .weight_decay = %.17g, .clip_norm = %.17g, .min_lr = %.17g, .cosine = %d, .t_max = %ld,\n",
        o.weight_decay, o.clip_norm, o.min_lr, o.cosine, o.t_max);
    put(&b, "    .meta_step_first = ");
    put_entry(&b, m, "meta_step_first");
    put(&b, ",\n    .first_until = %ld, .loss_weights = %d, .msl_iterations = %ld,\n", md->meta.first_until,
        md->meta.msl_iterations ? md->meta.inner_steps : 0, md->meta.msl_iterations);
    LibPredict pr = predict_info(md);
    put(&b, "    .query_points = %d,\n    .any_points = %d,\n", t->query_x.rank ? t->query_x.dim[0] : 1,
        pr.any_points);
    if (fam) {
        put(&b, "    .sampler = MAMLC_SAMPLE_FAMILY,\n");
        put_family(&b, t->family, fam);
    } else if (strcmp(t->kind, "sinusoid") == 0) {
        put(&b, "    .sampler = MAMLC_SAMPLE_SINUSOID,\n");
        put_sinusoid(&b, t);
    }
    char *json = lib_model_json(md);
    put(&b, "    .json = \"");
    put_escaped(&b, json);
    put(&b, "\",\n};\n");
    free(json);
    return b.s;
}

/* --- building --- */

/* The folder holding libmamlc_abi_*.a: beside this executable (a build
 * tree), or ../lib/mamlc from it (an installation). */
static bool abi_dir(char *dir, size_t size, const char *real, Diag *d) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        const char *tries[] = {"", "/../lib/mamlc"};
        for (int i = 0; i < 2; i++) {
            char lib[PATH_MAX + 64];
            snprintf(dir, size, "%s%s", exe, tries[i]);
            snprintf(lib, sizeof lib, "%s/libmamlc_abi_%s.a", dir, real);
            if (access(lib, R_OK) == 0)
                return true;
        }
    }
    diag_error(d, (SrcLoc){0}, "cannot find libmamlc_abi_%s.a beside the mamlc executable or in ../lib/mamlc", real);
    return false;
}

static bool write_text(const char *path, const char *text, Diag *d) {
    FILE *f = fopen(path, "w");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        diag_error(d, (SrcLoc){path, 0, 0}, "cannot write '%s': %s", path, strerror(errno));
    return ok;
}

/* Run argv (no shell) and wait; false after reporting if it fails. */
static bool run_command(char *const *argv, Diag *d) {
    pid_t pid;
    int err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ), status = 0;
    if (err) {
        diag_error(d, (SrcLoc){0}, "cannot run the C compiler '%s': %s", argv[0], strerror(err));
        return false;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    diag_error(d, (SrcLoc){0}, "the C compiler '%s' failed while linking the library", argv[0]);
    return false;
}

/* The library at path from tmp's model.c and the object files
 * be_emit_objects wrote from each base (nobj[k] from base[k], k < nbase),
 * with the ABI layer's archive from dir.
 * Its soname is the last component of path, exactly: passed by -Xlinker,
 * which the compiler driver hands on whole, where -Wl,-soname,NAME would
 * split NAME at its commas into more linker options. */
static bool link_library(const char *dir, const char *tmp, const char *const *base, const int *nobj, int nbase,
                         const char *real, bool cuda, const char *path, Diag *d) {
    char src[PATH_MAX], obj[2 * BE_MAX_PARTS][PATH_MAX + 16], inc[PATH_MAX + 2], abi[PATH_MAX + 32];
    char abi_cuda[PATH_MAX + 40];
    snprintf(abi_cuda, sizeof abi_cuda, "%s/libmamlc_abi_cuda_%s.a", dir, real);
    snprintf(src, sizeof src, "%s/model.c", tmp);
    snprintf(inc, sizeof inc, "-I%s", dir);
    snprintf(abi, sizeof abi, "%s/libmamlc_abi_%s.a", dir, real);
    const char *slash = strrchr(path, '/');
    char *soname = (char *)(slash ? slash + 1 : path);
    const char *cc = getenv("CC");
    char *argv[40] = {(char *)(cc && *cc ? cc : "cc"), "-shared", "-fPIC", "-O1", "-o", (char *)path, inc, src};
    int argc = 8, n = 0;
    for (int b = 0; b < nbase && b < 2; b++)
        for (int k = 0; k < nobj[b]; k++, n++) {
            be_object_path(obj[n], sizeof obj[n], base[b], k);
            argv[argc++] = obj[n];
        }
    char *rest[] = {"-Wl,--whole-archive", abi, "-Wl,--no-whole-archive", "-lm", "-pthread", "-Xlinker", "-soname",
                    "-Xlinker", soname, "-Wl,--no-undefined", "-Wl,-z,noexecstack", NULL};
    if (cuda) {     /* --device cuda: the GPU half of the ABI (runtime/abi_cuda.c) */
        argv[argc++] = "-Wl,--whole-archive";
        argv[argc++] = abi_cuda;
    }
    memcpy(argv + argc, rest, sizeof rest);
    return run_command(argv, d);
}

char *lib_header_path(const char *path) {
    size_t n = strlen(path);
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        n = (size_t)(dot - path);
    char *h = malloc(n + 3);
    if (h) {
        memcpy(h, path, n);
        strcpy(h + n, ".h");
    }
    return h;
}

/* md's task family lowered and optimised as `mamlc run` compiles it
 * (tools/family.c), or NULL after reporting through d. */
static IrModule *family_module(const Model *md, Diag *d) {
    PassOptions po = {.out = stdout};
    IrModule *fam = model_lower_family(md, d);
    for (int i = 0; fam && i < fam->nfunc; i++)
        if (!pass_optimize(fam->func[i], &po, d)) {
            ir_module_free(fam);
            return NULL;
        }
    return fam;
}

bool lib_build(const Model *md, const IrModule *m, const char *path, const char *header, const BeOptions *o,
               const char *gpu_source, Diag *d) {
    const char *real = md->real == DT_F64 ? "f64" : "f32";
    char dir[PATH_MAX], tmp[] = "/tmp/mamlc-XXXXXX", obj[2][PATH_MAX], src[PATH_MAX];
    if (md->nbn) {
        diag_error(d, md->meta.loc, "the library ABI has no running statistics of batch norm yet: leave "
                   "'eval_mode' out of the meta block to build one");
        return false;
    }
    if (!abi_dir(dir, sizeof dir, real, d))
        return false;
    IrModule *fam = md->task.family ? family_module(md, d) : NULL;
    if (md->task.family && !fam)
        return false;
    if (!mkdtemp(tmp)) {
        diag_error(d, (SrcLoc){0}, "cannot make a temporary folder: %s", strerror(errno));
        ir_module_free(fam);
        return false;
    }
    snprintf(obj[0], sizeof obj[0], "%s/model", tmp);
    snprintf(obj[1], sizeof obj[1], "%s/family", tmp);
    snprintf(src, sizeof src, "%s/model.c", tmp);
    char *source = model_source(md, m, fam);
    if (source && gpu_source) {
        Buf b = {source, strlen(source), strlen(source) + 1};
        put(&b, "%s", gpu_source);
        source = b.s;
    }
    const char *base[2] = {obj[0], obj[1]};
    int nobj[2] = {be_emit_objects(m, obj[0], PREFIX, o, d), 0};
    bool ok = nobj[0] > 0 && (!fam || (nobj[1] = be_emit_objects(fam, obj[1], PREFIX, o, d)) > 0) &&
              write_text(src, source, d) &&
              link_library(dir, tmp, base, nobj, fam ? 2 : 1, real, gpu_source != NULL, path, d);
    free(source);
    ir_module_free(fam);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < BE_MAX_PARTS; k++) {
            char part[PATH_MAX + 16];
            be_object_path(part, sizeof part, obj[b], k);
            unlink(part);
        }
    unlink(src);
    rmdir(tmp);
    if (ok) {
        FILE *f = fopen(header, "w");
        if (f)
            lib_write_header(f, md);
        if (!f || fclose(f) != 0) {
            diag_error(d, (SrcLoc){header, 0, 0}, "cannot write the header: %s", strerror(errno));
            ok = false;
        }
    }
    return ok;
}
