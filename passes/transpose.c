/* Transposed products: transpose(matmul(a, b)) becomes matmul(transpose(b),
 * transpose(a)) where every use of the product is such a transpose.  A
 * weight's gradient comes out of autodiff as x^T @ g, read transposed into
 * the weight's [out, in] layout; this way it is computed in that layout,
 * and everything downstream (the inner step, the meta-gradient sums) reads
 * it densely.  Likewise transpose(x + y) becomes transpose(x) +
 * transpose(y) (any elementwise op of matrices) where every use of the sum
 * is such a transpose or a value folded in the same way, so that the
 * transposes reach the products that make x and y (a gradient summed over
 * two paths), all in one run.
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

typedef struct {
    bool *fold;                 /* fold[v]: v is built where its transposes are */
    ValueId *flipped;           /* a folded value's transpose in the new body, or IR_NONE */
    ValueId *stack;             /* room for the search in transposed() */
} Fold;

/* Folded value x of the old body, transposed, in the new body g: built from
 * its operands' transposes (a product's operands swapped), where an operand
 * is folded too, from that one's transposed build.  A folded value that
 * several transposes read is built once.  The search keeps its own stack,
 * since a chain of folded values is as long as the inner loop. */
static ValueId transposed(IrFunc *g, const RebuildAt *at, Fold *fo, ValueId x) {
    int top = 0;
    fo->stack[top++] = x;
    while (top > 0) {
        ValueId v = fo->stack[top - 1];
        if (fo->flipped[v] != IR_NONE) {
            top--;
            continue;
        }
        IrNode t = at->f->node[v];
        int arity = ir_op_info[t.op].arity;
        bool ready = true;
        for (int i = arity - 1; i >= 0; i--)     /* the first operand is built first */
            if (fo->fold[t.arg[i]] && fo->flipped[t.arg[i]] == IR_NONE) {
                fo->stack[top++] = t.arg[i];
                ready = false;
            }
        if (!ready)
            continue;
        top--;
        for (int i = 0; i < arity; i++)
            t.arg[i] = fo->fold[t.arg[i]] ? fo->flipped[t.arg[i]] : pass_flip(g, at->map[t.arg[i]], t.loc);
        if (t.op == OP_MATMUL) {
            ValueId a = t.arg[0];
            t.arg[0] = t.arg[1], t.arg[1] = a;
        }
        int rows = t.type.dim[0];
        t.type.dim[0] = t.type.dim[1], t.type.dim[1] = rows;
        fo->flipped[v] = ir_emit(g, &t, NULL);
    }
    return fo->flipped[x];
}

/* A transpose of a folded value (at->ctx: the Fold) becomes the value built
 * from its operands' transposes. */
static ValueId unfold(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired) {
    Fold *fo = at->ctx;
    ValueId x = at->f->node[at->v].arg[0];
    if (n->op != OP_TRANSPOSE || !fo->fold[x])
        return IR_NONE;
    *fired = true;
    return transposed(g, at, fo, x);
}

bool pass_transpose(IrFunc *f) {
    int n = f->nnode;
    /* fold[v]: v is a product, or an elementwise op of matrices, that only
     * transposes (of rank 2) and other folded values read.  One sweep from
     * the end decides it, since every reader of v comes after v: a chain
     * (an inner loop's weights, each step's the last one's minus a
     * gradient) folds in one run. */
    Fold fo = {calloc((size_t)n + 1, sizeof *fo.fold), malloc(((size_t)n + 1) * sizeof *fo.flipped),
               malloc((2 * (size_t)n + 1) * sizeof *fo.stack)};
    bool *read = calloc((size_t)n + 1, sizeof *read);  /* by something that keeps it */
    for (int j = 0; j < f->noutput; j++)
        read[f->output[j]] = true;
    for (ValueId v = n - 1; v >= 0; v--) {
        const IrNode *nd = &f->node[v];
        fo.flipped[v] = IR_NONE;
        fo.fold[v] = !read[v] && (nd->op == OP_MATMUL || elementwise_matrix(f, v));
        if (nd->op != OP_TRANSPOSE && !fo.fold[v])
            for (int i = 0; i < ir_op_info[nd->op].arity; i++)
                read[nd->arg[i]] = true;
    }
    bool any = false;
    bool *keep = malloc((size_t)n + 1);
    for (ValueId v = 0; v < n; v++) {
        any |= f->node[v].op == OP_TRANSPOSE && fo.fold[f->node[v].arg[0]];
        keep[v] = !fo.fold[v];
    }
    bool changed = any && pass_rebuild(f, unfold, &fo, keep, true);
    free(keep);
    free(read);
    free(fo.fold);
    free(fo.flipped);
    free(fo.stack);
    return changed;
}
