/* Private to frontend/: what model.c, resolve.c and lower.c share about a
 * loaded model beyond the public Model of model.h. */
#ifndef MAMLC_MODEL_IMPL_H
#define MAMLC_MODEL_IMPL_H

#include <stdint.h>

#include "ast.h"
#include "model.h"

/* Every Model that model_load_text returns is the first member of one of these. */
typedef struct {
    Model pub;
    const Ast **def;            /* `def` declarations in source order */
    int ndef;
    AstMap defs;                /* def name -> index in def */
    AstMap params;              /* param name -> index in pub.param */
    AstMap dims;                /* dim name -> index in pub.dim */
} ModelImpl;

static inline const ModelImpl *model_impl(const Model *m) { return (const ModelImpl *)m; }

/* --- builtin functions (frontend/lower.c) --- */

typedef enum {
    BARG_VALUE,                 /* any expression, lowered to a value */
    BARG_AXIS,                  /* an integer literal, negative from the end */
    BARG_SHAPE,                 /* a list of dim expressions; one may be -1 */
    BARG_SIZE,                  /* a dim expression from 1 to IR_MAX_DIM */
    BARG_AXES,                  /* an axis, or a list of axes [a, b, ...] */
    BARG_NUMBER,                /* a constant: numbers and dims (model_const_expr) */
} BuiltinArg;

/* A keyword argument of a builtin: a dim expression (integers, dims, + - *),
 * given by keyword only, after the positional arguments. */
typedef struct {
    const char *name;           /* NULL past the last */
    int64_t def;                /* the value when it is not given */
    int64_t min;                /* the smallest value; the largest is IR_MAX_DIM */
    bool same;                  /* also takes the word `same`, bound as BUILTIN_SAME */
} BuiltinKwarg;

#define BUILTIN_SAME (-1)

#define BUILTIN_MAX_KWARGS 2

typedef struct Lower Lower;
typedef struct ModelBuiltin ModelBuiltin;

struct ModelBuiltin {
    const char *name;
    int min_args, max_args;
    BuiltinArg arg[3];          /* what each argument position takes */
    bool metric_only;           /* not differentiable: never inside the loss */
    IrOp op;                    /* the op it maps to, where there is one */
    /* v[i]: argument i lowered, for BARG_VALUE positions */
    ValueId (*lower)(Lower *L, const Ast *call, const ModelBuiltin *b, const ValueId *v);
    BuiltinKwarg kw[BUILTIN_MAX_KWARGS];    /* its keyword arguments */
};

/* The builtin called `name`, or NULL. */
const ModelBuiltin *model_builtin(const char *name);

/* The value of constant expression e: number literals and dims combined
 * by + - * / ^, negation and parentheses; a name bound in `scope` (a local
 * or argument) or a param is not a constant.  False (nothing reported) if e
 * is not one or its value is not finite. */
bool model_const_expr(const ModelImpl *mi, const AstMap *scope, const Ast *e, double *out);

/* The number of positional arguments of `call`: those before its first
 * keyword argument. */
int model_call_positional(const Ast *call);

/* Bind the keyword arguments of `call`, a call of builtin b (which has
 * some): out[i] gets the value of b->kw[i], or its default.  Reports every
 * unknown, repeated, misplaced or out-of-range keyword argument through d;
 * false if any. */
bool model_builtin_kwargs(const ModelImpl *mi, const Ast *call, const ModelBuiltin *b, int64_t *out, Diag *d);

/* --- shared checks (frontend/model.c) --- */

/* n is a number literal, possibly negated: its value in *out. */
bool model_number_literal(const Ast *n, double *out);
/* n is an integer literal, possibly negated, of magnitude <= 2^31. */
bool model_int_literal(const Ast *n, int64_t *out);
/* n is the literal -1 (an inferred reshape extent). */
bool model_is_minus_one(const Ast *n);
/* Evaluate a dim expression (integers, dims, + - * and parentheses) of
 * the dims known so far; false after reporting through d. */
bool model_dim_expr(const ModelImpl *mi, const Ast *n, int64_t *out, Diag *d);
/* Evaluate n as one extent of a shape: a dim expression in 1..IR_MAX_DIM. */
bool model_extent(const ModelImpl *mi, const Ast *n, int *out, Diag *d);

/* --- task families (frontend/family.c) --- */

/* Whether `name` is a distribution of a task family (uniform, normal): its
 * kind in *kind. */
bool model_draw_kind(const char *name, DrawKind *kind);
/* Check the variables and lines of the task family `task` (its fields
 * already in t) and fill t->family; false after reporting through d.  The
 * lines' values are checked by model_lower_family, once the defs are. */
bool model_check_family(const ModelImpl *mi, const Ast *task, ModelTask *t, Diag *d);

/* Lowers a call of uniform or normal in a task family's line. */
typedef ValueId ModelDrawFn(void *ctx, const Ast *call);
/* Lower the expression e of a task family's line into f, not
 * differentiable: names are looked up in scope first, then among the dims;
 * params are refused; draw lowers each call of a distribution.  Calls of
 * defs are inlined as in model_lower_call.  IR_NONE after reporting. */
ValueId model_lower_family_expr(const ModelImpl *mi, IrFunc *f, AstMap *scope, const Ast *e, ModelDrawFn *draw,
                                void *ctx, Diag *d);

/* --- static checks of every def (frontend/resolve.c) ---
 * Names, arities, literal arguments and recursion, independent of shapes.
 * Returns true when no error was found. */
bool model_resolve(const ModelImpl *mi, Diag *d);

#endif
