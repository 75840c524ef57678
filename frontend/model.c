/* Loading a model: read the file, parse it, and check everything outside
 * the function bodies: redefinitions, dims (with -D overrides), params and
 * their initialisers, the task and the meta block.  The bodies are checked
 * by frontend/resolve.c (names, arities) and then by trial-lowering `loss`
 * and `metric` with the task's shapes (frontend/lower.c). */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

typedef struct {
    ModelImpl *mi;
    Model *m;
    Diag *d;
    const ModelOptions *opt;
    AstMap names;               /* dim/param/def name -> index in decl */
    const Ast **decl;           /* the program's declarations */
    const Ast *task, *meta;     /* the first of each, or NULL */
    const Ast *adapt;           /* the `adapt = [..]` entry in force, or NULL */
} Check;

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "mamlc: out of memory\n");
        abort();
    }
    return p;
}

static const char *decl_what(const Ast *n) {
    switch (n->kind) {
    case AST_DIM: return "dim";
    case AST_PARAM: return "param";
    case AST_DEF: return "function";
    case AST_TASK: return "task";
    default: return "meta block";
    }
}

/* --- literals and dim expressions --- */

bool model_number_literal(const Ast *n, double *out) {
    if (n->kind == AST_NUM) {
        *out = n->num.value;
        return true;
    }
    if (n->kind == AST_NEG && model_number_literal(n->neg.operand, out)) {
        *out = -*out;
        return true;
    }
    return false;
}

bool model_int_literal(const Ast *n, int64_t *out) {
    double v;
    const Ast *lit = n->kind == AST_NEG ? n->neg.operand : n;
    if (lit->kind != AST_NUM || !lit->num.is_int || !model_number_literal(n, &v))
        return false;
    if (fabs(v) > (double)IR_MAX_NUMEL)
        return false;
    *out = (int64_t)v;
    return true;
}

bool model_is_minus_one(const Ast *n) {
    int64_t v;
    return n->kind == AST_NEG && model_int_literal(n, &v) && v == -1;
}

static bool dim_overflow(const Ast *n, int64_t v, Diag *d) {
    if (v >= -IR_MAX_NUMEL && v <= IR_MAX_NUMEL)
        return false;
    diag_error(d, n->loc, "dim expression overflows (more than %lld)", (long long)IR_MAX_NUMEL);
    return true;
}

static bool dim_name(const ModelImpl *mi, const Ast *n, int64_t *out, Diag *d) {
    const int *i = ast_map_get(&mi->dims, n->name.id);
    if (i) {
        *out = mi->pub.dim[*i].value;
        return true;
    }
    if (ast_map_get(&mi->params, n->name.id))
        diag_error(d, n->loc, "'%s' is a param; only dims and integers can give a size", n->name.id);
    else
        diag_error(d, n->loc, "unknown dim '%s'", n->name.id);
    return false;
}

bool model_dim_expr(const ModelImpl *mi, const Ast *n, int64_t *out, Diag *d) {
    int64_t a, b;
    switch (n->kind) {
    case AST_NUM:
        if (!n->num.is_int) {
            diag_error(d, n->loc, "a size must be an integer, not '%s'", n->num.text);
            return false;
        }
        if (n->num.value > (double)IR_MAX_NUMEL) {
            diag_error(d, n->loc, "integer '%s' is too large for a size", n->num.text);
            return false;
        }
        *out = (int64_t)n->num.value;
        return true;
    case AST_NAME:
        return dim_name(mi, n, out, d);
    case AST_NEG:
        if (!model_dim_expr(mi, n->neg.operand, &a, d))
            return false;
        *out = -a;
        return true;
    case AST_BINARY:
        if (n->binary.op != BIN_ADD && n->binary.op != BIN_SUB && n->binary.op != BIN_MUL)
            break;
        if (!model_dim_expr(mi, n->binary.lhs, &a, d) || !model_dim_expr(mi, n->binary.rhs, &b, d))
            return false;
        /* |a|, |b| <= 2^31, so none of these overflows int64_t */
        *out = n->binary.op == BIN_ADD ? a + b : n->binary.op == BIN_SUB ? a - b : a * b;
        return !dim_overflow(n, *out, d);
    default:
        break;
    }
    diag_error(d, n->loc, "a size may only use integers, dims, '+', '-', '*' and parentheses");
    return false;
}

bool model_extent(const ModelImpl *mi, const Ast *n, int *out, Diag *d) {
    int64_t v;
    if (!model_dim_expr(mi, n, &v, d))
        return false;
    if (v < 1 || v > IR_MAX_DIM) {
        diag_error(d, n->loc, "size %lld is out of range (must be 1 to %d)", (long long)v, IR_MAX_DIM);
        return false;
    }
    *out = (int)v;
    return true;
}

/* A shape to a type: rank, extents and element count within IR limits. */
static bool check_shape(Check *c, const Ast *shape, DType dt, IrType *out) {
    const AstList *e = &shape->shape.extent;
    if (e->n > IR_MAX_RANK) {
        diag_error(c->d, shape->loc, "shape has %d dimensions; at most %d are allowed", e->n, IR_MAX_RANK);
        return false;
    }
    int dim[IR_MAX_RANK];
    int64_t numel = 1;
    bool ok = true;
    for (int i = 0; i < e->n; i++) {
        ok &= model_extent(c->mi, e->item[i], &dim[i], c->d);
        if (ok)
            numel *= dim[i];    /* <= 2^31 * 2^24 before the check below */
        if (ok && numel > IR_MAX_NUMEL) {
            diag_error(c->d, shape->loc, "shape has more than %lld elements", (long long)IR_MAX_NUMEL);
            return false;
        }
    }
    if (ok)
        *out = ir_type(dt, e->n, dim);
    return ok;
}

/* --- keyword-argument binding, shared by initialisers and the meta block --- */

typedef struct {
    const char *name;
    double def;                 /* value when not given */
    bool required;
} ArgSpec;

static void spec_names(const ArgSpec *spec, int n, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", spec[i].name);
}

/* Bind the arguments of `call` (positional, then keyword; each a number
 * literal) to spec; out[i] receives spec[i]'s value.  A plain name (adam)
 * binds no arguments. */
static bool bind_numbers(Check *c, const Ast *call, const ArgSpec *spec, int n, double *out) {
    const Ast *given[8] = {0};
    const char *fn = call->kind == AST_CALL ? call->call.callee : call->name.id;
    bool ok = true, keywords = false;
    int nargs = call->kind == AST_CALL ? call->call.arg.n : 0;
    char names[128];
    spec_names(spec, n, names, sizeof names);
    for (int i = 0; i < nargs; i++) {
        const Ast *a = call->call.arg.item[i], *value = a;
        int slot = i;
        if (a->kind == AST_KWARG) {
            keywords = true;
            value = a->kwarg.value;
            for (slot = 0; slot < n && strcmp(spec[slot].name, a->kwarg.key) != 0; slot++)
                ;
            if (slot == n) {
                diag_error(c->d, a->loc, "'%s' has no argument '%s' (it takes %s)", fn, a->kwarg.key, names);
                ok = false;
                continue;
            }
        } else if (keywords) {
            diag_error(c->d, a->loc, "positional argument after a keyword argument");
            ok = false;
            continue;
        } else if (i >= n && n == 0) {
            diag_error(c->d, a->loc, "'%s' takes no arguments", fn);
            ok = false;
            continue;
        } else if (i >= n) {
            diag_error(c->d, a->loc, "'%s' takes at most %d argument%s (%s)", fn, n, n == 1 ? "" : "s", names);
            ok = false;
            continue;
        }
        if (given[slot]) {
            diag_error(c->d, a->loc, "argument '%s' of '%s' is given twice", spec[slot].name, fn);
            diag_note(c->d, given[slot]->loc, "first given here");
            ok = false;
            continue;
        }
        given[slot] = a;
        if (!model_number_literal(value, &out[slot])) {
            diag_error(c->d, value->loc, "argument '%s' of '%s' must be a number", spec[slot].name, fn);
            ok = false;
        }
    }
    for (int i = 0; i < n; i++) {
        if (given[i])
            continue;
        if (spec[i].required) {
            diag_error(c->d, call->loc, "'%s' needs argument '%s'", fn, spec[i].name);
            ok = false;
        }
        out[i] = spec[i].def;
    }
    return ok;
}

/* --- declarations --- */

/* Put every declaration in its place; report redefinitions. */
static void collect(Check *c) {
    const AstList *decls = &c->m->ast->program.decl;
    c->decl = (const Ast **)decls->item;
    for (int i = 0; i < decls->n; i++) {
        const Ast *n = decls->item[i];
        const Ast **single = n->kind == AST_TASK ? &c->task : n->kind == AST_META ? &c->meta : NULL;
        if (single) {
            if (*single) {
                diag_error(c->d, n->loc, "more than one %s", decl_what(n));
                diag_note(c->d, (*single)->loc, "the first %s is here", decl_what(n));
            } else {
                *single = n;
            }
            continue;
        }
        const char *name = n->kind == AST_DIM ? n->dim.name : n->kind == AST_PARAM ? n->param.name : n->def.name;
        const int *prev = ast_map_get(&c->names, name);
        if (prev) {
            diag_error(c->d, n->loc, "redefinition of '%s'", name);
            diag_note(c->d, c->decl[*prev]->loc, "'%s' was first defined here as a %s", name, decl_what(c->decl[*prev]));
            continue;
        }
        if (n->kind == AST_DEF && model_builtin(name)) {
            diag_error(c->d, n->loc, "'%s' is a builtin function and cannot be redefined", name);
            continue;
        }
        ast_map_put(&c->names, name, i);
        if (n->kind == AST_DIM)
            c->m->ndim++;
        else if (n->kind == AST_PARAM)
            c->m->nparam++;
        else
            c->mi->ndef++;
    }
}

/* The -D value for dim `name`, if any (the last one given wins). */
static const DimOverride *find_define(const Check *c, const char *name) {
    const DimOverride *found = NULL;
    for (int i = 0; c->opt && i < c->opt->ndefines; i++)
        if (strcmp(c->opt->defines[i].name, name) == 0)
            found = &c->opt->defines[i];
    return found;
}

static void check_defines(Check *c) {
    SrcLoc file = {c->m->file, 0, 0};
    for (int i = 0; c->opt && i < c->opt->ndefines; i++) {
        const DimOverride *o = &c->opt->defines[i];
        const int *at = ast_map_get(&c->names, o->name);
        if (!at || c->decl[*at]->kind != AST_DIM)
            diag_error(c->d, file, "-D %s=%d: the model has no 'dim %s'", o->name, o->value, o->name);
        else if (o->value < 1 || o->value > IR_MAX_DIM)
            diag_error(c->d, file, "-D %s=%d: a dim must be 1 to %d", o->name, o->value, IR_MAX_DIM);
    }
}

/* Dims in source order; each may use the dims before it. */
static void check_dims(Check *c) {
    Model *m = c->m;
    m->dim = arena_alloc(&m->arena, (size_t)(m->ndim ? m->ndim : 1) * sizeof *m->dim);
    int k = 0;
    for (int i = 0; i < m->ast->program.decl.n; i++) {
        const Ast *n = c->decl[i];
        const int *at = n->kind == AST_DIM ? ast_map_get(&c->names, n->dim.name) : NULL;
        if (!at || *at != i)
            continue;
        const DimOverride *o = find_define(c, n->dim.name);
        int value = 1;
        if (o)
            value = o->value;
        else
            model_extent(c->mi, n->dim.value, &value, c->d);
        m->dim[k] = (ModelDim){n->dim.name, value, n->loc};
        ast_map_put(&c->mi->dims, n->dim.name, k++);
    }
}

typedef struct {
    const char *name;
    InitKind kind;
    int nargs;
    ArgSpec arg[2];
} InitSpec;

static const InitSpec init_specs[] = {
    {"zeros", INIT_ZEROS, 0, {{0}}},
    {"ones", INIT_ONES, 0, {{0}}},
    {"he", INIT_HE, 0, {{0}}},
    {"glorot", INIT_GLOROT, 0, {{0}}},
    {"normal", INIT_NORMAL, 1, {{"std", 0, true}}},
    {"uniform", INIT_UNIFORM, 2, {{"lo", 0, true}, {"hi", 0, true}}},
    {"const", INIT_CONST, 1, {{"value", 0, true}}},
};
#define NINIT_SPECS (int)(sizeof init_specs / sizeof init_specs[0])

static bool check_init(Check *c, const Ast *n, ParamInit *out) {
    const char *name = n->kind == AST_NAME ? n->name.id : n->kind == AST_CALL ? n->call.callee : NULL;
    const InitSpec *s = NULL;
    for (int i = 0; name && i < NINIT_SPECS; i++)
        if (strcmp(init_specs[i].name, name) == 0)
            s = &init_specs[i];
    if (!s) {
        diag_error(c->d, n->loc, "expected an initialiser: zeros, ones, he, glorot, normal(std), "
                                 "uniform(lo, hi) or const(value)");
        return false;
    }
    if (s->nargs && n->kind == AST_NAME) {
        diag_error(c->d, n->loc, "'%s' needs arguments: %s", s->name,
                   s->kind == INIT_NORMAL ? "normal(std)" : s->kind == INIT_UNIFORM ? "uniform(lo, hi)" : "const(value)");
        return false;
    }
    double v[2] = {0, 0};
    if (!bind_numbers(c, n, s->arg, s->nargs, v))
        return false;
    *out = (ParamInit){s->kind, v[0], v[1]};
    if (s->kind == INIT_NORMAL && !(v[0] > 0)) {
        diag_error(c->d, n->loc, "the std of 'normal' must be positive");
        return false;
    }
    if (s->kind == INIT_UNIFORM && !(v[0] < v[1])) {
        diag_error(c->d, n->loc, "'uniform(lo, hi)' needs lo < hi");
        return false;
    }
    return true;
}

static void check_params(Check *c) {
    Model *m = c->m;
    m->param = arena_alloc(&m->arena, (size_t)(m->nparam ? m->nparam : 1) * sizeof *m->param);
    int k = 0;
    for (int i = 0; i < m->ast->program.decl.n; i++) {
        const Ast *n = c->decl[i];
        const int *at = n->kind == AST_PARAM ? ast_map_get(&c->names, n->param.name) : NULL;
        if (!at || *at != i)
            continue;
        ModelParam *p = &m->param[k];
        *p = (ModelParam){.name = n->param.name, .type = ir_scalar(m->real), .loc = n->loc, .lr_for = -1,
                          .decl = n->param.name};
        const Ast *opt = n->param.option;
        if (opt && strcmp(opt->name.id, "per_step") != 0)
            diag_error(c->d, opt->loc, "unknown param option '%s'; expected 'per_step' or ';'", opt->name.id);
        p->per_step = opt != NULL;
        if (n->param.shape->shape.dtype)
            diag_error(c->d, n->param.shape->loc, "params are real; drop the element type '%s'",
                       n->param.shape->shape.dtype);
        else
            check_shape(c, n->param.shape, m->real, &p->type);
        check_init(c, n->param.init, &p->init);
        ast_map_put(&c->mi->params, n->param.name, k++);
    }
}

static void collect_defs(Check *c) {
    ModelImpl *mi = c->mi;
    mi->def = arena_alloc(&c->m->arena, (size_t)(mi->ndef ? mi->ndef : 1) * sizeof *mi->def);
    int k = 0;
    for (int i = 0; i < c->m->ast->program.decl.n; i++) {
        const Ast *n = c->decl[i];
        const int *at = n->kind == AST_DEF ? ast_map_get(&c->names, n->def.name) : NULL;
        if (!at || *at != i)
            continue;
        mi->def[k] = n;
        ast_map_put(&mi->defs, n->def.name, k++);
    }
    mi->ndef = k;
}

/* --- the task --- */

typedef enum { TARG_RANGE, TARG_NUMBER, TARG_STRING, TARG_BOOL, TARG_LIST } TaskArgType;

typedef struct {
    const char *name;
    TaskArgType type;
    double lo, hi;              /* default of a range or number */
    const char *str;            /* default of a string */
    bool required;
} TaskArgSpec;

typedef struct {
    const char *kind;
    const TaskArgSpec *arg;
    int narg;
    /* extra checks of the fields' types, or NULL */
    bool (*check)(Check *c, const ModelTask *t, const Ast *field[2][2]);
} TaskKind;

static bool check_sinusoid(Check *c, const ModelTask *t, const Ast *field[2][2]);
static bool check_omniglot(Check *c, const ModelTask *t, const Ast *field[2][2]);
static bool check_family(Check *c, const ModelTask *t, const Ast *field[2][2]);
static bool check_images(Check *c, const ModelTask *t, const Ast *field[2][2]);

static const TaskArgSpec sinusoid_args[] = {
    {"amplitude", TARG_RANGE, 0.1, 5.0, NULL, false},
    {"phase", TARG_RANGE, 0.0, PI, NULL, false},
    {"x", TARG_RANGE, -5.0, 5.0, NULL, false},
};

static const TaskArgSpec omniglot_args[] = {
    {"path", TARG_STRING, 0, 0, "../shared/data/omniglot/images_background_small1.zip", false},
    {"ways", TARG_NUMBER, 5, 5, NULL, false},
    {"shots", TARG_NUMBER, 1, 1, NULL, false},
    {"queries", TARG_NUMBER, 15, 15, NULL, false},
    {"size", TARG_NUMBER, 28, 28, NULL, false},
    {"rotations", TARG_BOOL, 1, 1, NULL, false},
};

static const TaskArgSpec images_args[] = {
    {"path", TARG_STRING, 0, 0, NULL, true},
    {"ways", TARG_NUMBER, 5, 5, NULL, false},
    {"shots", TARG_NUMBER, 1, 1, NULL, false},
    {"queries", TARG_NUMBER, 15, 15, NULL, false},
    {"size", TARG_NUMBER, 84, 84, NULL, false},
    {"channels", TARG_NUMBER, 3, 3, NULL, false},
    {"split", TARG_STRING, 0, 0, "", false},
    {"rotations", TARG_BOOL, 0, 0, NULL, false},
    {"mean", TARG_LIST, 0, 0, NULL, false},
    {"std", TARG_LIST, 0, 0, NULL, false},
};

/* One entry per task kind; a new kind is one more line. */
static const TaskKind task_kinds[] = {
    {"sinusoid", sinusoid_args, 3, check_sinusoid},
    {"omniglot", omniglot_args, 6, check_omniglot},
    {"images", images_args, 10, check_images},
    {"external", NULL, 0, NULL},
    {"family", NULL, 0, check_family},      /* its arguments are task variables (frontend/family.c) */
};
#define NTASK_KINDS (int)(sizeof task_kinds / sizeof task_kinds[0])

static const char *const set_names[2] = {"support", "query"};
static const char *const field_names[2] = {"x", "y"};

/* Sinusoid tasks generate x and y of shape [n, 1]. */
static bool check_sinusoid(Check *c, const ModelTask *t, const Ast *field[2][2]) {
    const IrType *ty[2][2] = {{&t->support_x, &t->support_y}, {&t->query_x, &t->query_y}};
    bool ok = true;
    for (int s = 0; s < 2; s++) {
        bool points = true;
        for (int f = 0; f < 2; f++) {
            const IrType *a = ty[s][f];
            if (a->dtype != c->m->real || a->rank != 2 || a->dim[1] != 1) {
                char buf[64];
                diag_error(c->d, field[s][f]->loc, "task 'sinusoid' needs %s %s of shape [n, 1] with real "
                           "elements, not %s", set_names[s], field_names[f], ir_type_str(*a, buf, sizeof buf));
                points = false;
            }
        }
        if (points && ty[s][0]->dim[0] != ty[s][1]->dim[0]) {
            diag_error(c->d, field[s][1]->loc, "%s y has %d rows but %s x has %d", set_names[s],
                       ty[s][1]->dim[0], set_names[s], ty[s][0]->dim[0]);
            points = false;
        }
        ok &= points;
    }
    return ok;
}

static double task_number(const ModelTask *t, const char *name) {
    for (int i = 0; i < t->narg; i++)
        if (strcmp(t->arg[i].name, name) == 0)
            return t->arg[i].lo;
    return 0;
}

/* Image tasks: images [ways*shots, channels, size, size] (or flattened to
 * [ways*shots, channels*size*size]) with i32 labels [ways*shots]; the query
 * set has ways*queries of each. */
static bool check_image_task(Check *c, const ModelTask *t, const Ast *field[2][2], const char *kind, int channels) {
    const char *counts[] = {"ways", "shots", "queries", "size"};
    for (int i = 0; i < 4; i++) {
        double v = task_number(t, counts[i]);
        if (v != floor(v) || v < 1 || v > 4096) {
            diag_error(c->d, t->loc, "task '%s' needs '%s' to be an integer from 1 to 4096", kind, counts[i]);
            return false;
        }
    }
    int ways = (int)task_number(t, "ways"), size = (int)task_number(t, "size");
    int per[2] = {ways * (int)task_number(t, "shots"), ways * (int)task_number(t, "queries")};
    const IrType *ty[2][2] = {{&t->support_x, &t->support_y}, {&t->query_x, &t->query_y}};
    bool ok = true;
    for (int s = 0; s < 2; s++) {
        IrType x = *ty[s][0], y = *ty[s][1];
        IrType image = ir_type(c->m->real, 4, (int[]){per[s], channels, size, size});
        IrType flat = ir_type(c->m->real, 2, (int[]){per[s], channels * size * size});
        IrType labels = ir_type(DT_I32, 1, (int[]){per[s]});
        char want[64], alt[64], got[64];
        if (!ir_type_eq(x, image) && !ir_type_eq(x, flat)) {
            diag_error(c->d, field[s][0]->loc, "task '%s' needs %s x of type %s or %s, not %s", kind, set_names[s],
                       ir_type_str(image, want, sizeof want), ir_type_str(flat, alt, sizeof alt),
                       ir_type_str(x, got, sizeof got));
            ok = false;
        }
        if (!ir_type_eq(y, labels)) {
            diag_error(c->d, field[s][1]->loc, "task '%s' needs %s y of type %s, not %s", kind, set_names[s],
                       ir_type_str(labels, want, sizeof want), ir_type_str(y, got, sizeof got));
            ok = false;
        }
    }
    return ok;
}

static bool check_omniglot(Check *c, const ModelTask *t, const Ast *field[2][2]) {
    return check_image_task(c, t, field, "omniglot", 1);
}

static const TaskArg *task_arg(const ModelTask *t, const char *name) {
    for (int i = 0; i < t->narg; i++)
        if (strcmp(t->arg[i].name, name) == 0)
            return &t->arg[i];
    return NULL;
}

/* Image folders: channels 1 or 3, and mean and std both given with one
 * value per channel (std positive), or neither. */
static bool check_images(Check *c, const ModelTask *t, const Ast *field[2][2]) {
    double channels = task_number(t, "channels");
    const TaskArg *mean = task_arg(t, "mean"), *std = task_arg(t, "std");
    if (channels != 1 && channels != 3) {
        diag_error(c->d, task_arg(t, "channels")->loc, "task 'images' needs 'channels' to be 1 (grey) or 3 (RGB)");
        return false;
    }
    if ((mean->nvalue > 0) != (std->nvalue > 0)) {
        diag_error(c->d, (mean->nvalue ? mean : std)->loc, "task 'images' needs 'mean' and 'std' together");
        return false;
    }
    for (int k = 0; k < 2; k++) {
        const TaskArg *a = k ? std : mean;
        if (a->nvalue && a->nvalue != (int)channels) {
            diag_error(c->d, a->loc, "task 'images' needs one '%s' value per channel (%d), not %d", a->name,
                       (int)channels, a->nvalue);
            return false;
        }
    }
    for (int i = 0; i < std->nvalue; i++)
        if (!(std->value[i] > 0)) {
            diag_error(c->d, std->loc, "task 'images' needs every 'std' value positive, not %g", std->value[i]);
            return false;
        }
    return check_image_task(c, t, field, "images", (int)channels);
}

static bool check_family(Check *c, const ModelTask *t, const Ast *field[2][2]) {
    return model_check_family(c->mi, c->task, &c->m->task, c->d);
}

static bool check_task_value(Check *c, const Ast *kw, const TaskArgSpec *s, TaskArg *out) {
    const Ast *v = kw->kwarg.value;
    *out = (TaskArg){.name = s->name, .loc = kw->loc};
    switch (s->type) {
    case TARG_RANGE:
        if (v->kind == AST_LIST && v->list.item.n == 2 && model_number_literal(v->list.item.item[0], &out->lo) &&
            model_number_literal(v->list.item.item[1], &out->hi)) {
            out->is_range = true;
            if (out->lo <= out->hi)
                return true;
            diag_error(c->d, v->loc, "range of '%s' is empty: %g > %g", s->name, out->lo, out->hi);
            return false;
        }
        if (model_number_literal(v, &out->lo)) {
            out->hi = out->lo;
            return true;
        }
        diag_error(c->d, v->loc, "'%s' must be a number or a range [lo, hi]", s->name);
        return false;
    case TARG_NUMBER: {
        int64_t n;
        if (model_number_literal(v, &out->lo)) {
            out->hi = out->lo;
            return true;
        }
        if (v->kind != AST_STR && v->kind != AST_LIST && model_dim_expr(c->mi, v, &n, c->d)) {
            out->lo = out->hi = (double)n;      /* a dim expression: ways = N */
            return true;
        }
        if (v->kind == AST_STR || v->kind == AST_LIST)
            diag_error(c->d, v->loc, "'%s' must be a number", s->name);
        return false;
    }
    case TARG_STRING:
        if (v->kind == AST_STR) {
            out->is_string = true;
            out->str = v->str.value;
            return true;
        }
        diag_error(c->d, v->loc, "'%s' must be a string", s->name);
        return false;
    case TARG_LIST:
        if (v->kind == AST_LIST && v->list.item.n > 0) {
            double *value = arena_alloc(&c->m->arena, (size_t)v->list.item.n * sizeof *value);
            for (int i = 0; i < v->list.item.n; i++)
                if (!model_number_literal(v->list.item.item[i], &value[i])) {
                    diag_error(c->d, v->list.item.item[i]->loc, "'%s' must be a list of numbers", s->name);
                    return false;
                }
            out->is_list = true;
            out->value = value;
            out->nvalue = v->list.item.n;
            return true;
        }
        diag_error(c->d, v->loc, "'%s' must be a list of numbers [a, b, ..]", s->name);
        return false;
    case TARG_BOOL:
        if (v->kind == AST_NAME && (!strcmp(v->name.id, "true") || !strcmp(v->name.id, "false"))) {
            out->is_bool = true;
            out->lo = out->hi = v->name.id[0] == 't';
            return true;
        }
        diag_error(c->d, v->loc, "'%s' must be true or false", s->name);
        return false;
    }
    return false;
}

static const TaskKind *find_task_kind(Check *c, const Ast *n) {
    for (int i = 0; i < NTASK_KINDS; i++)
        if (strcmp(task_kinds[i].kind, n->task.kind) == 0)
            return &task_kinds[i];
    char known[256];
    size_t used = 0;
    for (int i = 0; i < NTASK_KINDS && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", task_kinds[i].kind);
    diag_error(c->d, n->loc, "unknown task kind '%s' (known kinds: %s)", n->task.kind, known);
    return NULL;
}

/* Every argument of the kind, given or defaulted, in the kind's order. */
static bool check_task_args(Check *c, const Ast *n, const TaskKind *k, ModelTask *t) {
    const AstList *args = &n->task.arg;
    const Ast **given = xcalloc((size_t)k->narg, sizeof *given);
    bool ok = true;
    t->narg = k->narg;
    t->arg = arena_alloc(&c->m->arena, (size_t)(k->narg ? k->narg : 1) * sizeof *t->arg);
    for (int i = 0; i < args->n; i++) {
        const Ast *a = args->item[i];
        int s = 0;
        while (s < k->narg && strcmp(k->arg[s].name, a->kwarg.key) != 0)
            s++;
        if (s == k->narg) {
            char known[256] = "none";
            for (int j = 0, used = 0; j < k->narg && used < (int)sizeof known; j++)
                used += snprintf(known + used, sizeof known - (size_t)used, "%s%s", j ? ", " : "", k->arg[j].name);
            diag_error(c->d, a->loc, "task '%s' has no argument '%s' (its arguments: %s)", k->kind,
                       a->kwarg.key, known);
            ok = false;
        } else if (given[s]) {
            diag_error(c->d, a->loc, "task argument '%s' is given twice", a->kwarg.key);
            diag_note(c->d, given[s]->loc, "first given here");
            ok = false;
        } else {
            given[s] = a;
            ok &= check_task_value(c, a, &k->arg[s], &t->arg[s]);
        }
    }
    for (int s = 0; s < k->narg; s++) {
        const TaskArgSpec *sp = &k->arg[s];
        if (given[s])
            continue;
        if (sp->required) {
            diag_error(c->d, n->loc, "task '%s' needs argument '%s'", k->kind, sp->name);
            ok = false;
        }
        t->arg[s] = (TaskArg){.name = sp->name, .is_range = sp->type == TARG_RANGE, .is_string = sp->type == TARG_STRING,
                              .is_bool = sp->type == TARG_BOOL, .is_list = sp->type == TARG_LIST, .lo = sp->lo, .hi = sp->hi, .str = sp->str, .loc = n->loc};
    }
    free(given);
    return ok;
}

static int index_of(const char *const *names, const char *s) {
    for (int i = 0; i < 2; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* support x/y and query x/y, each exactly once. */
static bool check_task_fields(Check *c, const Ast *n, ModelTask *t, const Ast *field[2][2]) {
    IrType *ty[2][2] = {{&t->support_x, &t->support_y}, {&t->query_x, &t->query_y}};
    bool ok = true;
    for (int i = 0; i < n->task.field.n; i++) {
        const Ast *f = n->task.field.item[i];
        int s = index_of(set_names, f->field.set), k = index_of(field_names, f->field.name);
        if (s < 0) {
            diag_error(c->d, f->field.set_loc, "expected 'support' or 'query', found '%s'", f->field.set);
            ok = false;
            continue;
        }
        if (k < 0) {
            diag_error(c->d, f->loc, "unknown task field '%s' (a task has x and y)", f->field.name);
            ok = false;
            continue;
        }
        if (field[s][k]) {
            diag_error(c->d, f->loc, "%s %s is declared twice", set_names[s], field_names[k]);
            diag_note(c->d, field[s][k]->loc, "first declared here");
            ok = false;
            continue;
        }
        field[s][k] = f;
        const Ast *type = f->field.type;
        DType dt = c->m->real;
        if (type->shape.dtype && strcmp(type->shape.dtype, "i32") == 0) {
            dt = DT_I32;
        } else if (type->shape.dtype) {
            diag_error(c->d, type->loc, "unknown element type '%s' (write [..] for reals, i32[..] for integers)",
                       type->shape.dtype);
            ok = false;
            continue;
        }
        ok &= check_shape(c, type, dt, ty[s][k]);
    }
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++)
            if (!field[s][k]) {
                diag_error(c->d, n->loc, "task has no %s %s", set_names[s], field_names[k]);
                ok = false;
            }
    return ok;
}

static void check_task(Check *c) {
    const Ast *n = c->task;
    if (!n) {
        diag_error(c->d, (SrcLoc){c->m->file, 0, 0}, "missing task declaration (e.g. 'task external() "
                   "{ support x : [..], y : [..]; query x : [..], y : [..]; }')");
        return;
    }
    ModelTask *t = &c->m->task;
    t->kind = n->task.kind;
    t->loc = n->loc;
    const TaskKind *k = find_task_kind(c, n);
    const Ast *field[2][2] = {{0}};
    bool family = k && k->check == check_family;
    bool ok = k && (family || check_task_args(c, n, k, t));
    if (k && !family && n->task.body.n) {
        diag_error(c->d, n->task.body.item[0]->loc, "lines such as 'x = ...' belong to a task family, not to "
                   "task '%s'", k->kind);
        ok = false;
    }
    if (check_task_fields(c, n, t, field) && ok && k->check)
        k->check(c, t, field);
}

/* --- the meta block --- */

typedef bool MetaRule(Check *c, const Ast *kw, MetaConfig *mc);

/* *out = the integer value of kw, in [1, max]. */
static bool meta_count(Check *c, const Ast *kw, int64_t max, int64_t *out) {
    const Ast *v = kw->kwarg.value;
    if (!model_int_literal(v, out) || *out < 1 || *out > max) {
        diag_error(c->d, v->loc, "'%s' must be an integer from 1 to %lld", kw->kwarg.key, (long long)max);
        return false;
    }
    return true;
}

static bool meta_inner_steps(Check *c, const Ast *kw, MetaConfig *mc) {
    int64_t v;
    if (!meta_count(c, kw, META_MAX_INNER_STEPS, &v))
        return false;
    mc->inner_steps = (int)v;
    return true;
}

static bool meta_meta_batch(Check *c, const Ast *kw, MetaConfig *mc) {
    int64_t v;
    if (!meta_count(c, kw, META_MAX_BATCH, &v))
        return false;
    mc->meta_batch = (int)v;
    return true;
}

static bool meta_iterations(Check *c, const Ast *kw, MetaConfig *mc) {
    int64_t v;
    if (!meta_count(c, kw, IR_MAX_NUMEL, &v))
        return false;
    mc->iterations = (long)v;
    return true;
}

/* inner_lr = 0.01 | learned(0.01) | learned_scalar(0.01) | learned_per_step(0.1) */
static bool meta_inner_lr(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    static const ArgSpec init_arg[] = {{"init", 0, true}};
    static const char *const learned[] = {"learned", "learned_scalar", "learned_per_step"};
    int k = 0;
    while (k < 3 && !(v->kind == AST_CALL && strcmp(v->call.callee, learned[k]) == 0))
        k++;
    if (k < 3) {
        mc->inner_lr_kind = (InnerLrKind)(INNER_LR_LEARNED + k);
        if (!bind_numbers(c, v, init_arg, 1, &mc->inner_lr))
            return false;
    } else if (model_number_literal(v, &mc->inner_lr)) {
        mc->inner_lr_kind = INNER_LR_FIXED;
    } else {
        diag_error(c->d, v->loc,
                   "'inner_lr' must be a number, learned(init), learned_scalar(init) or learned_per_step(init)");
        return false;
    }
    if (!(mc->inner_lr > 0)) {
        diag_error(c->d, v->loc, "the inner learning rate must be positive");
        return false;
    }
    return true;
}

/* eval_steps = [0, 1, 10]: ascending inner-step counts to evaluate at */
static bool meta_eval_steps(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    if (v->kind != AST_LIST || v->list.item.n < 1 || v->list.item.n > META_MAX_EVAL_STEPS) {
        diag_error(c->d, v->loc, "'eval_steps' must be a list of 1 to %d step counts, e.g. [0, 1, 10]",
                   META_MAX_EVAL_STEPS);
        return false;
    }
    for (int i = 0; i < v->list.item.n; i++) {
        const Ast *e = v->list.item.item[i];
        int64_t n;
        if (!model_int_literal(e, &n) || n < 0 || n > 100000 || (i && n <= mc->eval_steps[i - 1])) {
            diag_error(c->d, e->loc, "'eval_steps' needs integers from 0 to 100000 in increasing order");
            return false;
        }
        mc->eval_steps[i] = (int)n;
    }
    mc->neval_steps = v->list.item.n;
    return true;
}

/* adapt = [W3, b3]: the params the inner loop updates (ANIL) */
static bool meta_adapt(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    if (v->kind != AST_LIST || v->list.item.n == 0) {
        diag_error(c->d, v->loc, "'adapt' must be a list of params, e.g. [W3, b3]");
        return false;
    }
    bool ok = true;
    c->adapt = kw;
    for (int i = 0; i < c->m->nparam; i++)
        mc->adapt[i] = false;
    for (int i = 0; i < v->list.item.n; i++) {
        const Ast *e = v->list.item.item[i];
        const int *at = e->kind == AST_NAME ? ast_map_get(&c->mi->params, e->name.id) : NULL;
        if (!at) {
            if (e->kind == AST_NAME)
                diag_error(c->d, e->loc, "'adapt' names '%s', which is not a param", e->name.id);
            else
                diag_error(c->d, e->loc, "'adapt' must list param names");
            ok = false;
        } else if (mc->adapt[*at]) {
            diag_error(c->d, e->loc, "'adapt' lists '%s' twice", e->name.id);
            ok = false;
        } else if (c->m->param[*at].per_step) {
            diag_error(c->d, e->loc, "'adapt' lists '%s', a per_step param: its per-step copies are meta-learned, "
                       "not adapted by the inner loop", e->name.id);
            ok = false;
        } else
            mc->adapt[*at] = true;
    }
    return ok;
}

/* imaml(lambda = 2.0, cg_steps = 5) */
static bool meta_imaml(Check *c, const Ast *v, MetaConfig *mc) {
    static const ArgSpec imaml_args[] = {{"lambda", 2.0, false}, {"cg_steps", 5, false}};
    double a[2];
    mc->algorithm = ALGO_IMAML;
    if (!bind_numbers(c, v, imaml_args, 2, a))
        return false;
    if (!(a[0] > 0)) {
        diag_error(c->d, v->loc, "imaml's lambda must be positive");
        return false;
    }
    if (!(a[1] >= 1 && a[1] <= META_MAX_CG_STEPS && a[1] == (int)a[1])) {
        diag_error(c->d, v->loc, "imaml's cg_steps must be an integer from 1 to %d", META_MAX_CG_STEPS);
        return false;
    }
    mc->lambda = a[0];
    mc->cg_steps = (int)a[1];
    return true;
}

/* algorithm = maml | reptile(epsilon = 1.0) | imaml(lambda = 2.0, cg_steps = 5) */
static bool meta_algorithm(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    const char *name = v->kind == AST_NAME ? v->name.id : v->kind == AST_CALL ? v->call.callee : "";
    static const ArgSpec reptile_args[] = {{"epsilon", 1.0, false}};
    if (strcmp(name, "maml") == 0 && v->kind == AST_NAME) {
        mc->algorithm = ALGO_MAML;
        return true;
    }
    if (strcmp(name, "imaml") == 0)
        return meta_imaml(c, v, mc);
    if (strcmp(name, "reptile") != 0) {
        diag_error(c->d, v->loc, "'algorithm' must be maml, reptile(epsilon) or imaml(lambda, cg_steps)");
        return false;
    }
    mc->algorithm = ALGO_REPTILE;
    if (!bind_numbers(c, v, reptile_args, 1, &mc->epsilon))
        return false;
    if (!(mc->epsilon > 0)) {
        diag_error(c->d, v->loc, "reptile's epsilon must be positive");
        return false;
    }
    return true;
}

/* An integer argument of a call that bind_numbers bound to x: from 1 to max. */
static bool count_arg(Check *c, const Ast *call, const char *what, double x, long *out) {
    if (!(x >= 1 && x <= (double)IR_MAX_NUMEL && x == floor(x))) {
        diag_error(c->d, call->loc, "%s must be an integer from 1 to %lld", what, (long long)IR_MAX_NUMEL);
        return false;
    }
    *out = (long)x;
    return true;
}

/* order = second | first | anneal(first_until = N) */
static bool meta_order(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    static const ArgSpec anneal_args[] = {{"first_until", 0, true}};
    double n;
    if (v->kind == AST_NAME && strcmp(v->name.id, "second") == 0)
        mc->order = ORDER_SECOND;
    else if (v->kind == AST_NAME && strcmp(v->name.id, "first") == 0)
        mc->order = ORDER_FIRST;
    else if (v->kind == AST_CALL && strcmp(v->call.callee, "anneal") == 0) {
        if (!bind_numbers(c, v, anneal_args, 1, &n) || !count_arg(c, v, "anneal's first_until", n, &mc->first_until))
            return false;
        mc->order = ORDER_ANNEAL;
    } else {
        diag_error(c->d, v->loc, "'order' must be 'second', 'first' or anneal(first_until = N)");
        return false;
    }
    return true;
}

/* multi_step_loss = anneal(N): MAML++'s weighted per-step query losses */
static bool meta_multi_step_loss(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    static const ArgSpec anneal_args[] = {{"iterations", 0, true}};
    double n;
    if (v->kind != AST_CALL || strcmp(v->call.callee, "anneal") != 0) {
        diag_error(c->d, v->loc, "'multi_step_loss' must be anneal(N), N the iterations the weights anneal over");
        return false;
    }
    return bind_numbers(c, v, anneal_args, 1, &n) && count_arg(c, v, "anneal's iterations", n, &mc->msl_iterations);
}

/* clip_norm = C: the meta-gradient's global L2 norm is clipped to C */
static bool meta_clip_norm(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    if (!model_number_literal(v, &mc->clip_norm) || !(mc->clip_norm > 0)) {
        diag_error(c->d, v->loc, "'clip_norm' must be a positive number");
        return false;
    }
    return true;
}

/* eval_mode = transductive | running_stats: which batch-norm statistics
 * held-out evaluation uses; given, the run keeps running statistics */
static bool meta_eval_mode(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    if (v->kind == AST_NAME && strcmp(v->name.id, "transductive") == 0)
        mc->eval_mode = EVAL_MODE_TRANSDUCTIVE;
    else if (v->kind == AST_NAME && strcmp(v->name.id, "running_stats") == 0)
        mc->eval_mode = EVAL_MODE_RUNNING_STATS;
    else {
        diag_error(c->d, v->loc, "'eval_mode' must be 'transductive' or 'running_stats'");
        return false;
    }
    return true;
}

static const ArgSpec adam_args[] = {{"lr", 0.001, false}, {"beta1", 0.9, false}, {"beta2", 0.999, false},
                                    {"eps", 1e-8, false}, {"weight_decay", 0, false}};
static const ArgSpec sgd_args[] = {{"lr", 0.001, false}};

/* The optimiser call v without its `schedule = cosine(min_lr = M)` argument,
 * whose M goes to o (schedule left out: no schedule); NULL after reporting
 * a bad schedule. */
static const Ast *take_schedule(Check *c, const Ast *v, OptimizerConfig *o) {
    static const ArgSpec cosine_args[] = {{"min_lr", 0, false}};
    if (v->kind != AST_CALL)
        return v;
    Ast *rest = arena_alloc(&c->m->arena, sizeof *rest);
    *rest = *v;
    rest->call.arg.item = arena_alloc(&c->m->arena, ((size_t)v->call.arg.n + 1) * sizeof *rest->call.arg.item);
    rest->call.arg.n = 0;
    for (int i = 0; i < v->call.arg.n; i++) {
        Ast *a = v->call.arg.item[i];
        if (a->kind != AST_KWARG || strcmp(a->kwarg.key, "schedule") != 0) {
            rest->call.arg.item[rest->call.arg.n++] = a;
            continue;
        }
        const Ast *s = a->kwarg.value;
        if (s->kind != AST_CALL || strcmp(s->call.callee, "cosine") != 0) {
            diag_error(c->d, s->loc, "'schedule' must be cosine(min_lr = M)");
            return NULL;
        }
        if (!bind_numbers(c, s, cosine_args, 1, &o->min_lr))
            return NULL;
        if (!(o->min_lr >= 0)) {
            diag_error(c->d, s->loc, "cosine's min_lr must be 0 or more");
            return NULL;
        }
        o->cosine = true;
    }
    return rest;
}

static bool meta_optimizer(Check *c, const Ast *kw, MetaConfig *mc) {
    const Ast *v = kw->kwarg.value;
    const char *name = v->kind == AST_NAME ? v->name.id : v->kind == AST_CALL ? v->call.callee : "";
    double a[5];
    OptimizerConfig *o = &mc->optimizer, sched = {0};
    bool adamw = strcmp(name, "adamw") == 0;
    const Ast *args = take_schedule(c, v, &sched);
    if (!args)
        return false;
    if (adamw || strcmp(name, "adam") == 0) {
        if (!bind_numbers(c, args, adam_args, 5, a))
            return false;
        *o = (OptimizerConfig){.kind = adamw ? OPT_ADAMW : OPT_ADAM, .lr = a[0], .beta1 = a[1], .beta2 = a[2],
                               .eps = a[3], .weight_decay = a[4]};
    } else if (strcmp(name, "sgd") == 0) {
        if (!bind_numbers(c, args, sgd_args, 1, a))
            return false;
        *o = (OptimizerConfig){.kind = OPT_SGD, .lr = a[0]};
    } else {
        diag_error(c->d, v->loc, "'optimizer' must be adam(lr, beta1, beta2, eps, weight_decay), "
                                 "adamw(the same) or sgd(lr)");
        return false;
    }
    o->cosine = sched.cosine;
    o->min_lr = sched.min_lr;
    if (!(o->lr > 0) || (o->kind != OPT_SGD && (!(o->beta1 >= 0 && o->beta1 < 1) ||
                                                 !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0)))) {
        diag_error(c->d, v->loc, "optimizer needs lr > 0, 0 <= beta1, beta2 < 1 and eps > 0");
        return false;
    }
    if (!(o->weight_decay >= 0)) {
        diag_error(c->d, v->loc, "the optimizer's weight_decay must be 0 or more");
        return false;
    }
    return true;
}

/* One entry per meta key; a new key is one more line and its rule. */
static const struct {
    const char *key;
    MetaRule *rule;
} meta_keys[] = {
    {"algorithm", meta_algorithm},
    {"inner_steps", meta_inner_steps},
    {"inner_lr", meta_inner_lr},
    {"order", meta_order},
    {"adapt", meta_adapt},
    {"eval_steps", meta_eval_steps},
    {"meta_batch", meta_meta_batch},
    {"optimizer", meta_optimizer},
    {"iterations", meta_iterations},
    {"multi_step_loss", meta_multi_step_loss},
    {"clip_norm", meta_clip_norm},
    {"eval_mode", meta_eval_mode},
};
#define NMETA_KEYS (int)(sizeof meta_keys / sizeof meta_keys[0])

/* Apply the entries of one meta block; seen[k] is the entry that last set
 * key k.  Within one block a key may appear once; a later block (the
 * command line's --meta) replaces what an earlier one set. */
static void apply_meta(Check *c, const AstList *e, const Ast **seen, MetaConfig *mc) {
    const Ast *here[NMETA_KEYS] = {0};
    for (int i = 0; i < e->n; i++) {
        const Ast *kw = e->item[i];
        int k = 0;
        while (k < NMETA_KEYS && strcmp(meta_keys[k].key, kw->kwarg.key) != 0)
            k++;
        if (k == NMETA_KEYS) {
            char known[256];
            size_t used = 0;
            for (int j = 0; j < NMETA_KEYS && used < sizeof known; j++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", j ? ", " : "", meta_keys[j].key);
            diag_error(c->d, kw->loc, "unknown meta key '%s' (known keys: %s)", kw->kwarg.key, known);
        } else if (here[k]) {
            diag_error(c->d, kw->loc, "duplicate meta key '%s'", kw->kwarg.key);
            diag_note(c->d, here[k]->loc, "first set here");
        } else {
            here[k] = seen[k] = kw;
            meta_keys[k].rule(c, kw, mc);
        }
    }
}

static int meta_key_index(const char *key) {
    int k = 0;
    while (k < NMETA_KEYS && strcmp(meta_keys[k].key, key) != 0)
        k++;
    return k;
}

/* The command line's --meta KEY=VALUE entries, parsed as one meta block. */
static const Ast *parse_meta_overrides(Check *c) {
    const ModelOptions *o = c->opt;
    if (!o || o->nmeta == 0)
        return NULL;
    size_t len = 16;
    for (int i = 0; i < o->nmeta; i++)
        len += strlen(o->meta[i]) + 2;
    char *text = arena_alloc(&c->m->arena, len), *p = text;
    p += sprintf(p, "meta { ");
    for (int i = 0; i < o->nmeta; i++)
        p += sprintf(p, "%s; ", o->meta[i]);
    strcpy(p, "}");
    diag_add_source(c->d, "--meta", text, strlen(text));
    const Ast *prog = ast_parse(&c->m->arena, "--meta", text, strlen(text), c->d);
    if (!prog)
        return NULL;
    for (int i = 0; i < prog->program.decl.n; i++)
        if (prog->program.decl.item[i]->kind == AST_META)
            return prog->program.decl.item[i];
    return NULL;
}

/* Rules that tie several keys together, checked once all are known. */
static void check_meta_combination(Check *c, const Ast **seen, MetaConfig *mc) {
    const Ast *order = seen[meta_key_index("order")], *lr = seen[meta_key_index("inner_lr")];
    const Ast *msl = seen[meta_key_index("multi_step_loss")];
    if (mc->algorithm == ALGO_IMAML && mc->inner_lr_kind != INNER_LR_FIXED)
        diag_error(c->d, lr->kwarg.value->loc, "iMAML's meta-gradient is implicit and has no part for inner "
                                                "learning rates; give a number");
    if (mc->algorithm != ALGO_MAML && msl)
        diag_error(c->d, msl->kwarg.value->loc, "the multi-step loss weighs MAML's query losses; %s has none "
                   "after each inner step", mc->algorithm == ALGO_REPTILE ? "Reptile" : "iMAML");
    if (mc->algorithm == ALGO_IMAML && mc->order == ORDER_ANNEAL)
        mc->order = ORDER_SECOND;   /* iMAML ignores the order */
    if (mc->algorithm != ALGO_REPTILE)
        return;
    if (order && mc->order != ORDER_FIRST)
        diag_error(c->d, order->kwarg.value->loc, "Reptile does not differentiate through the inner loop; "
                                     "'order = %s' does not apply to it", mc->order == ORDER_SECOND ? "second" : "anneal");
    if (mc->inner_lr_kind != INNER_LR_FIXED)
        diag_error(c->d, lr->kwarg.value->loc, "Reptile does not meta-learn inner learning rates; give a number");
    if (!seen[meta_key_index("optimizer")])
        mc->optimizer = (OptimizerConfig){.kind = OPT_SGD, .lr = mc->epsilon};
    mc->order = ORDER_FIRST;
}

/* Meta-SGD: one learned inner learning rate tensor per adapted param,
 * after the params in the flat vector; LSLR: one per adapted param and
 * inner step, lr.NAME.0, lr.NAME.1, ... */
static void add_learned_rates(Check *c) {
    Model *m = c->m;
    const MetaConfig *mc = &m->meta;
    int per = ir_meta_rates_per_param(mc);
    m->ntensor = m->nparam;
    if (mc->inner_lr_kind == INNER_LR_FIXED)
        return;
    ModelParam *all = arena_alloc(&m->arena, (size_t)((per + 1) * m->nparam + 1) * sizeof *all);
    memcpy(all, m->param, (size_t)m->nparam * sizeof *all);
    for (int i = 0; i < m->nparam; i++) {
        if (!ir_meta_has_rate(mc, i))
            continue;
        for (int s = 0; s < per; s++) {
            ModelParam *lr = &all[m->ntensor++];
            const char *name = mc->inner_lr_kind == INNER_LR_LEARNED_PER_STEP
                                   ? arena_printf(&m->arena, "lr.%s.%d", m->param[i].name, s)
                                   : arena_printf(&m->arena, "lr.%s", m->param[i].name);
            *lr = (ModelParam){.name = name,
                               .type = ir_meta_rate_type(mc, m->param[i].type),
                               .init = {INIT_CONST, mc->inner_lr, 0},
                               .loc = m->param[i].loc,
                               .lr_for = i};
        }
    }
    m->param = all;
}

/* Per-step params (MAML++'s BNWB): param NAME's slot becomes NAME.0, and
 * NAME.1 .. NAME.{S-1} follow every other tensor, each initialised as
 * NAME is (each from its own stream). */
static void add_per_step_copies(Check *c) {
    Model *m = c->m;
    MetaConfig *mc = &m->meta;
    int S = mc->inner_steps, extra = 0;
    for (int i = 0; i < m->nparam; i++)
        extra += m->param[i].per_step ? S - 1 : 0;
    for (int i = 0; i < m->nparam; i++)
        if (m->param[i].per_step && mc->algorithm != ALGO_MAML) {
            const Ast *decl = c->decl[*(const int *)ast_map_get(&c->names, m->param[i].decl)];
            diag_error(c->d, decl->param.option->loc, "per_step params are meta-learned through the query loss "
                       "after each inner step, which only 'algorithm = maml' differentiates");
        }
    bool any = false;
    for (int i = 0; i < m->nparam; i++)
        any |= m->param[i].per_step;
    if (!any)
        return;
    mc->per_step = arena_alloc(&m->arena, (size_t)m->nparam + 1);
    ModelParam *all = arena_alloc(&m->arena, (size_t)(m->ntensor + extra + 1) * sizeof *all);
    memcpy(all, m->param, (size_t)m->ntensor * sizeof *all);
    for (int i = 0; i < m->nparam; i++) {
        if (!(mc->per_step[i] = all[i].per_step))
            continue;
        all[i].name = arena_printf(&m->arena, "%s.0", all[i].decl);
        for (int s = 1; s < S; s++) {
            ModelParam *p = &all[m->ntensor++];
            *p = all[i];
            p->name = arena_printf(&m->arena, "%s.%d", all[i].decl, s);
        }
    }
    m->param = all;
}

static void check_meta(Check *c) {
    Model *m = c->m;
    MetaConfig *mc = &m->meta;
    *mc = ir_meta_defaults();
    mc->nparam = m->nparam;
    mc->adapt = arena_alloc(&m->arena, (size_t)(m->nparam + 1) * sizeof *mc->adapt);
    for (int i = 0; i < m->nparam; i++)
        mc->adapt[i] = !m->param[i].per_step;
    const Ast *seen[NMETA_KEYS] = {0};
    if (c->meta) {
        mc->loc = c->meta->loc;
        apply_meta(c, &c->meta->meta.entry, seen, mc);
    }
    const Ast *overrides = parse_meta_overrides(c);
    if (overrides)
        apply_meta(c, &overrides->meta.entry, seen, mc);
    check_meta_combination(c, seen, mc);
    add_learned_rates(c);
    add_per_step_copies(c);
}

/* --- loss and metric --- */

/* The return statement of a def, for pointing at it. */
static const Ast *returned(const Ast *def) {
    const AstList *b = &def->def.body;
    return b->item[b->n - 1];
}

/* The fewest classes that a onehot in f encodes the labels of input x into,
 * through reshapes, broadcasts and transposes; 0 if none does.  Operands
 * come before their users, so one pass in node order finds them. */
static int label_classes(const IrFunc *f, ValueId x) {
    bool *from_x = xcalloc((size_t)f->nnode, sizeof *from_x);
    int classes = 0;
    from_x[x] = true;
    for (ValueId i = x + 1; i < f->nnode; i++) {
        const IrNode *n = &f->node[i];
        if (n->arg[0] == IR_NONE || !from_x[n->arg[0]])
            continue;
        if (ir_op_info[n->op].kind == KIND_LAYOUT)
            from_x[i] = true;
        else if (n->op == OP_ONEHOT && (classes == 0 || n->ival < classes))
            classes = n->ival;
    }
    free(from_x);
    return classes;
}

/* Warn about each param that the loss r of f (params[i] standing for
 * param i) never reads: it gets no gradient, so it never trains; and about
 * each entry of `adapt` naming one, which the inner steps leave as it is. */
static void warn_unread(Check *c, const IrFunc *f, ValueId r, const ValueId *params) {
    bool *reads = xcalloc((size_t)f->nnode, sizeof *reads);
    reads[r] = true;
    for (ValueId v = r; v >= 0; v--)
        for (int i = 0; reads[v] && i < ir_op_info[f->node[v].op].arity; i++)
            reads[f->node[v].arg[i]] = true;
    const Model *m = c->m;
    for (int i = 0; i < m->nparam; i++)
        if (!reads[params[i]])
            diag_warning(c->d, m->param[i].loc, "param '%s' is never read by 'loss': it gets no gradient and "
                         "never trains", m->param[i].decl);
    const AstList *adapt = c->adapt ? &c->adapt->kwarg.value->list.item : NULL;
    for (int i = 0; adapt && i < adapt->n; i++) {
        const int *at = ast_map_get(&c->mi->params, adapt->item[i]->name.id);
        if (!reads[params[*at]])
            diag_warning(c->d, adapt->item[i]->loc, "'adapt' lists '%s', which 'loss' never reads: the inner "
                         "steps leave it as it is", m->param[*at].name);
    }
    free(reads);
}

/* Lower fn(x, y) with x, y of the given types into a scratch function and
 * check it returns a real scalar; classes (if not NULL) gets the class
 * counts of x and y (label_classes); with `warn`, the params it never reads
 * are warned about (warn_unread). */
static bool trial_lower(Check *c, const Ast *def, IrType tx, IrType ty, bool differentiable, int *classes,
                        bool warn) {
    Model *m = c->m;
    IrModule *mod = ir_module_new(m->real);
    IrFunc *f = ir_func_new(mod, def->def.name);
    ValueId *params = xcalloc((size_t)m->nparam, sizeof *params);
    for (int i = 0; i < m->nparam; i++)
        params[i] = ir_input(f, m->param[i].decl, m->param[i].type, m->param[i].loc);
    ValueId args[2] = {ir_input(f, "x", tx, m->task.loc), ir_input(f, "y", ty, m->task.loc)};
    ValueId r = model_lower_call(m, f, def->def.name, params, args, 2, differentiable, c->d);
    bool ok = r != IR_NONE;
    if (ok) {
        IrType t = ir_value_type(f, r);
        if (t.rank != 0 || t.dtype != m->real) {
            char buf[64];
            diag_error(c->d, returned(def)->loc, "'%s' must return a real scalar, not %s", def->def.name,
                       ir_type_str(t, buf, sizeof buf));
            ok = false;
        }
    }
    for (int i = 0; ok && classes && i < 2; i++)
        classes[i] = label_classes(f, args[i]);
    if (ok && warn)
        warn_unread(c, f, r, params);
    free(params);
    ir_module_free(mod);
    return ok;
}

/* `def fn(x, y)`, if there is one, must take two arguments and give a real
 * scalar for the support and the query shapes.  The loss's encodings of
 * the task's labels give their class counts. */
static bool check_objective(Check *c, const char *fn, bool differentiable) {
    const int *at = ast_map_get(&c->mi->defs, fn);
    if (!at)
        return true;
    const Ast *def = c->mi->def[*at];
    if (def->def.arg.n != 2) {
        diag_error(c->d, def->loc, "'%s' must take two arguments (x, y), not %d", fn, def->def.arg.n);
        return false;
    }
    ModelTask *t = &c->m->task;
    bool loss = strcmp(fn, "loss") == 0;
    if (!trial_lower(c, def, t->support_x, t->support_y, differentiable, loss ? t->classes[0] : NULL, loss))
        return false;
    if (trial_lower(c, def, t->query_x, t->query_y, differentiable, loss ? t->classes[1] : NULL, false))
        return true;
    char bx[64], by[64];
    diag_note(c->d, def->loc, "while checking '%s' with the query shapes x: %s, y: %s", fn,
              ir_type_str(t->query_x, bx, sizeof bx), ir_type_str(t->query_y, by, sizeof by));
    return false;
}

/* --- loading --- */

static bool check_real(Check *c) {
    if (c->m->real == DT_F32 || c->m->real == DT_F64)
        return true;
    diag_error(c->d, (SrcLoc){0}, "the real type must be f32 or f64, not %s", ir_dtype_name(c->m->real));
    return false;
}

/* The batch_norms whose running statistics the run keeps (m->bn): the
 * loss lowered at the support shapes with batch statistics collected. */
static void collect_bn(Check *c) {
    Model *m = c->m;
    IrModule *mod = ir_module_new(m->real);
    IrFunc *f = ir_func_new(mod, "bn.stats");
    ValueId *params = xcalloc((size_t)m->nparam + 1, sizeof *params);
    for (int i = 0; i < m->nparam; i++)
        params[i] = ir_input(f, m->param[i].decl, m->param[i].type, m->param[i].loc);
    ValueId args[2] = {ir_input(f, "x", m->task.support_x, m->task.loc), ir_input(f, "y", m->task.support_y,
                                                                                    m->task.loc)};
    ModelBn *bn = NULL;
    int nbn = 0;
    if (model_lower_bn(m, f, "loss", params, args, 2, BN_STATS, IR_NONE, &bn, &nbn, c->d) != IR_NONE || !nbn) {
        m->bn = arena_alloc(&m->arena, ((size_t)nbn + 1) * sizeof *m->bn);
        for (int i = 0; i < nbn; i++)
            m->bn[i] = (ModelBn){arena_strdup(&m->arena, bn[i].name), bn[i].channels};
        m->nbn = nbn;
    }
    free(bn);
    free(params);
    ir_module_free(mod);
}

static void check_model(Check *c) {
    int errors = c->d->nerrors;
    collect(c);
    check_defines(c);
    check_dims(c);
    check_params(c);
    collect_defs(c);
    check_task(c);
    check_meta(c);
    c->m->has_metric = ast_map_get(&c->mi->defs, "metric") != NULL;
    if (!ast_map_get(&c->mi->defs, "loss"))
        diag_error(c->d, (SrcLoc){c->m->file, 0, 0}, "missing 'def loss(x, y)' (the task loss)");
    if (c->d->nerrors != errors || !model_resolve(c->mi, c->d))
        return;
    if (check_objective(c, "loss", true) && check_objective(c, "metric", false) &&
        c->m->meta.eval_mode != EVAL_MODE_NONE)
        collect_bn(c);
    if (c->m->task.family)
        ir_module_free(model_lower_family(c->m, c->d));     /* checks the family's lines */
}

Model *model_load_text(const char *file, const char *text, size_t len, const ModelOptions *opt, Diag *d) {
    ModelImpl *mi = xcalloc(1, sizeof *mi);
    Model *m = &mi->pub;
    if (!text) {
        text = "";
        len = 0;
    }
    m->file = arena_strdup(&m->arena, file ? file : "<input>");
    m->real = opt ? opt->real : DT_F32;
    diag_add_source(d, m->file, text, len);
    int errors = d->nerrors;
    Check c = {.mi = mi, .m = m, .d = d, .opt = opt};
    if (check_real(&c))
        m->ast = ast_parse(&m->arena, m->file, text, len, d);
    if (m->ast)
        check_model(&c);
    ast_map_free(&c.names);
    if (d->nerrors != errors) {
        model_free(m);
        return NULL;
    }
    return m;
}

void model_free(Model *m) {
    if (!m)
        return;
    ModelImpl *mi = (ModelImpl *)m;
    ast_map_free(&mi->defs);
    ast_map_free(&mi->params);
    ast_map_free(&mi->dims);
    arena_free(&m->arena);
    free(mi);
}

SrcLoc model_func_loc(const Model *m, const char *fn) {
    const ModelImpl *mi = model_impl(m);
    const int *at = ast_map_get(&mi->defs, fn);
    return at ? mi->def[*at]->loc : (SrcLoc){0};
}

bool model_has_func(const Model *m, const char *fn) { return ast_map_get(&model_impl(m)->defs, fn) != NULL; }

void model_dump_ast(FILE *out, const Model *m) { ast_dump(out, m->ast, 0); }
