/* Fusion decisions of the plan (plan.h): which values are computed in
 * their reader's loop, by a product's register tiles or by a blocked sum,
 * and never stored. */
#include "plan_impl.h"

#include <stdlib.h>

enum { FUSE_PRODUCT_BYTES = 32 << 10 };

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

/* The run of reduce_sum n's operand, dense, that its innermost reduced dims
 * make: their extents' product, extent-1 dims skipped. */
static int64_t sum_run(const IrFunc *f, const IrNode *n)
{
    IrType t = f->node[n->arg[0]].type;
    bool red[IR_MAX_RANK] = {false};
    for (int i = 0; i < n->nlist; i++)
        red[n->list[i]] = true;
    int64_t run = 1;
    for (int k = t.rank - 1; k >= 0 && (red[k] || t.dim[k] == 1); k--)
        run *= t.dim[k];
    return run;
}

/* Whether reduce_sum r can compute v, its operand, in its blocked loop: v
 * is + - * or negation of operands each dense over v's shape or one
 * element, and r's run is long enough to be blocked. */
static bool sum_fuses(const IrFunc *f, const BePlan *p, const IrNode *r, ValueId v)
{
    const IrNode *n = &f->node[v];
    if (r->op != OP_REDUCE_SUM || sum_run(f, r) < BE_SUM_LANES || !lane_op(n->op))
        return false;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        const BeAccess *x = &p->acc[n->arg[a]];
        bool one = x->base == BE_IMM || x->base == BE_REG;
        bool packed = be_in_memory(x) && be_dense_strides(x, n->type);
        if (!one && !packed)
            return false;
    }
    return true;
}

/* The operands the loop of value v reads, its fused operands' in their
 * place (a fused product counting as one). */
static int fused_leaves(const IrFunc *f, const BePlan *p, ValueId v)
{
    const IrNode *n = &f->node[v];
    int k = 0;
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        ValueId x = n->arg[a];
        k += p->fused_into[x] >= 0 && f->node[x].op != OP_MATMUL ? fused_leaves(f, p, x) : 1;
    }
    return k;
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

/* Fuse v into its one reader's loop where be_plan_fusion says it may
 * (`product`: the second round, of products). */
static void fuse(const IrFunc *f, BePlan *p, const int *uses, const int *reader, ValueId v, bool product)
{
    const IrNode *nd = &f->node[v];
    int r = reader[v];
    if (!p->computed[v] || p->acc[v].base != BE_ARENA || uses[v] != 1 ||
        (product ? nd->op != OP_MATMUL : !elementwise(nd)))
        return;
    const IrNode *rd = &f->node[r];
    bool viewed = !p->computed[r] && p->fused_into[r] < 0;   /* no loop computes r */
    bool into_sum = !product && sum_fuses(f, p, rd, v);
    if (viewed || (!into_sum && (!elementwise(rd) || rd->op == OP_EQ || !ir_type_eq(rd->type, nd->type))))
        return;
    int top = p->fused_into[r] >= 0 ? p->fused_into[r] : r;   /* whose loop reads v */
    ValueId other = product ? rd->arg[rd->arg[0] == v] : -1;
    bool joins = product && joins_product(f, p, rd, other, v);
    if (!product) {
        for (int a = 0; a < ir_op_info[nd->op].arity; a++)
            if (p->fused_into[nd->arg[a]] >= 0)
                return;
    } else if (be_buffer_bytes(nd->type) < FUSE_PRODUCT_BYTES || !p->computed[top] ||
               (!joins && !tile_epilogue(f, p, top))) {
        return;
    }
    p->fused_into[v] = r;
    if (fused_leaves(f, p, top) > BE_FUSE_LEAVES) {
        p->fused_into[v] = -1;
        return;
    }
    p->computed[v] = false;
    p->acc[v].base = BE_NONE;
    if (product) {
        /* the tiles' scratch: the main product's (be_product_pair) */
        ValueId main, lesser;
        if (!joins || (be_product_pair(f, p, r, &main, &lesser) && main == v))
            p->scratch_bytes[top] = p->scratch_bytes[v];
        p->scratch_bytes[v] = 0;
    }
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

/* Fuse each elementwise value in an arena buffer, with no fused operand,
 * whose one reader is an elementwise value of the same shape and element
 * type that code computes (not a view: stop_grad) and which then is not
 * fused itself (one level), or a blocked sum that can compute it
 * (sum_fuses), while the reader's loop reads at most BE_FUSE_LEAVES
 * operands.  Then fuse each product in an arena buffer of at least
 * FUSE_PRODUCT_BYTES read only by such a loop of + - * and negation (the
 * product's tiles compute that loop's value: `tile_epilogue`); its scratch
 * moves to the loop's node.  (A smaller product stays in the cache between
 * the two: fusing it would save little and cost compile time, its function
 * being shared less.)  Products go in order of their terms per element,
 * fewest first: where a loop reads two, the shorter one's tiles, which wait
 * on memory anyway, take the loop's loads, unless the longer one can join
 * them (joins_product): then both run in the longer one's tiles. */
void be_plan_fusion(const IrFunc *f, BePlan *p, const bool *live)
{
    int n = f->nnode;
    int *uses = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    int *reader = arena_alloc(&p->arena, sizeof(int) * (size_t)(n + 1));
    ByTerms *products = arena_alloc(&p->arena, sizeof(ByTerms) * (size_t)(n + 1));
    int nproducts = 0;
    for (int v = 0; v < n; v++) {
        uses[v] = 0;
        reader[v] = -1;
        p->fused_into[v] = -1;
    }
    for (int v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int a = 0; live[v] && a < ir_op_info[nd->op].arity; a++) {
            uses[nd->arg[a]]++;
            reader[nd->arg[a]] = v;
        }
        if (nd->op == OP_MATMUL)
            products[nproducts++] = (ByTerms){terms(f, v), v};
    }
    for (int v = 0; v < n; v++)
        fuse(f, p, uses, reader, v, false);
    qsort(products, (size_t)nproducts, sizeof *products, by_terms);
    for (int i = 0; i < nproducts; i++)
        fuse(f, p, uses, reader, products[i].v, true);
}
