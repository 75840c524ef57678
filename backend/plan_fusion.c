/* Fusion decisions of the plan (plan.h): which values are computed in
 * their reader's loop, by a product's register tiles or by a blocked sum,
 * and never stored. */
#include "plan_impl.h"

#include <stdlib.h>

enum { FUSE_PRODUCT_BYTES = 32 << 10 };

/* The live readers of each value: reader[start[v] .. start[v+1]) (each
 * once), and its uses (a reader reading it twice counts two). */
typedef struct {
    int *start, *reader, *uses;
} Readers;

static bool elementwise(const IrNode *n)
{
    int kind = ir_op_info[n->op].kind;
    return kind == KIND_UNARY || kind == KIND_BINARY;
}

/* + - * and negation: the ops that fused code applies to whole vectors (a
 * product's register tiles, a blocked sum's lanes). */
static bool lane_op(IrOp op)
{
    return op == OP_ADD || op == OP_SUB || op == OP_MUL || op == OP_NEG;
}

/* Marks in run[] the innermost dims of reduce_sum n's operand that its
 * blocked loop runs along (the reduced ones, and those of extent 1,
 * after the last kept dim of another extent); returns their elements. */
static int64_t sum_run(const IrFunc *f, const IrNode *n, bool *run)
{
    IrType t = f->node[n->arg[0]].type;
    bool red[IR_MAX_RANK] = {false};
    for (int i = 0; i < n->nlist; i++)
        red[n->list[i]] = true;
    int64_t elems = 1;
    for (int k = 0; k < t.rank; k++)
        run[k] = false;
    for (int k = t.rank - 1; k >= 0 && (red[k] || t.dim[k] == 1); k--) {
        run[k] = true;
        elems *= t.dim[k];
    }
    return elems;
}

bool be_sum_op(IrOp op)
{
    return lane_op(op) || op == OP_RELU || op == OP_STEP;
}

/* Whether the loop of a blocked sum along run[] can compute v from the
 * leaves of its fused operands (be_sum_op's ops all the way down), each
 * one element, or in memory and, along the run, either dense or the same
 * element. */
static bool sum_computes(const IrFunc *f, const BePlan *p, ValueId v, const bool *run)
{
    const IrNode *n = &f->node[v];
    if (!be_sum_op(n->op))
        return false;
    IrType t = n->type;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        const BeAccess *acc = &p->acc[x];
        if (p->fused_into[x] >= 0) {
            if (f->node[x].op == OP_MATMUL || !sum_computes(f, p, x, run))
                return false;
            continue;
        }
        if (acc->base == BE_IMM || acc->base == BE_REG)
            continue;
        if (!be_in_memory(acc))
            return false;
        bool dense = true, same = true;
        int64_t stride = 1;
        for (int k = t.rank - 1; k >= 0; k--) {
            if (run[k] && t.dim[k] != 1) {
                dense &= acc->stride[k] == stride;
                same &= acc->stride[k] == 0;
            }
            stride *= t.dim[k];
        }
        if (!dense && !same)
            return false;
    }
    return true;
}

/* Whether reduce_sum r can compute v, its operand, in its blocked loop:
 * r's run is long enough to be blocked, and its loop can compute v
 * (sum_computes). */
static bool sum_fuses(const IrFunc *f, const BePlan *p, const IrNode *r, ValueId v)
{
    bool run[IR_MAX_RANK];
    return r->op == OP_REDUCE_SUM && sum_run(f, r, run) >= BE_SUM_LANES && sum_computes(f, p, v, run);
}

static void collect_leaves(const IrFunc *f, const BePlan *p, ValueId v, ValueId *leaf, int max, int *n,
                           int *nodes)
{
    const IrNode *nd = &f->node[v];
    for (int a = 0; a < ir_op_info[nd->op].arity; a++) {
        ValueId x = nd->arg[a];
        if (p->fused_into[x] >= 0 && f->node[x].op != OP_MATMUL) {
            ++*nodes;
            collect_leaves(f, p, x, leaf, max, n, nodes);
            continue;
        }
        bool seen = false;
        for (int i = 0; i < *n && i < max; i++)
            seen |= leaf[i] == x;
        if (!seen) {
            if (*n < max)
                leaf[*n] = x;
            ++*n;
        }
    }
}

int be_loop_leaves(const IrFunc *f, const BePlan *p, ValueId v, ValueId *leaf, int max, int *nodes)
{
    int n = 0;
    *nodes = 0;
    collect_leaves(f, p, v, leaf, max, &n, nodes);
    return n;
}

/* Whether the loop of v, with its fused operands, stays within
 * BE_FUSE_LEAVES operands and BE_FUSE_NODES fused values. */
static bool loop_fits(const IrFunc *f, const BePlan *p, ValueId v)
{
    ValueId leaf[BE_FUSE_LEAVES + 1];
    int nodes;
    return be_loop_leaves(f, p, v, leaf, BE_FUSE_LEAVES + 1, &nodes) <= BE_FUSE_LEAVES && nodes <= BE_FUSE_NODES;
}

/* The terms of product v (its operands' shared dim). */
static int64_t terms(const IrFunc *f, ValueId v)
{
    return f->node[f->node[v].arg[0]].type.dim[1];
}

static BeMatmulPlan product_plan(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    return be_matmul_plan(n->type, &p->acc[n->arg[0]], f->node[n->arg[0]].type, &p->acc[n->arg[1]],
                          f->node[n->arg[1]].type);
}

bool be_product_pair(const IrFunc *f, const BePlan *p, ValueId v, ValueId *main, ValueId *other)
{
    const IrNode *n = &f->node[v];
    if (n->op != OP_ADD)
        return false;
    ValueId x = n->arg[0], y = n->arg[1];
    if (p->fused_into[x] != v || p->fused_into[y] != v || f->node[x].op != OP_MATMUL || f->node[y].op != OP_MATMUL)
        return false;
    bool second = terms(f, y) > terms(f, x);
    *main = second ? y : x;
    *other = second ? x : y;
    return true;
}

ValueId be_fused_product(const IrFunc *f, const BePlan *p, ValueId v, ValueId *other)
{
    const IrNode *n = &f->node[v];
    ValueId m = -1;
    *other = -1;
    if (be_product_pair(f, p, v, &m, other))
        return m;
    for (int a = 0; a < ir_op_info[n->op].arity && m < 0; a++)
        if (p->fused_into[n->arg[a]] >= 0)
            m = f->node[n->arg[a]].op == OP_MATMUL ? n->arg[a] : be_fused_product(f, p, n->arg[a], other);
    return m;
}

/* Whether product v, read by the add r with the product u fused into it
 * already, can run in u's tiles: the two are the same way round, and
 * neither packs its vector operand (the tiles then hold no padding
 * columns, and the lesser product's operands are read in place), and
 * neither runs as dot products. */
static bool joins_product(const IrFunc *f, const BePlan *p, const IrNode *r, ValueId u, ValueId v)
{
    if (r->op != OP_ADD || f->node[u].op != OP_MATMUL || p->fused_into[u] < 0)
        return false;
    BeMatmulPlan a = product_plan(f, p, u), b = product_plan(f, p, v);
    return a.swap == b.swap && !a.pack && !b.pack && !a.dot && !b.dot;
}

/* Whether v's loop, with its fused operands, holds only + - * and
 * negation, and no product yet: what a product's tiles can apply to their
 * results before storing them. */
static bool tile_epilogue(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    if (!lane_op(n->op))
        return false;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        if (p->fused_into[x] >= 0 && (f->node[x].op == OP_MATMUL || !tile_epilogue(f, p, x)))
            return false;
    }
    return true;
}

/* Whether v, with its fused operands, is cheap enough to compute again
 * wherever it is read, rather than store once and load in each reader:
 * arithmetic, comparisons and selections, no calls. */
static bool recomputed(const IrFunc *f, const BePlan *p, ValueId v)
{
    IrOp op = f->node[v].op;
    if (!(lane_op(op) || op == OP_RELU || op == OP_STEP || op == OP_ABS || op == OP_SIGN || op == OP_EQ))
        return false;
    for (int a = 0; a < ir_op_info[op].arity; a++) {
        ValueId x = f->node[v].arg[a];
        if (p->fused_into[x] >= 0 && (f->node[x].op == OP_MATMUL || !recomputed(f, p, x)))
            return false;
    }
    return true;
}

/* Whether r's loop (the loop r is fused into, if any) can compute
 * elementwise value v in place of reading it. */
static bool loop_computes(const IrFunc *f, const BePlan *p, ValueId r, ValueId v)
{
    const IrNode *rd = &f->node[r], *nd = &f->node[v];
    if (!p->computed[r] && p->fused_into[r] < 0)
        return false;                           /* a view: no loop computes r */
    return sum_fuses(f, p, rd, v) ||
           (elementwise(rd) && rd->op != OP_EQ && ir_type_eq(rd->type, nd->type));
}

/* Fuse elementwise value v into the loops of its readers where
 * be_plan_fusion says it may: each reader's loop computes v's element from
 * v's operands (a value read by several loops is computed in each). */
static void fuse_elementwise(const IrFunc *f, BePlan *p, const Readers *rs, ValueId v)
{
    const IrNode *nd = &f->node[v];
    int first = rs->start[v], end = rs->start[v + 1];
    if (!p->computed[v] || p->acc[v].base != BE_ARENA || !elementwise(nd) || first == end ||
        (rs->uses[v] > 1 && !recomputed(f, p, v)))
        return;
    for (int i = first; i < end; i++)
        if (!loop_computes(f, p, rs->reader[i], v))
            return;
    p->fused_into[v] = rs->reader[first];
    for (int i = first; i < end; i++)
        if (!loop_fits(f, p, rs->reader[i])) {
            p->fused_into[v] = -1;
            return;
        }
    p->computed[v] = false;
    p->acc[v].base = BE_NONE;
}

/* Fuse product v into the loop of its one reader where be_plan_fusion says
 * it may. */
static void fuse_product(const IrFunc *f, BePlan *p, const Readers *rs, ValueId v)
{
    const IrNode *nd = &f->node[v];
    int first = rs->start[v];
    if (!p->computed[v] || p->acc[v].base != BE_ARENA || rs->start[v + 1] - first != 1 || rs->uses[v] != 1)
        return;
    int r = rs->reader[first];
    const IrNode *rd = &f->node[r];
    if (!elementwise(rd) || rd->op == OP_EQ || !ir_type_eq(rd->type, nd->type))
        return;
    if (p->fused_into[r] >= 0 && rs->start[r + 1] - rs->start[r] != 1)
        return;                                 /* r is computed in several loops */
    int top = p->fused_into[r] >= 0 ? p->fused_into[r] : r;   /* whose loop reads v */
    ValueId other = rd->arg[rd->arg[0] == v];
    bool joins = joins_product(f, p, rd, other, v);
    if (be_buffer_bytes(nd->type) < FUSE_PRODUCT_BYTES || !p->computed[top] ||
        (!joins && !tile_epilogue(f, p, top)))
        return;
    p->fused_into[v] = r;
    if (!loop_fits(f, p, top)) {
        p->fused_into[v] = -1;
        return;
    }
    p->computed[v] = false;
    p->acc[v].base = BE_NONE;
    /* the tiles' scratch: the main product's (be_product_pair) */
    ValueId main, lesser;
    if (!joins || (be_product_pair(f, p, r, &main, &lesser) && main == v))
        p->scratch_bytes[top] = p->scratch_bytes[v];
    p->scratch_bytes[v] = 0;
}

/* Products by their terms per element (k), then by position. */
typedef struct {
    int64_t k;
    ValueId v;
} ByTerms;

static int by_terms(const void *a, const void *b)
{
    const ByTerms *x = a, *y = b;
    return x->k != y->k ? (x->k > y->k) - (x->k < y->k) : (x->v > y->v) - (x->v < y->v);
}

/* Fuse each elementwise value in an arena buffer whose every reader is a
 * loop that can compute it: an elementwise value of the same shape and
 * element type that code computes (not a view: stop_grad), or a blocked
 * sum (sum_fuses); a value read more than once must be cheap to compute
 * again (recomputed), and each reader's loop stays within BE_FUSE_LEAVES
 * operands and BE_FUSE_NODES fused values (loop_fits).  Values go in node
 * order, so a chain fuses all the way into its last loop.  Then fuse each
 * product in an arena buffer of at least FUSE_PRODUCT_BYTES read only by
 * such a loop of + - * and negation, computed in that one loop (the
 * product's tiles compute the loop's value: `tile_epilogue`); its scratch
 * moves to the loop's node.  (A smaller
 * product stays in the cache between the two: fusing it would save little
 * and cost compile time, its function being shared less.)  Products go in
 * order of their terms per element, fewest first: where a loop reads two,
 * the shorter one's tiles, which wait on memory anyway, take the loop's
 * loads, unless the longer one can join them (joins_product): then both
 * run in the longer one's tiles. */
void be_plan_fusion(const IrFunc *f, BePlan *p, const bool *live)
{
    int n = f->nnode, nread = 0;
    Readers rs = {arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 2)), NULL,
                  arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1))};
    ByTerms *products = arena_alloc(&p->arena, sizeof(ByTerms) * (size_t)(n + 1));
    int nproducts = 0;
    for (int v = 0; v <= n + 1; v++)
        rs.start[v] = 0;
    for (int v = 0; v < n; v++) {
        rs.uses[v] = 0;
        p->fused_into[v] = -1;
    }
    /* Each value's readers, a node reading it twice listed once: first
     * counted into start[x + 2]; the running sums make start[x + 1] the
     * first slot of x; listing moves it on to x + 1's, so that reader[
     * start[x] .. start[x + 1]) are x's. */
    for (int v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int a = 0; live[v] && a < ir_op_info[nd->op].arity; a++) {
            rs.uses[nd->arg[a]]++;
            if (a == 0 || nd->arg[a] != nd->arg[a - 1])
                rs.start[nd->arg[a] + 2]++, nread++;
        }
        if (nd->op == OP_MATMUL)
            products[nproducts++] = (ByTerms){terms(f, v), v};
    }
    for (int v = 0; v < n; v++)
        rs.start[v + 2] += rs.start[v + 1];
    rs.reader = arena_alloc(&p->arena, sizeof(int) * (size_t)(nread + 1));
    for (int v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int a = 0; live[v] && a < ir_op_info[nd->op].arity; a++)
            if (a == 0 || nd->arg[a] != nd->arg[a - 1])
                rs.reader[rs.start[nd->arg[a] + 1]++] = v;
    }
    for (int v = 0; v < n; v++)
        fuse_elementwise(f, p, &rs, v);
    qsort(products, (size_t)nproducts, sizeof *products, by_terms);
    for (int i = 0; i < nproducts; i++)
        fuse_product(f, p, &rs, products[i].v);
}
