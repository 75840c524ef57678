/* A checked .mdl program: what the rest of the compiler needs from the
 * frontend.  model_load_text parses (frontend/lexer.l, frontend/parser.y),
 * builds the AST (frontend/ast.c) and checks it (frontend/model.c): dims
 * evaluated, params, task and meta block validated.  Function bodies stay as
 * AST until model_lower_module lowers the functions the meta-step needs into
 * IR; model_lower_call lowers one call, inlining every call inside it afresh,
 * so shape-polymorphic `def`s are specialised to the shapes they meet. */
#ifndef MAMLC_MODEL_H
#define MAMLC_MODEL_H

#include <stdbool.h>
#include "../ir/ir.h"

typedef struct Ast Ast;         /* frontend/ast.h */

typedef enum {
    INIT_ZEROS, INIT_ONES, INIT_HE, INIT_GLOROT, INIT_NORMAL, INIT_UNIFORM, INIT_CONST
} InitKind;

typedef struct {
    InitKind kind;
    double a, b;                /* NORMAL: std in a; UNIFORM: [a, b); CONST: a */
} ParamInit;

typedef struct {
    const char *name;
    IrType type;                /* dtype is the model's real type */
    ParamInit init;
    SrcLoc loc;
    int lr_for;                 /* -1 for a `param`; for a learned inner learning
                                   rate (Meta-SGD), the param it belongs to */
    const char *decl;           /* the declared name, which @loss's argument
                                   takes: `name` but for a per_step param,
                                   whose tensors are NAME.0 .. NAME.{S-1} */
    bool per_step;              /* `param g : [..] = ones per_step;` */
} ModelParam;

typedef struct {
    const char *name;
    int value;
    SrcLoc loc;
} ModelDim;

typedef struct {
    const char *name;
    bool is_range;              /* `amplitude = [0.1, 5.0]` */
    bool is_string;             /* `path = "..."` */
    bool is_bool;               /* `rotations = true` */
    bool is_list;               /* `mean = [0.5, 0.5, 0.5]`: value[0..nvalue) */
    double lo, hi;              /* number: lo == hi; range: [lo, hi] */
    const char *str;
    const double *value;
    int nvalue;
    SrcLoc loc;
} TaskArg;

typedef enum { DRAW_UNIFORM, DRAW_NORMAL } DrawKind;

/* A random draw of a task family: every element of `type` independently
 * uniform on [a, b) (uniform(a, b)) or normal with mean a and std b
 * (normal(a, b)). */
typedef struct {
    const char *name;           /* the task variable, or the field a line's draw is in */
    DrawKind kind;
    double a, b;
    IrType type;                /* real */
    SrcLoc loc;
} ModelDraw;

/* A task family (`task family(vars) { x = ..; y = ..; fields }`): its task
 * variables, drawn once per task, and the draws of its lines, once per set. */
typedef struct {
    ModelDraw *var;
    int nvar;
    ModelDraw *draw[2];         /* [support, query]: the line x's draws, then y's, in source order */
    int ndraw[2];
} ModelFamily;

typedef struct {
    const char *kind;           /* "sinusoid", "external", ... */
    TaskArg *arg;
    int narg;
    IrType support_x, support_y, query_x, query_y;
    /* [support, query][x, y]: for an i32 field whose labels the loss one-hot
     * encodes (cross_entropy), the number of classes, so its labels must lie
     * in [0, classes); 0 for reals and for i32 fields the loss never encodes. */
    int classes[2][2];
    ModelFamily *family;        /* task family: its draws; NULL for other kinds */
    SrcLoc loc;
} ModelTask;

typedef struct {
    const char *name;           /* -D NAME=VALUE */
    int value;
} DimOverride;

typedef struct {
    DType real;                 /* DT_F32 (default) or DT_F64 */
    const DimOverride *defines;
    int ndefines;
    const char *const *meta;    /* --meta KEY=VALUE: entries that replace the meta block's */
    int nmeta;
} ModelOptions;

typedef struct {
    const char *file;
    DType real;
    Ast *ast;
    ModelDim *dim;      int ndim;
    /* The meta-learned tensors in the order of the flat parameter vector:
     * param[0..nparam) are the `param`s, param[nparam..ntensor) the learned
     * inner learning rates (named "lr.NAME"), if any, then the copies
     * NAME.1 .. NAME.{S-1} of each per_step param NAME, in param order
     * (its own slot holds NAME.0; S = inner_steps). */
    ModelParam *param;  int nparam, ntensor;
    ModelTask task;
    MetaConfig meta;            /* adapt has an entry per param */
    /* With running statistics (meta.eval_mode given): each batch_norm the
     * loss meets at the support shapes, in order (model_lower_bn). */
    struct ModelBn *bn;
    int nbn;
    bool has_metric;            /* `def metric(x, y)` present */
    Arena arena;                /* owns everything above */
} Model;

/* Parse and check the .mdl program `text` (len bytes) of the file `file`.
 * Returns NULL after reporting every error through d (syntax, names, dims,
 * meta keys, ...).  The tools read the file (tool_read_file). */
Model *model_load_text(const char *file, const char *text, size_t len,
                       const ModelOptions *opt, Diag *d);
void model_free(Model *m);

/* Inline a call of the model's function `fn` into f: args[0..nargs) are the
 * argument values and params[i] stands for the i-th `param`.  Returns the
 * result value, or IR_NONE after reporting (unknown function, arity, shapes,
 * a non-differentiable op where `differentiable` is set, recursion). */
ValueId model_lower_call(const Model *m, IrFunc *f, const char *fn,
                         const ValueId *params, const ValueId *args, int nargs,
                         bool differentiable, Diag *d);

/* The model as IR, for the meta-step builder (passes/meta_step.c): a module
 * of the real type holding m's meta configuration and, each taking the
 * params and then its data,
 *   @loss(params..., x, y)        at the support shapes,
 *   @loss.query(params..., x, y)  at the query shapes, where they differ,
 *   @metric(params..., x, y)      at the query shapes, if `def metric`,
 *   @net(params..., x)            at the query x, if `def net`,
 * and, with running statistics (m->nbn > 0: model_lower_bn),
 *   @bn.stats(params..., x, y)    the batch statistics [L], support shapes,
 *   @loss.running(params..., bn, x, y), @loss.query.running (where the
 *   query shapes differ) and @metric.running: normalised with bn [L].
 * Returns NULL after reporting through d. */
IrModule *model_lower_module(const Model *m, Diag *d);

/* A task family as IR, for its sampler: a module of the real type with
 *   @family.support(vars..., draws...) -> x, y   at the support shapes,
 *   @family.query(vars..., draws...) -> x, y     at the query shapes,
 * whose inputs are the task variables (family->var) and then the draws of
 * that set (family->draw[s]), drawn by the caller.  Returns NULL after
 * reporting through d (a line whose value does not have its field's type,
 * ...).  m's task must be a family. */
IrModule *model_lower_family(const Model *m, Diag *d);

/* Batch norm's running statistics (MAML++'s BNRS): one batch_norm's name
 * (its gamma param's) and feature count C.  Its statistics are 2C reals,
 * the mean and then the variance of each feature; a model's are every
 * batch_norm's in the order the loss meets them (L reals in all). */
typedef struct ModelBn {
    const char *name;
    int channels;
} ModelBn;

typedef enum {
    BN_BATCH,                   /* batch statistics, as model_lower_call */
    BN_STATS,                   /* the result is the batch statistics [L] instead of
                                   fn's value (means, unbiased variances) */
    BN_RUNNING                  /* normalise with the statistics `stats` [L] given */
} ModelBnMode;

/* model_lower_call with every batch_norm in `mode`; with BN_STATS, *bn and
 * *nbn (if bn is not NULL) get each batch_norm's name and features (the
 * caller frees *bn).  IR_NONE after reporting (also: a batch_norm whose
 * gamma is not a param, or two with one gamma). */
ValueId model_lower_bn(const Model *m, IrFunc *f, const char *fn, const ValueId *params, const ValueId *args,
                       int nargs, ModelBnMode mode, ValueId stats, ModelBn **bn, int *nbn, Diag *d);

/* The location of `def fn`, or a zero location if there is none. */
SrcLoc model_func_loc(const Model *m, const char *fn);
bool model_has_func(const Model *m, const char *fn);

/* Print the AST (mamlc --emit=ast). */
void model_dump_ast(FILE *out, const Model *m);

#endif
