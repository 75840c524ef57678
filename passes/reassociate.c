/* Products regrouped to cost fewer FLOPs.  The second-order meta-step is
 * full of products of a low-rank product: the inner step makes W' = W -
 * a g^T s (g and s having one row per support example), the query's first
 * layer reads x W'^T, and the meta-gradient reads s dW'^T where dW' =
 * g_q^T x.  Two rules, each firing only where it saves FLOPs:
 *
 *   chain:       a (p q) = (a p) q, and (p q) b = p (q b)
 *   distribute:  x (w ± c p q) = x w ± c (x p) q, and so on the right
 *
 * A product that something else reads too is computed anyway, so the chain
 * rule counts it as free; `distribute` fires only where nothing else reads
 * the sum, so that the product and the sum (W', a whole weight) go.  The
 * products are seen through negations, multiplications by a constant and
 * transposes.  Each rewrite changes the order of the sums over k, so the
 * results change in their last bits. */
#include "passes.h"

#include <stdlib.h>

/* k * P Q in the old function: P is p (transposed if tp), Q is q likewise. */
typedef struct {
    ValueId p, q;
    bool tp, tq;
    double k;
    bool alone;                 /* nothing else reads the value or what lies between it and the product */
} Product;

/* How many nodes and outputs read value v of the body being rebuilt (the
 * pass's context). */
static int uses(const RebuildAt *at, ValueId v) { return ((const int *)at->ctx)[v]; }

static int64_t rows(const IrFunc *f, ValueId v, bool t) { return f->node[v].type.dim[t ? 1 : 0]; }
static int64_t cols(const IrFunc *f, ValueId v, bool t) { return f->node[v].type.dim[t ? 0 : 1]; }

/* FLOPs of an [m,k] by [k,n] product. */
static int64_t cost(int64_t m, int64_t k, int64_t n) { return 2 * m * k * n; }

/* v as k * P Q through negations, multiplications by a constant and
 * transposes of matrices; false if it is none of these. */
static bool as_product(const RebuildAt *at, ValueId v, Product *out) {
    const IrFunc *f = at->f;
    bool t = false;
    *out = (Product){.k = 1, .alone = true};
    for (;;) {
        const IrNode *n = &f->node[v];
        double c;
        out->alone &= uses(at, v) == 1;
        if (n->op == OP_MUL && pass_constant(f, n->arg[0], &c))
            out->k *= c, v = n->arg[1];
        else if (n->op == OP_MUL && pass_constant(f, n->arg[1], &c))
            out->k *= c, v = n->arg[0];
        else if (n->op == OP_NEG)
            out->k = -out->k, v = n->arg[0];
        else if (n->op == OP_TRANSPOSE && n->type.rank == 2)
            t = !t, v = n->arg[0];
        else
            break;
    }
    const IrNode *n = &f->node[v];
    if (n->op != OP_MATMUL)
        return false;
    /* (P Q)^T = Q^T P^T */
    out->p = n->arg[t ? 1 : 0], out->tp = t;
    out->q = n->arg[t ? 0 : 1], out->tq = t;
    return true;
}

/* Old value v (transposed if t) in the new body g. */
static ValueId value(IrFunc *g, const RebuildAt *at, ValueId v, bool t) {
    return t ? pass_flip(g, at->map[v], at->f->node[v].loc) : at->map[v];
}

/* k * x */
static ValueId scale(IrFunc *g, double k, ValueId x, SrcLoc loc) {
    if (k == 1)
        return x;
    if (k == -1)
        return ir_unary(g, OP_NEG, x, loc, NULL);
    IrType t = g->node[x].type;
    return ir_binary(g, OP_MUL, ir_const(g, t.dtype == DT_F32 ? (float)k : k, t, loc), x, loc, NULL);
}

/* k * (a P) Q in the new body g, a being new. */
static ValueId left_first(IrFunc *g, const RebuildAt *at, ValueId a, const Product *pq, SrcLoc loc) {
    ValueId ap = ir_matmul(g, a, value(g, at, pq->p, pq->tp), loc, NULL);
    return scale(g, pq->k, ir_matmul(g, ap, value(g, at, pq->q, pq->tq), loc, NULL), loc);
}

/* k * P (Q b) in the new body g, b being new. */
static ValueId right_first(IrFunc *g, const RebuildAt *at, const Product *pq, ValueId b, SrcLoc loc) {
    ValueId qb = ir_matmul(g, value(g, at, pq->q, pq->tq), b, loc, NULL);
    return scale(g, pq->k, ir_matmul(g, value(g, at, pq->p, pq->tp), qb, loc, NULL), loc);
}

/* FLOPs of a P Q (a being [m, P's rows]) grouped as (a P) Q, and of P Q
 * (b being [Q's cols, n]) grouped as P (Q b). */
static int64_t cost_left_first(const IrFunc *f, int64_t m, const Product *pq) {
    return cost(m, rows(f, pq->p, pq->tp), cols(f, pq->p, pq->tp)) + cost(m, rows(f, pq->q, pq->tq), cols(f, pq->q, pq->tq));
}
static int64_t cost_right_first(const IrFunc *f, const Product *pq, int64_t n) {
    return cost(rows(f, pq->q, pq->tq), cols(f, pq->q, pq->tq), n) + cost(rows(f, pq->p, pq->tp), cols(f, pq->p, pq->tp), n);
}
static int64_t cost_product(const IrFunc *f, const Product *pq) {
    return cost(rows(f, pq->p, pq->tp), cols(f, pq->p, pq->tp), cols(f, pq->q, pq->tq));
}

/* An add or sub of two matrices of its own type that only one node reads. */
static bool lone_sum(const RebuildAt *at, ValueId v) {
    const IrFunc *f = at->f;
    const IrNode *n = &f->node[v];
    return (n->op == OP_ADD || n->op == OP_SUB) && n->type.rank == 2 && uses(at, v) == 1 &&
           ir_type_eq(f->node[n->arg[0]].type, n->type) && ir_type_eq(f->node[n->arg[1]].type, n->type);
}

/* The product at->v of the body being rebuilt, regrouped in the new body g;
 * IR_NONE if no rule saves FLOPs. */
static ValueId regroup(IrFunc *g, const RebuildAt *at) {
    const IrFunc *f = at->f;
    const IrNode *n = &f->node[at->v];
    ValueId a = n->arg[0], b = n->arg[1];
    int64_t m = f->node[a].type.dim[0], k = f->node[a].type.dim[1], cn = f->node[b].type.dim[1];
    int64_t here = cost(m, k, cn);
    Product pq;
    /* chain */
    if (as_product(at, b, &pq) && cost_left_first(f, m, &pq) < here + (pq.alone ? cost_product(f, &pq) : 0))
        return left_first(g, at, at->map[a], &pq, n->loc);
    if (as_product(at, a, &pq) && cost_right_first(f, &pq, cn) < here + (pq.alone ? cost_product(f, &pq) : 0))
        return right_first(g, at, &pq, at->map[b], n->loc);
    /* distribute */
    for (int side = 0; side < 2; side++) {
        ValueId s = n->arg[side];
        if (!lone_sum(at, s))
            continue;
        const IrNode *sum = &f->node[s];
        for (int term = 0; term < 2; term++) {
            if (!as_product(at, sum->arg[term], &pq) || !pq.alone)
                continue;
            int64_t regrouped = side ? cost_left_first(f, m, &pq) : cost_right_first(f, &pq, cn);
            if (regrouped >= cost_product(f, &pq))
                continue;
            ValueId other = at->map[sum->arg[!term]];
            ValueId rest = side ? ir_matmul(g, at->map[a], other, n->loc, NULL)
                                : ir_matmul(g, other, at->map[b], n->loc, NULL);
            ValueId low = side ? left_first(g, at, at->map[a], &pq, n->loc)
                               : right_first(g, at, &pq, at->map[b], n->loc);
            return term ? ir_binary(g, sum->op, rest, low, n->loc, NULL)
                        : ir_binary(g, sum->op, low, rest, n->loc, NULL);
        }
    }
    return IR_NONE;
}

static ValueId rewrite(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired) {
    if (n->op != OP_MATMUL)
        return IR_NONE;
    ValueId v = regroup(g, at);
    *fired = v != IR_NONE;
    return v;
}

bool pass_reassociate(IrFunc *f) {
    int *uses = calloc((size_t)f->nnode + 1, sizeof *uses);
    for (ValueId v = 0; v < f->nnode; v++)
        for (int i = 0; i < ir_op_info[f->node[v].op].arity; i++)
            uses[f->node[v].arg[i]]++;
    for (int j = 0; j < f->noutput; j++)
        uses[f->output[j]]++;
    bool changed = pass_rebuild(f, rewrite, uses, NULL, true);
    free(uses);
    return changed;
}
