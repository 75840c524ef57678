/* Task families: a task distribution written in the model file.
 *
 *   task family(amplitude = uniform(0.1, 5.0), phase = uniform(0.0, 3.14159265)) {
 *     x = uniform(-5.0, 5.0);
 *     y = amplitude * sin(x - phase);
 *     support x : [K, 1], y : [K, 1];
 *     query   x : [Q, 1], y : [Q, 1];
 *   }
 *
 * The arguments are task variables, each drawn once per task.  The lines
 * compute each set's x, then its y; every call of a distribution in a line
 * is a draw of the field's shape (or of the shape it names).  The family is
 * lowered into one IR function per set whose inputs are the task variables
 * and then the set's draws: the sampler (runtime/family.c) draws them and
 * runs the compiled function.  model_check_family checks everything that
 * needs no lowering; model_lower_family lowers, and checks each line's
 * value against its field's type. */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const set_name[2] = {"support", "query"};
static const char *const field_name[2] = {"x", "y"};

bool model_draw_kind(const char *name, DrawKind *kind) {
    if (strcmp(name, "uniform") == 0)
        *kind = DRAW_UNIFORM;
    else if (strcmp(name, "normal") == 0)
        *kind = DRAW_NORMAL;
    else
        return false;
    return true;
}

/* The shape argument of a distribution: a list of sizes. */
static bool draw_shape(const ModelImpl *mi, const Ast *a, DType real, IrType *out, Diag *d) {
    if (a->kind != AST_LIST) {
        diag_error(d, a->loc, "the shape of a draw must be a list of sizes such as [N, 2]");
        return false;
    }
    const AstList *e = &a->list.item;
    if (e->n > IR_MAX_RANK) {
        diag_error(d, a->loc, "shape has %d dimensions; at most %d are allowed", e->n, IR_MAX_RANK);
        return false;
    }
    int dim[IR_MAX_RANK];
    int64_t numel = 1;
    for (int i = 0; i < e->n; i++) {
        if (!model_extent(mi, e->item[i], &dim[i], d))
            return false;
        numel *= dim[i];
        if (numel > IR_MAX_NUMEL) {
            diag_error(d, a->loc, "shape has more than %lld elements", (long long)IR_MAX_NUMEL);
            return false;
        }
    }
    *out = ir_type(real, e->n, dim);
    return true;
}

/* draw = ("uniform" | "normal") "(" NUMBER "," NUMBER ["," shape] ")"
 * Into *out: its kind, numbers and location, and its shape if it names one
 * (*shaped; else out->type is left as it is). */
static bool check_draw(const ModelImpl *mi, const Ast *n, ModelDraw *out, bool *shaped, Diag *d) {
    const char *name = n->kind == AST_CALL ? n->call.callee : n->kind == AST_NAME ? n->name.id : NULL;
    if (!name || !model_draw_kind(name, &out->kind)) {
        if (name)
            diag_error(d, n->loc, "unknown distribution '%s': a task family draws from uniform(lo, hi) or "
                       "normal(mean, std), each with an optional shape such as [N, 2]", name);
        else
            diag_error(d, n->loc, "a task variable draws from uniform(lo, hi) or normal(mean, std), each with "
                       "an optional shape such as [N, 2]");
        return false;
    }
    const char *usage = out->kind == DRAW_UNIFORM ? "uniform(lo, hi)" : "normal(mean, std)";
    const AstList *args = n->kind == AST_CALL ? &n->call.arg : NULL;
    if (!args || args->n < 2 || args->n > 3) {
        diag_error(d, n->loc, "'%s' takes two numbers and an optional shape: %s or %.*s, [N, 2])", name, usage,
                   (int)strlen(usage) - 1, usage);
        return false;
    }
    double v[2];
    for (int i = 0; i < 2; i++) {
        const Ast *a = args->item[i];
        if (a->kind == AST_KWARG || !model_number_literal(a, &v[i]) || !isfinite(v[i])) {
            diag_error(d, a->loc, "the arguments of '%s' must be numbers, in order: %s", name, usage);
            return false;
        }
    }
    if (out->kind == DRAW_UNIFORM && !(v[0] < v[1])) {
        diag_error(d, n->loc, "'uniform(lo, hi)' needs lo < hi, not %g >= %g", v[0], v[1]);
        return false;
    }
    if (out->kind == DRAW_NORMAL && !(v[1] > 0)) {
        diag_error(d, n->loc, "the std of 'normal(mean, std)' must be positive, not %g", v[1]);
        return false;
    }
    out->a = v[0];
    out->b = v[1];
    out->loc = n->loc;
    if (args->n == 3 && args->item[2]->kind == AST_KWARG) {
        diag_error(d, args->item[2]->loc, "the shape of '%s' is its third argument, without a name", name);
        return false;
    }
    *shaped = args->n == 3;
    return !*shaped || draw_shape(mi, args->item[2], mi->pub.real, &out->type, d);
}

/* The task variables: name = draw, each name new. */
static bool check_vars(const ModelImpl *mi, const Ast *task, ModelFamily *fam, Diag *d) {
    const AstList *args = &task->task.arg;
    Model *m = (Model *)&mi->pub;
    bool ok = true;
    fam->var = arena_alloc(&m->arena, (size_t)(args->n + 1) * sizeof *fam->var);
    for (int i = 0; i < args->n; i++) {
        const Ast *kw = args->item[i];
        const char *name = kw->kwarg.key;
        const char *taken = !strcmp(name, "x") || !strcmp(name, "y")      ? "a task field"
                            : ast_map_get(&mi->dims, name)                  ? "a dim"
                            : ast_map_get(&mi->params, name)                ? "a param"
                                                                            : NULL;
        int prev = 0;
        while (prev < fam->nvar && strcmp(fam->var[prev].name, name) != 0)
            prev++;
        if (taken) {
            diag_error(d, kw->loc, "task variable '%s' has the name of %s", name, taken);
            ok = false;
        } else if (prev < fam->nvar) {
            diag_error(d, kw->loc, "task variable '%s' is given twice", name);
            diag_note(d, fam->var[prev].loc, "first given here");
            ok = false;
        }
        ModelDraw *v = &fam->var[fam->nvar++];
        bool shaped;
        *v = (ModelDraw){.name = name, .type = ir_scalar(m->real)};
        ok &= check_draw(mi, kw->kwarg.value, v, &shaped, d) && !taken && prev == fam->nvar - 1;
        v->loc = kw->loc;
    }
    return ok;
}

/* The draws in e, in source order (depth first, left to right), into
 * calls[0..*n) when calls is not NULL. */
static void find_draws(const Ast *e, const Ast **calls, int *n) {
    DrawKind kind;
    switch (e->kind) {
    case AST_CALL:
        if (model_draw_kind(e->call.callee, &kind)) {
            if (calls)
                calls[*n] = e;
            ++*n;
            return;
        }
        for (int i = 0; i < e->call.arg.n; i++)
            find_draws(e->call.arg.item[i], calls, n);
        break;
    case AST_KWARG: find_draws(e->kwarg.value, calls, n); break;
    case AST_NEG: find_draws(e->neg.operand, calls, n); break;
    case AST_BINARY:
        find_draws(e->binary.lhs, calls, n);
        find_draws(e->binary.rhs, calls, n);
        break;
    case AST_LIST:
        for (int i = 0; i < e->list.item.n; i++)
            find_draws(e->list.item.item[i], calls, n);
        break;
    default: break;
    }
}

/* The draws of a family's lines (x's, then y's), their count in *n; free
 * the array with free(). */
static const Ast **line_draws(const Ast *task, int *n) {
    *n = 0;
    for (int i = 0; i < task->task.body.n; i++)
        find_draws(task->task.body.item[i]->assign.value, NULL, n);
    const Ast **calls = malloc((size_t)(*n + 1) * sizeof *calls);
    if (!calls)
        abort();
    *n = 0;
    for (int i = 0; i < task->task.body.n; i++)
        find_draws(task->task.body.item[i]->assign.value, calls, n);
    return calls;
}

/* Lines: x, then y, each once, all before the first field line. */
static bool check_lines(const Ast *task, Diag *d) {
    const AstList *body = &task->task.body;
    const Ast *first_field = task->task.field.n ? task->task.field.item[0] : NULL;
    bool ok = true;
    for (int i = 0; i < body->n; i++) {
        const Ast *s = body->item[i];
        if (first_field && (s->loc.line > first_field->field.set_loc.line ||
                            (s->loc.line == first_field->field.set_loc.line &&
                             s->loc.col > first_field->field.set_loc.col))) {
            diag_error(d, s->loc, "the lines of a task family come before its support and query fields");
            diag_note(d, first_field->field.set_loc, "the first field is here");
            return false;
        }
        if (i < 2 && strcmp(s->assign.name, field_name[i]) == 0)
            continue;
        if (i >= 2)
            diag_error(d, s->loc, "a task family has two lines, x = ... and then y = ...; this is a third");
        else
            diag_error(d, s->loc, "the %s line of a task family assigns %s, not '%s' (x = ..., then y = ...)",
                       i ? "second" : "first", field_name[i], s->assign.name);
        ok = false;
    }
    for (int i = body->n; ok && i < 2; i++) {
        diag_error(d, task->loc, "task family has no line for %s (%s = ...)", field_name[i], field_name[i]);
        ok = false;
    }
    return ok;
}

bool model_check_family(const ModelImpl *mi, const Ast *task, ModelTask *t, Diag *d) {
    Model *m = (Model *)&mi->pub;
    ModelFamily *fam = arena_alloc(&m->arena, sizeof *fam);
    *fam = (ModelFamily){0};
    bool ok = check_vars(mi, task, fam, d);
    if (!check_lines(task, d))
        return false;
    int n;
    const Ast **calls = line_draws(task, &n);
    const IrType field[2][2] = {{t->support_x, t->support_y}, {t->query_x, t->query_y}};
    for (int s = 0; s < 2; s++)
        fam->draw[s] = arena_alloc(&m->arena, (size_t)(n + 1) * sizeof *fam->draw[s]);
    const Ast *x_line = task->task.body.item[0];
    int in_x = 0;
    find_draws(x_line->assign.value, NULL, &in_x);
    for (int k = 0; k < n; k++) {
        int f = k < in_x ? 0 : 1;
        ModelDraw draw = {.name = field_name[f]};
        bool shaped;
        if (!check_draw(mi, calls[k], &draw, &shaped, d)) {
            ok = false;
            continue;
        }
        for (int s = 0; s < 2; s++) {
            ModelDraw *out = &fam->draw[s][fam->ndraw[s]++];
            *out = draw;
            if (!shaped)        /* the field's shape, of reals */
                out->type = ir_type(m->real, field[s][f].rank, field[s][f].dim);
        }
    }
    free(calls);
    if (ok)
        t->family = fam;
    return ok;
}

/* --- lowering --- */

typedef struct {
    const Ast **call;           /* the lines' draws, in source order */
    const ValueId *value;       /* their inputs */
    int n;
} Draws;

static ValueId draw_input(void *ctx, const Ast *call) {
    const Draws *dr = ctx;
    int k = 0;
    while (k < dr->n && dr->call[k] != call)
        k++;
    return dr->value[k];        /* every draw of a line was found by line_draws */
}

/* The task declaration of m. */
static const Ast *task_decl(const Model *m) {
    const AstList *decls = &m->ast->program.decl;
    for (int i = 0; i < decls->n; i++)
        if (decls->item[i]->kind == AST_TASK)
            return decls->item[i];
    return NULL;
}

/* Labels that an argmax over E values gives lie in [0, E): E may not
 * exceed the classes the loss encodes them into (0: it does not). */
static bool labels_in_range(IrFunc *f, ValueId v, int classes, const Ast *line, Diag *d) {
    const IrNode *n = ir_node(f, v);
    if (n->op != OP_ARGMAX || classes == 0)
        return true;
    int e = ir_value_type(f, n->arg[0]).dim[n->list[0]];
    if (e <= classes)
        return true;
    diag_error(d, line->loc, "y is an argmax over %d values, but the loss encodes its labels into %d classes", e,
               classes);
    return false;
}

/* Set s of the family as a function of mod: x's line, then y's, each value
 * of its field's type. */
static bool lower_set(const ModelImpl *mi, const Ast *task, int s, IrModule *mod, Diag *d) {
    const Model *m = &mi->pub;
    const ModelFamily *fam = m->task.family;
    const IrType field[2] = {s ? m->task.query_x : m->task.support_x, s ? m->task.query_y : m->task.support_y};
    IrFunc *f = ir_func_new(mod, s ? "family.query" : "family.support");
    AstMap scope = {0};
    for (int i = 0; i < fam->nvar; i++)
        ast_map_put(&scope, fam->var[i].name, ir_input(f, fam->var[i].name, fam->var[i].type, fam->var[i].loc));
    ValueId *value = malloc(((size_t)fam->ndraw[s] + 1) * sizeof *value);
    if (!value)
        abort();
    int count[2] = {0, 0};
    for (int k = 0; k < fam->ndraw[s]; k++) {
        const ModelDraw *dw = &fam->draw[s][k];
        int which = dw->name[0] == 'y';
        char name[32];
        snprintf(name, sizeof name, "%s.%d", dw->name, count[which]++);
        value[k] = ir_input(f, name, dw->type, dw->loc);
    }
    int n;
    Draws dr = {line_draws(task, &n), value, fam->ndraw[s]};
    bool ok = true;
    for (int i = 0; ok && i < 2; i++) {
        const Ast *line = task->task.body.item[i];
        ValueId v = model_lower_family_expr(mi, f, &scope, line->assign.value, draw_input, &dr, d);
        ok = v != IR_NONE;
        IrType t = ok ? ir_value_type(f, v) : field[i];
        if (!ir_type_eq(t, field[i])) {
            char want[64], got[64];
            diag_error(d, line->loc, "%s %s is declared %s, but its line gives %s", set_name[s], field_name[i],
                       ir_type_str(field[i], want, sizeof want), ir_type_str(t, got, sizeof got));
            if (field[i].dtype == DT_I32 && t.dtype != DT_I32)
                diag_note(d, line->loc, "i32 labels are computed with argmax");
            ok = false;
        }
        ok = ok && labels_in_range(f, v, m->task.classes[s][i], line, d);
        if (ok) {
            ast_map_put(&scope, field_name[i], v);
            ir_output(f, v);
        }
    }
    free(dr.call);
    free(value);
    ast_map_free(&scope);
    return ok;
}

IrModule *model_lower_family(const Model *m, Diag *d) {
    const ModelImpl *mi = model_impl(m);
    const Ast *task = task_decl(m);
    IrModule *mod = ir_module_new(m->real);
    bool ok = lower_set(mi, task, 0, mod, d);
    if (ok && !lower_set(mi, task, 1, mod, d)) {
        char bx[64], by[64];
        diag_note(d, task->loc, "while computing the query set, x: %s, y: %s",
                  ir_type_str(m->task.query_x, bx, sizeof bx), ir_type_str(m->task.query_y, by, sizeof by));
        ok = false;
    }
    if (!ok) {
        ir_module_free(mod);
        return NULL;
    }
    return mod;
}
