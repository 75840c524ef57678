/* Rematerialisation: a large elementwise value read early and again late
 * (batch norm's normalised activations: by the forward pass, then by the
 * backward pass) is computed again just before each later reader, from
 * operands that stay alive until then anyway, instead of holding its own
 * buffer in between.  Each copy has one reader, so the backend fuses it
 * into that reader's loop (backend/plan.c), and the value costs one
 * arithmetic op per element there instead of a buffer's bytes from the
 * forward pass to the backward one.  The copies compute the same bits.
 *
 * A value is copied when it is an add, sub, mul or neg of at least
 * REMAT_BYTES with two or more readers, and each operand is a constant, a
 * broadcast of a value under REMAT_BYTES, or a value read as late as the
 * value's last reader (so no operand lives longer).  Its first reader
 * keeps it; every later reader gets a copy, placed just before it.  CSE
 * would merge the copies again, so this runs after the other passes
 * (pass_optimize). */
#include "passes.h"

#include <stdlib.h>

enum { REMAT_BYTES = 256 << 10 };   /* the backend's in-place threshold too */

typedef struct {
    ValueId *first, *last;          /* each value's first and last reader, or IR_NONE */
    bool *copied;                   /* whether later readers get copies */
} Remat;

static int64_t value_bytes(const IrFunc *f, ValueId v)
{
    return ir_numel(f->node[v].type) * (int64_t)ir_dtype_size(f->node[v].type.dtype);
}

/* Whether operand x of v may be read again at v's last reader without
 * living longer than it does. */
static bool stays(const IrFunc *f, const Remat *r, ValueId x, ValueId v)
{
    const IrNode *n = &f->node[x];
    if (n->op == OP_CONST)
        return true;
    if (n->op == OP_BROADCAST && value_bytes(f, n->arg[0]) < REMAT_BYTES)
        return true;
    return r->last[x] >= r->last[v];
}

static bool copied(const IrFunc *f, const Remat *r, ValueId v)
{
    const IrNode *n = &f->node[v];
    if ((n->op != OP_ADD && n->op != OP_SUB && n->op != OP_MUL && n->op != OP_NEG) ||
        value_bytes(f, v) < REMAT_BYTES || r->first[v] == r->last[v] || r->last[v] == f->nnode)
        return false;
    for (int i = 0; i < ir_op_info[n->op].arity; i++)
        if (!stays(f, r, n->arg[i], v))
            return false;
    return true;
}

/* A node reading a copied value after its first reader: a fresh copy of
 * it (its operands in the new body) in place of each such operand. */
static ValueId copy_operands(IrFunc *g, const IrNode *n, const RebuildAt *at, bool *fired)
{
    const Remat *r = at->ctx;
    const IrNode *orig = &at->f->node[at->v];
    IrNode m = *n;
    for (int i = 0; i < ir_op_info[n->op].arity; i++) {
        ValueId x = orig->arg[i];
        if (!r->copied[x] || r->first[x] == at->v)
            continue;
        int same = 0;                   /* an earlier operand reading x shares its copy */
        while (orig->arg[same] != x)
            same++;
        IrNode c = at->f->node[x];
        for (int j = 0; j < ir_op_info[c.op].arity; j++)
            c.arg[j] = at->map[c.arg[j]];
        m.arg[i] = same < i ? m.arg[same] : ir_append(g, &c, NULL);
        *fired = true;
    }
    return *fired ? ir_append(g, &m, NULL) : IR_NONE;
}

bool pass_remat(IrFunc *f)
{
    int n = f->nnode;
    Remat r = {
        malloc(((size_t)n + 1) * sizeof(ValueId)),
        malloc(((size_t)n + 1) * sizeof(ValueId)),
        calloc((size_t)n + 1, sizeof(bool)),
    };
    for (ValueId v = 0; v < n; v++)
        r.first[v] = r.last[v] = IR_NONE;
    for (ValueId v = 0; v < n; v++) {
        const IrNode *nd = &f->node[v];
        for (int i = 0; i < ir_op_info[nd->op].arity; i++) {
            ValueId x = nd->arg[i];
            if (r.first[x] == IR_NONE)
                r.first[x] = v;
            r.last[x] = v;
        }
    }
    for (int i = 0; i < f->noutput; i++)
        r.last[f->output[i]] = n;       /* outputs live to the end */
    bool any = false;
    for (ValueId v = 0; v < n; v++)
        any |= r.copied[v] = copied(f, &r, v);
    bool changed = any && pass_rebuild(f, copy_operands, &r, NULL, false);
    free(r.first);
    free(r.last);
    free(r.copied);
    return changed;
}
