/* Transposed products: transpose(matmul(a, b)) becomes matmul(transpose(b),
 * transpose(a)) where every use of the product is such a transpose.  A
 * weight's gradient comes out of autodiff as x^T @ g, read transposed into
 * the weight's [out, in] layout; this way it is computed in that layout,
 * and everything downstream (the inner step, the meta-gradient sums) reads
 * it densely.  Likewise transpose(x + y) becomes transpose(x) +
 * transpose(y) (any elementwise op of matrices) where every use of the sum
 * is such a transpose, so that the transposes reach the products that
 * make x and y (a gradient summed over two paths) in the next round.
 * Transposes are views in the back end, so the operands cost nothing;
 * each element is the same sum over k in the same order. */
#include "passes.h"

#include <stdlib.h>

/* v is an elementwise op whose operands are matrices like its result. */
static bool elementwise_matrix(const IrFunc *f, ValueId v) {
    const IrNode *nd = &f->node[v];
    IrKind k = ir_op_info[nd->op].kind;
    if ((k != KIND_UNARY && k != KIND_BINARY) || nd->type.rank != 2)
        return false;
    for (int i = 0; i < ir_op_info[nd->op].arity; i++)
        if (!ir_type_eq(f->node[nd->arg[i]].type, nd->type))
            return false;
    return true;
}

/* A transpose of a folded value (at->ctx: fold[]) becomes the value built
 * from its operands' transposes, a product's operands swapped. */
static ValueId unfold(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired) {
    const bool *fold = at->ctx;
    if (n->op != OP_TRANSPOSE || !fold[at->f->node[at->v].arg[0]])
        return IR_NONE;
    IrNode t = at->f->node[at->f->node[at->v].arg[0]];
    for (int i = 0; i < ir_op_info[t.op].arity; i++)
        t.arg[i] = pass_flip(g, at->map[t.arg[i]], t.loc);
    if (t.op == OP_MATMUL) {
        ValueId a = t.arg[0];
        t.arg[0] = t.arg[1], t.arg[1] = a;
    }
    t.type = n->type;
    *fired = true;
    return ir_emit(g, &t, NULL);
}

bool pass_transpose(IrFunc *f) {
    int n = f->nnode;
    /* fold[v]: v is a product, or an elementwise op of matrices, that only
     * transposes (of rank 2) read; it is built where its transposes are */
    bool *fold = calloc((size_t)n + 1, sizeof *fold);
    for (ValueId v = 0; v < n; v++)
        fold[v] = f->node[v].op == OP_MATMUL || elementwise_matrix(f, v);
    for (ValueId v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int i = 0; i < ir_op_info[nd->op].arity; i++)
            if (nd->op != OP_TRANSPOSE)
                fold[nd->arg[i]] = false;
    }
    for (int j = 0; j < f->noutput; j++)
        fold[f->output[j]] = false;
    bool any = false;
    for (ValueId v = 0; v < n; v++)
        any |= f->node[v].op == OP_TRANSPOSE && fold[f->node[v].arg[0]];
    bool *keep = malloc((size_t)n + 1);
    for (ValueId v = 0; v < n; v++)
        keep[v] = !fold[v];
    bool changed = any && pass_rebuild(f, unfold, fold, keep, true);
    free(keep);
    free(fold);
    return changed;
}
