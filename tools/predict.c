/* Whether a model's net(x) may predict any number of points: its output has
 * one row per point of x, each computed from that point alone.  Then the
 * library's mamlc_predict_points runs the compiled net (which takes the
 * query set's number of points) on chunks of that size.
 *
 * The rule follows the rows of x through @net as the frontend lowers it,
 * conservatively: each value is either independent of x, or has one axis
 * whose index is the point's and along which nothing mixes (its row axis),
 * or mixes points.  Elementwise ops, one-hot encoding, broadcasts, reshapes
 * and transposes that keep the row axis whole, reductions over other axes,
 * a product or convolution whose other operand is independent of x, keep
 * rows apart; anything else mixes them: a reduction over the row axis (a
 * mean over the batch, batch_norm), a product that contracts it or
 * multiplies two values of x, a reshape that splits or merges it. */
#include "predict.h"

#include <stdlib.h>

enum { FREE = -1, MIXED = -2 };     /* a value's row axis, or these */

/* Product of dims [0, n) of t. */
static int64_t prefix(IrType t, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= t.dim[i];
    return p;
}

/* The row axis of a layout op's result from its operand's row axis r. */
static int layout_row(const IrNode *n, IrType in, int r) {
    IrType out = n->type;
    switch (n->op) {
    case OP_RESHAPE:
        /* row-major order kept: the row axis survives where the same
         * elements lie before it and it keeps its extent */
        for (int k = 0; k < out.rank; k++)
            if (out.dim[k] == in.dim[r] && prefix(out, k) == prefix(in, r))
                return k;
        return MIXED;
    case OP_BROADCAST: {
        int k = r + out.rank - in.rank;
        return out.dim[k] == in.dim[r] ? k : MIXED;
    }
    case OP_TRANSPOSE:
        for (int k = 0; k < n->nlist; k++)
            if (n->list[k] == r)
                return k;
        return MIXED;
    default:
        return MIXED;
    }
}

/* The row axis of node n's result from its operands' (row[]). */
static int node_row(const IrNode *n, const int *row, IrType in0) {
    int a = n->arg[0] != IR_NONE ? row[n->arg[0]] : FREE;
    int b = n->arg[1] != IR_NONE ? row[n->arg[1]] : FREE;
    if (a == MIXED || b == MIXED)
        return MIXED;
    if (a == FREE && b == FREE)
        return FREE;
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
        return a;
    case KIND_BINARY:
        return a == FREE ? b : b == FREE || b == a ? a : MIXED;
    case KIND_REDUCE: {
        int below = 0;
        for (int k = 0; k < n->nlist; k++) {
            if (n->list[k] == a)
                return MIXED;
            below += n->list[k] < a;
        }
        return a - below;
    }
    case KIND_LAYOUT:
        return layout_row(n, in0, a);
    case KIND_MATMUL:       /* [m,k] @ [k,n]: rows of the left, columns of the right */
        return a == 0 && b == FREE ? 0 : a == FREE && b == 1 ? 1 : MIXED;
    case KIND_CONV:         /* conv2d(x[N,..], w): the batch axis */
        return n->op == OP_CONV2D && a == 0 && b == FREE ? 0 : MIXED;
    case KIND_OTHER:        /* onehot appends an axis */
        return n->op == OP_ONEHOT ? a : MIXED;
    default:
        return MIXED;
    }
}

/* Whether f's output rows are x's rows, each from its own point (x: the
 * last input, its axis 0 the points). */
static bool rows_apart(const IrFunc *f) {
    int *row = malloc((size_t)(f->nnode ? f->nnode : 1) * sizeof *row);
    if (!row)
        return false;
    ValueId x = f->input[f->ninput - 1];
    for (int i = 0; i < f->nnode; i++) {
        const IrNode *n = &f->node[i];
        if (n->op == OP_INPUT || n->op == OP_CONST)
            row[i] = i == x && n->type.rank >= 1 ? 0 : FREE;
        else
            row[i] = node_row(n, row, n->arg[0] != IR_NONE ? f->node[n->arg[0]].type : n->type);
    }
    ValueId out = f->output[0];
    bool ok = row[out] == 0 && f->node[out].type.dim[0] == f->node[x].type.dim[0];
    free(row);
    return ok;
}

bool lib_predict_info(const Model *md, LibPredict *p, Diag *d) {
    *p = (LibPredict){0};
    if (!model_has_func(md, "net"))
        return true;
    IrModule *m = model_lower_module(md, d);
    IrFunc *net = m ? ir_module_find(m, "net") : NULL;
    if (net) {
        p->present = true;
        p->out = ir_value_type(net, net->output[0]);
        p->any_points = rows_apart(net);
    }
    ir_module_free(m);
    return net != NULL;
}
