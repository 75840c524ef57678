/* IR-to-IR passes.  Each pass is one file with one entry point that reports
 * whether it changed anything; the pipeline (passes/pipeline.c) is the list
 * that runs them. */
#ifndef MAMLC_PASSES_H
#define MAMLC_PASSES_H

#include "../ir/ir.h"

/* --- reverse-mode autodiff (passes/autodiff.c) ---
 * Append to f the gradient of the real scalar y with respect to each of
 * wrt[0..n), into grads[i] (a zero constant where y does not depend on it).
 * The rules emit only ops that have rules themselves, so the result can be
 * differentiated again.  Returns false if y is not a real scalar. */
bool ad_grad(IrFunc *f, ValueId y, int n, const ValueId *wrt, ValueId *grads);

/* The pass form, for `mamlc-opt --pass=grad`: f returns a real scalar;
 * afterwards it returns that scalar followed by its gradient with respect to
 * every real input, in argument order. */
bool pass_grad(IrFunc *f);

/* --- cleanup passes --- */
bool pass_simplify(IrFunc *f);     /* constant folding and algebraic identities */
bool pass_cse(IrFunc *f);          /* merge equal nodes */
bool pass_dce(IrFunc *f);          /* drop nodes no output needs */
/* transpose(matmul(a, b)) -> matmul(transpose(b), transpose(a)) where only
 * transposes read the product (passes/transpose.c) */
bool pass_transpose(IrFunc *f);
/* products regrouped, and distributed over a sum with a low-rank product
 * term, where that saves FLOPs (passes/reassociate.c) */
bool pass_reassociate(IrFunc *f);
/* a large elementwise value computed again before each later reader,
 * instead of held from its first one (passes/remat.c) */
bool pass_remat(IrFunc *f);

/* Rebuild f node by node: for each node (operands already mapped to the new
 * body) `rewrite` returns its value in the new body, or IR_NONE to emit the
 * node unchanged; `at` says where the node stands in f.  Nodes with keep[v]
 * false are dropped (keep may be NULL; a dropped value maps to IR_NONE).
 * With `dedupe` equal nodes merge.  What is built for a node joins its
 * phase, and its value keeps the node's name (ir_name).  Returns true if
 * the body changed. */
typedef struct {
    const IrFunc *f;            /* the body being rebuilt */
    ValueId v;                  /* the node's value in it */
    const ValueId *map;         /* each earlier value of f in the new body */
    void *ctx;                  /* the pass's own, as given to pass_rebuild */
} RebuildAt;
typedef ValueId RewriteFn(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired);
bool pass_rebuild(IrFunc *f, RewriteFn *rewrite, void *ctx, const bool *keep, bool dedupe);
/* Whether v (IR_NONE: no) is a constant of f, every element *c. */
bool pass_constant(const IrFunc *f, ValueId v, double *c);
/* x^T for a matrix x of g: a transpose's operand, else a new transpose. */
ValueId pass_flip(IrFunc *g, ValueId x, SrcLoc loc);

/* --- the pipeline (passes/pipeline.c) --- */
typedef struct {
    bool verify_each;           /* run the verifier after every pass */
    bool print_after_all;
    const char *print_after;    /* a pass name, or NULL: print f after each run
                                   of it that changes f, under a header
                                   "// after NAME (round R): N ops removed" */
    int round;                  /* pass_optimize's round, for the header (0: none) */
    FILE *out;                  /* where printed IR goes */
} PassOptions;

/* The pass called `name` ("simplify", "cse", "transpose", "reassociate", "dce",
 * "remat", "grad"), or NULL. */
typedef bool PassFn(IrFunc *f);
PassFn *pass_lookup(const char *name);
/* Run one named pass under the options (o may be NULL); *changed (may be
 * NULL) says whether it changed f.  False if verification fails. */
bool pass_run(IrFunc *f, const char *name, const PassOptions *o, Diag *d, bool *changed);
/* simplify, cse, transpose, reassociate and dce until nothing changes, then
 * remat; false if verification fails. */
bool pass_optimize(IrFunc *f, const PassOptions *o, Diag *d);

/* --- the meta-step builder (passes/meta_step.c) ---
 * Build the meta-training step into m (unoptimised: run pass_optimize) from
 * the model's functions in `model` and its meta configuration model->meta:
 *   @loss(params..., x, y)        -> the task loss, a real scalar, at the
 *                                    support shapes
 *   @loss.query(params..., x, y)  -> the same at the query shapes (optional:
 *                                    @loss serves both when they agree)
 *   @metric(params..., x, y)      -> a metric at the query shapes (optional)
 *   @net(params..., x)            -> the prediction for query inputs (optional)
 * The meta-learned tensors are the params, then a learned inner learning
 * rate "lr.NAME" for each param that has one (ir_meta_has_rate; per-step
 * rates: "lr.NAME.0" ... one per inner step, and adapt_step, which takes
 * step 0's, hands them on moved one step).  Built:
 *   loss(tensors..., x, y)                -> loss            (support shapes)
 *   grad(tensors..., x, y)                -> loss, d loss / d adapted param...
 *   adapt_step(tensors..., x, y)          -> tensors after one inner step..., loss
 *   meta_step(tensors..., sx, sy, qx, qy) -> query loss after adaptation, the
 *                                            meta-gradient for each tensor
 *                                            (Reptile: θ − θ_adapted); with
 *                                            multi_step_loss it takes
 *                                            loss_weights[inner_steps] after qy
 *                                            and returns Σ_s w_s L_Q(θ_s)
 *   meta_step_first(the same)             -> meta_step at first order (order =
 *                                            anneal(..) only)
 *   eval_loss(tensors..., x, y)           -> loss            (query shapes)
 *   metric(tensors..., x, y)              -> metric          (if @metric)
 *   predict(tensors..., x)                -> net(x)          (if @net)
 * A per-step param (model->meta->per_step) is S tensors, NAME.0 in its slot
 * and NAME.1 .. after the rates; meta_step uses copy s in inner step s + 1
 * and copy S - 1 for the query loss, the others copy 0.  With running
 * statistics (@bn.stats, @loss.running, and @loss.query.running and
 * @metric.running where needed) meta_step also returns the batch
 * statistics of its inner steps, [S * L], last, and the inference forms
 *   adapt_step.running, eval_loss.running, metric.running
 *                      (tensors..., bn[L], x, y) -> as without .running
 * are built.
 * `only`, if not NULL, names the one function wanted.  Returns false after
 * reporting through d (a missing meta block, or model functions whose
 * signatures do not fit @loss's). */
bool meta_build(const IrModule *model, IrModule *m, const char *only, Diag *d);

#endif
