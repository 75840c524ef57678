/* Static checks of every `def`, before any shapes are known: each name
 * resolves (locals and arguments, then params, then dims), each call names
 * a builtin or a def with the right number of arguments, literal arguments
 * (axes, exponents, reshape sizes) are literals, and no def calls itself
 * directly or through others.  Unused defs are checked too, and each
 * problem is reported once, however often the def is called. */
#include "model_impl.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int callee;                 /* index in ModelImpl.def */
    const Ast *call;
} CallEdge;

typedef struct {
    CallEdge *edge;
    int n, cap;
} CallEdges;

typedef struct {
    const ModelImpl *mi;
    Diag *d;
    AstMap scope;               /* names bound so far in the current def */
    CallEdges *calls;           /* per def: the defs it calls */
    int cur;                    /* the def being checked */
} Resolve;

static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size);
    if (!p) {
        fprintf(stderr, "mamlc: out of memory\n");
        abort();
    }
    return p;
}

static void add_edge(Resolve *r, int callee, const Ast *call) {
    CallEdges *e = &r->calls[r->cur];
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 4;
        e->edge = xrealloc(e->edge, (size_t)e->cap * sizeof *e->edge);
    }
    e->edge[e->n++] = (CallEdge){callee, call};
}

static void resolve_expr(Resolve *r, const Ast *e);

static void resolve_name(Resolve *r, const Ast *e) {
    const char *id = e->name.id;
    if (ast_map_get(&r->scope, id) || ast_map_get(&r->mi->params, id) || ast_map_get(&r->mi->dims, id))
        return;
    if (ast_map_get(&r->mi->defs, id) || model_builtin(id))
        diag_error(r->d, e->loc, "'%s' is a function; call it as %s(...)", id, id);
    else
        diag_error(r->d, e->loc, "unknown name '%s'", id);
}

static void arity_error(Resolve *r, const Ast *call, int n, int min, int max) {
    if (min == max)
        diag_error(r->d, call->loc, "'%s' takes %d argument%s, but %d %s given", call->call.callee, min,
                   min == 1 ? "" : "s", n, n == 1 ? "was" : "were");
    else
        diag_error(r->d, call->loc, "'%s' takes %d to %d arguments, but %d %s given", call->call.callee, min, max,
                   n, n == 1 ? "was" : "were");
}

/* The extents of reshape: dim expressions in range, or one -1. */
static void resolve_shape(Resolve *r, const Ast *call, const Ast *a) {
    if (a->kind != AST_LIST) {
        diag_error(r->d, a->loc, "the shape of '%s' must be a list of sizes such as [N, 784]", call->call.callee);
        return;
    }
    if (a->list.item.n > IR_MAX_RANK) {
        diag_error(r->d, a->loc, "shape has %d dimensions; at most %d are allowed", a->list.item.n, IR_MAX_RANK);
        return;
    }
    const Ast *infer = NULL;
    for (int i = 0; i < a->list.item.n; i++) {
        const Ast *x = a->list.item.item[i];
        int v;
        if (!model_is_minus_one(x)) {
            model_extent(r->mi, x, &v, r->d);
        } else if (infer) {
            diag_error(r->d, x->loc, "only one size of a shape can be -1");
            diag_note(r->d, infer->loc, "the first -1 is here");
        } else {
            infer = x;
        }
    }
}

/* An axis or a list of axes: integer literals. */
static void resolve_axes(Resolve *r, const ModelBuiltin *b, const Ast *a) {
    int64_t axis;
    if (a->kind != AST_LIST) {
        if (!model_int_literal(a, &axis))
            diag_error(r->d, a->loc, "the axis of '%s' must be an integer literal or a list of them", b->name);
        return;
    }
    for (int i = 0; i < a->list.item.n; i++)
        if (!model_int_literal(a->list.item.item[i], &axis)) {
            diag_error(r->d, a->list.item.item[i]->loc, "the axes of '%s' must be integer literals", b->name);
            return;
        }
}

/* A builtin's positional arguments (by their kinds), then its keyword
 * arguments. */
static void resolve_builtin(Resolve *r, const Ast *call, const ModelBuiltin *b) {
    const AstList *args = &call->call.arg;
    int npos = model_call_positional(call);
    int64_t kw[BUILTIN_MAX_KWARGS];
    bool misplaced = false;         /* a positional argument after a keyword one: reported here */
    for (int i = npos; i < args->n; i++)
        misplaced |= args->item[i]->kind != AST_KWARG;
    if (npos < args->n && b->kw[0].name)
        model_builtin_kwargs(r->mi, call, b, kw, r->d);
    if (!misplaced && (npos < b->min_args || npos > b->max_args)) {
        arity_error(r, call, npos, b->min_args, b->max_args);
        return;
    }
    for (int i = 0; i < npos && i < b->max_args; i++) {
        const Ast *a = args->item[i];
        int64_t axis;
        int size;
        double number;
        if (b->arg[i] == BARG_VALUE)
            resolve_expr(r, a);
        else if (b->arg[i] == BARG_AXIS && !model_int_literal(a, &axis))
            diag_error(r->d, a->loc, "the axis of '%s' must be an integer literal", b->name);
        else if (b->arg[i] == BARG_SHAPE)
            resolve_shape(r, call, a);
        else if (b->arg[i] == BARG_SIZE)
            model_extent(r->mi, a, &size, r->d);
        else if (b->arg[i] == BARG_AXES)
            resolve_axes(r, b, a);
        else if (b->arg[i] == BARG_NUMBER && !model_const_expr(r->mi, &r->scope, a, &number))
            diag_error(r->d, a->loc, "argument %d of '%s' must be a constant (numbers and dims)", i + 1, b->name);
    }
}

static void resolve_call(Resolve *r, const Ast *call) {
    const AstList *args = &call->call.arg;
    const ModelBuiltin *b = model_builtin(call->call.callee);
    int npos = model_call_positional(call);
    if (npos < args->n && (!b || !b->kw[0].name)) {
        const Ast *a = args->item[npos];
        diag_error(r->d, a->loc, "keyword argument '%s' in a call of '%s' (only positional arguments are allowed "
                   "here)", a->kwarg.key, call->call.callee);
        return;
    }
    if (b) {
        resolve_builtin(r, call, b);
        return;
    }
    const int *at = ast_map_get(&r->mi->defs, call->call.callee);
    if (!at) {
        diag_error(r->d, call->loc, "unknown function '%s'", call->call.callee);
        return;
    }
    const Ast *def = r->mi->def[*at];
    if (args->n != def->def.arg.n) {
        arity_error(r, call, args->n, def->def.arg.n, def->def.arg.n);
        diag_note(r->d, def->loc, "'%s' is defined here", def->def.name);
    }
    add_edge(r, *at, call);
    for (int i = 0; i < args->n; i++)
        resolve_expr(r, args->item[i]);
}

static void resolve_expr(Resolve *r, const Ast *e) {
    double v;
    switch (e->kind) {
    case AST_NUM: break;
    case AST_NAME: resolve_name(r, e); break;
    case AST_NEG: resolve_expr(r, e->neg.operand); break;
    case AST_CALL: resolve_call(r, e); break;
    case AST_BINARY:
        resolve_expr(r, e->binary.lhs);
        if (e->binary.op != BIN_POW)
            resolve_expr(r, e->binary.rhs);
        else if (!model_const_expr(r->mi, &r->scope, e->binary.rhs, &v))
            diag_error(r->d, e->binary.rhs->loc, "the exponent of '^' must be a constant (numbers and dims)");
        break;
    case AST_STR: diag_error(r->d, e->loc, "a string cannot be used in an expression"); break;
    case AST_LIST: diag_error(r->d, e->loc, "a list [...] can only be the shape of 'reshape' or the axes of a builtin"); break;
    default: diag_error(r->d, e->loc, "expected an expression"); break;
    }
}

static void resolve_def(Resolve *r, const Ast *def) {
    const AstList *args = &def->def.arg, *body = &def->def.body;
    for (int i = 0; i < args->n; i++) {
        const Ast *a = args->item[i];
        const int *prev = ast_map_get(&r->scope, a->name.id);
        if (prev) {
            diag_error(r->d, a->loc, "duplicate argument '%s' in '%s'", a->name.id, def->def.name);
            diag_note(r->d, args->item[*prev]->loc, "first argument '%s' is here", a->name.id);
        }
        ast_map_put(&r->scope, a->name.id, i);
    }
    for (int i = 0; i < body->n; i++) {
        const Ast *s = body->item[i];
        if (s->kind == AST_ASSIGN) {
            resolve_expr(r, s->assign.value);
            ast_map_put(&r->scope, s->assign.name, 0);
        } else {
            resolve_expr(r, s->ret.value);
        }
    }
    ast_map_free(&r->scope);
}

/* "f -> g -> f" for the cycle stack[from..top] closed by `callee`. */
static void cycle_text(const Resolve *r, const int *stack, int from, int top, int callee, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = from; i <= top && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s -> ", r->mi->def[stack[i]]->def.name);
    if (used < size)
        snprintf(buf + used, size - used, "%s", r->mi->def[callee]->def.name);
}

/* Depth-first search of the call graph with an explicit stack (the chain
 * of calls can be as long as the file); a call back into a def still on
 * the stack closes a cycle. */
static void check_recursion(Resolve *r) {
    int n = r->mi->ndef;
    char *state = calloc((size_t)n + 1, 1);         /* 0 new, 1 on stack, 2 done */
    int *stack = malloc(((size_t)n + 1) * sizeof *stack);
    int *next = calloc((size_t)n + 1, sizeof *next); /* next edge to follow */
    if (!state || !stack || !next)
        abort();
    for (int root = 0; root < n; root++) {
        if (state[root])
            continue;
        int top = 0;
        stack[0] = root;
        state[root] = 1;
        while (top >= 0) {
            int u = stack[top];
            if (next[u] == r->calls[u].n) {
                state[u] = 2;
                top--;
                continue;
            }
            CallEdge e = r->calls[u].edge[next[u]++];
            if (state[e.callee] == 0) {
                state[e.callee] = 1;
                stack[++top] = e.callee;
            } else if (state[e.callee] == 1) {
                int from = top;
                while (stack[from] != e.callee)
                    from--;
                char cycle[256];
                cycle_text(r, stack, from, top, e.callee, cycle, sizeof cycle);
                diag_error(r->d, e.call->loc, "recursive call of '%s' (%s); recursion is not supported",
                           e.call->call.callee, cycle);
            }
        }
    }
    free(state);
    free(stack);
    free(next);
}

bool model_resolve(const ModelImpl *mi, Diag *d) {
    int errors = d->nerrors;
    Resolve r = {.mi = mi, .d = d};
    r.calls = calloc((size_t)mi->ndef + 1, sizeof *r.calls);
    if (!r.calls)
        abort();
    for (int i = 0; i < mi->ndef; i++) {
        r.cur = i;
        resolve_def(&r, mi->def[i]);
    }
    check_recursion(&r);
    for (int i = 0; i < mi->ndef; i++)
        free(r.calls[i].edge);
    free(r.calls);
    return d->nerrors == errors;
}
