/* The IR builder: one constructor (ir_emit) that types, hash-conses and
 * appends nodes, and small wrappers for each kind of op. */
#include "ir.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* --- hash-consing --- */

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

static uint64_t node_hash(const IrNode *n) {
    uint64_t h = mix(0, (uint64_t)n->op);
    h = mix(h, (uint64_t)(uint32_t)n->arg[0]);
    h = mix(h, (uint64_t)(uint32_t)n->arg[1]);
    uint64_t bits;
    memcpy(&bits, &n->value, sizeof bits);
    h = mix(h, bits);
    h = mix(h, (uint64_t)n->ival);
    for (int i = 0; i < n->nlist; i++)
        h = mix(h, (uint64_t)n->list[i]);
    h = mix(h, (uint64_t)n->type.dtype);
    for (int i = 0; i < n->type.rank; i++)
        h = mix(h, (uint64_t)n->type.dim[i]);
    return h;
}

/* Same computation: everything but the location (and the value bits, so
 * that -0.0 and 0.0 stay apart while NaN equals itself). */
static bool node_same(const IrNode *a, const IrNode *b) {
    if (a->op != b->op || a->arg[0] != b->arg[0] || a->arg[1] != b->arg[1] ||
        a->ival != b->ival || a->nlist != b->nlist || !ir_type_eq(a->type, b->type) ||
        memcmp(&a->value, &b->value, sizeof a->value) != 0)
        return false;
    for (int i = 0; i < a->nlist; i++)
        if (a->list[i] != b->list[i])
            return false;
    return true;
}

static bool hashable(const IrNode *n) { return n->op != OP_INPUT; }

static void hash_insert(IrFunc *f, ValueId v) {
    uint32_t mask = (uint32_t)f->hash_cap - 1;
    for (uint32_t i = (uint32_t)node_hash(&f->node[v]) & mask;; i = (i + 1) & mask)
        if (f->hash[i] < 0) {
            f->hash[i] = v;
            return;
        } else if (node_same(&f->node[f->hash[i]], &f->node[v]))
            return;     /* keep the first of equal nodes */
}

/* Make the table fit nnode + 1 entries at a load factor of at most 1/2. */
static void hash_reserve(IrFunc *f) {
    if (f->hash && 2 * (f->nnode + 1) <= f->hash_cap)
        return;
    int cap = 64;
    while (cap < 2 * (f->nnode + 1))
        cap *= 2;
    f->hash = arena_alloc(&f->body, (size_t)cap * sizeof *f->hash);
    f->hash_cap = cap;
    memset(f->hash, 0xff, (size_t)cap * sizeof *f->hash);
    for (ValueId v = 0; v < f->nnode; v++)
        if (hashable(&f->node[v]))
            hash_insert(f, v);
}

static ValueId hash_find(IrFunc *f, const IrNode *n) {
    uint32_t mask = (uint32_t)f->hash_cap - 1;
    for (uint32_t i = (uint32_t)node_hash(n) & mask; f->hash[i] >= 0; i = (i + 1) & mask)
        if (node_same(&f->node[f->hash[i]], n))
            return f->hash[i];
    return IR_NONE;
}

/* --- the constructor --- */

/* Report through d, or, when the caller passed none, as an internal error
 * counted in f's module so that the compile fails. */
static void fail(IrFunc *f, Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fail(IrFunc *f, Diag *d, SrcLoc loc, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d)
        diag_error(d, loc, "%s", msg);
    else {
        fprintf(stderr, "mamlc: internal error: %s\n", msg);
        f->mod->internal_errors++;
    }
}

/* n with its type inferred; false after reporting. */
static bool typed(IrFunc *f, const IrNode *in, IrNode *out, Diag *d) {
    *out = *in;
    for (int i = 0; i < 2; i++)
        if (i >= ir_op_info[in->op].arity)
            out->arg[i] = IR_NONE;
    char msg[256];
    if (out->op == OP_CONST && out->type.dtype != DT_F64)   /* as the type stores it */
        out->value = out->type.dtype == DT_F32 ? (double)(float)out->value : trunc(out->value);
    if (ir_infer_type(f, out, msg, sizeof msg))
        return true;
    fail(f, d, in->loc, "%s", msg);
    return false;
}

static bool has_missing_operand(const IrNode *n) {
    for (int i = 0; i < ir_op_info[n->op].arity; i++)
        if (n->arg[i] == IR_NONE)
            return true;
    return false;
}

static ValueId push(IrFunc *f, const IrNode *n) {
    f->node = arena_grow(&f->body, f->node, &f->node_cap, f->nnode + 1, sizeof *f->node);
    f->node[f->nnode] = *n;
    ValueId v = f->nnode++;
    if (!f->node[v].phase)
        f->node[v].phase = f->cur_phase;
    if (hashable(n))
        hash_insert(f, v);
    return v;
}

ValueId ir_append(IrFunc *f, const IrNode *n, Diag *d) {
    IrNode t;
    if (has_missing_operand(n) || !typed(f, n, &t, d))
        return IR_NONE;
    hash_reserve(f);
    return push(f, &t);
}

ValueId ir_emit(IrFunc *f, const IrNode *n, Diag *d) {
    IrNode t;
    if (has_missing_operand(n) || !typed(f, n, &t, d))
        return IR_NONE;
    hash_reserve(f);
    if (hashable(&t)) {
        ValueId old = hash_find(f, &t);
        if (old != IR_NONE)
            return old;
    }
    return push(f, &t);
}

/* --- composing functions --- */

void ir_inline(IrFunc *f, const IrFunc *callee, const ValueId *args, ValueId *out) {
    ValueId *map = malloc(((size_t)callee->nnode + 1) * sizeof *map);
    if (!map)
        abort();
    for (ValueId v = 0; v < callee->nnode; v++) {
        IrNode n = callee->node[v];
        if (n.op == OP_INPUT) {
            map[v] = args[n.ival];
            continue;
        }
        for (int i = 0; i < ir_op_info[n.op].arity; i++)
            n.arg[i] = map[n.arg[i]];
        n.name = NULL;      /* the callee's module owns it: copied below */
        n.phase = 0;        /* the caller's current phase */
        map[v] = ir_emit(f, &n, NULL);
        if (callee->node[v].name)
            ir_name(f, map[v], callee->node[v].name);
    }
    for (int i = 0; i < callee->noutput; i++)
        out[i] = map[callee->output[i]];
    free(map);
}

/* --- wrappers --- */

static IrNode node(IrOp op, ValueId a, ValueId b, SrcLoc loc) {
    return (IrNode){.op = op, .arg = {a, b}, .loc = loc};
}

ValueId ir_const(IrFunc *f, double value, IrType t, SrcLoc loc) {
    IrNode n = node(OP_CONST, IR_NONE, IR_NONE, loc);
    n.value = value;
    n.type = t;
    return ir_emit(f, &n, NULL);
}

ValueId ir_unary(IrFunc *f, IrOp op, ValueId x, SrcLoc loc, Diag *d) {
    IrNode n = node(op, x, IR_NONE, loc);
    return ir_emit(f, &n, d);
}

ValueId ir_powc(IrFunc *f, ValueId x, double exponent, SrcLoc loc, Diag *d) {
    IrNode n = node(OP_POWC, x, IR_NONE, loc);
    n.value = exponent;
    return ir_emit(f, &n, d);
}

ValueId ir_binary(IrFunc *f, IrOp op, ValueId a, ValueId b, SrcLoc loc, Diag *d) {
    IrNode n = node(op, a, b, loc);
    return ir_emit(f, &n, d);
}

/* The NumPy broadcast of two shapes into *out; false if they don't fit. */
static bool broadcast_shape(IrType a, IrType b, IrType *out) {
    int rank = a.rank > b.rank ? a.rank : b.rank;
    out->rank = rank;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a.rank), ib = i - (rank - b.rank);
        int da = ia >= 0 ? a.dim[ia] : 1, db = ib >= 0 ? b.dim[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        out->dim[i] = da > db ? da : db;
    }
    return true;
}

ValueId ir_binary_bcast(IrFunc *f, IrOp op, ValueId a, ValueId b, SrcLoc loc, Diag *d) {
    if (a == IR_NONE || b == IR_NONE)
        return IR_NONE;
    IrType ta = ir_value_type(f, a), tb = ir_value_type(f, b), t;
    if (!broadcast_shape(ta, tb, &t)) {
        char sa[64], sb[64];
        fail(f, d, loc, "shapes %s and %s cannot be broadcast together in '%s'",
                   ir_type_str(ta, sa, sizeof sa), ir_type_str(tb, sb, sizeof sb),
                   ir_op_info[op].name);
        return IR_NONE;
    }
    t.dtype = ta.dtype;
    if (!ir_same_shape(ta, t))
        a = ir_broadcast(f, a, t, loc, d);
    t.dtype = tb.dtype;
    if (!ir_same_shape(tb, t))
        b = ir_broadcast(f, b, t, loc, d);
    return ir_binary(f, op, a, b, loc, d);
}

ValueId ir_binary_scalar(IrFunc *f, IrOp op, ValueId x, double c, bool c_first, SrcLoc loc, Diag *d) {
    if (x == IR_NONE)
        return IR_NONE;
    ValueId k = ir_const(f, c, ir_value_type(f, x), loc);
    return c_first ? ir_binary(f, op, k, x, loc, d) : ir_binary(f, op, x, k, loc, d);
}

ValueId ir_reduce(IrFunc *f, IrOp op, ValueId x, int naxes, const int *axes, SrcLoc loc, Diag *d) {
    IrNode n = node(op, x, IR_NONE, loc);
    if (naxes < 0 || naxes > IR_MAX_RANK) {
        fail(f, d, loc, "too many reduction axes");
        return IR_NONE;
    }
    n.nlist = naxes;
    memcpy(n.list, axes, (size_t)naxes * sizeof *axes);
    return ir_emit(f, &n, d);
}

static ValueId retype(IrFunc *f, IrOp op, ValueId x, IrType t, SrcLoc loc, Diag *d) {
    if (x == IR_NONE)
        return IR_NONE;
    IrNode n = node(op, x, IR_NONE, loc);
    n.type = t;
    n.type.dtype = ir_value_type(f, x).dtype;
    if (ir_type_eq(n.type, ir_value_type(f, x)))
        return x;
    return ir_emit(f, &n, d);
}

ValueId ir_reshape(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d) {
    return retype(f, OP_RESHAPE, x, t, loc, d);
}

ValueId ir_broadcast(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d) {
    return retype(f, OP_BROADCAST, x, t, loc, d);
}

/* sum_to(x, t): sum the leading dims x has beyond t's rank, then the dims
 * where t has extent 1, and reshape to t.  d(broadcast) = sum_to. */
ValueId ir_sum_to(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d) {
    if (x == IR_NONE)
        return IR_NONE;
    IrType tx = ir_value_type(f, x);
    int lead = tx.rank - t.rank, axes[IR_MAX_RANK], n = 0;
    if (lead < 0) {
        fail(f, d, loc, "cannot sum a rank-%d value to rank %d", tx.rank, t.rank);
        return IR_NONE;
    }
    for (int i = 0; i < tx.rank; i++)
        if (i < lead || (t.dim[i - lead] == 1 && tx.dim[i] != 1))
            axes[n++] = i;
    ValueId s = n ? ir_reduce(f, OP_REDUCE_SUM, x, n, axes, loc, d) : x;
    return ir_reshape(f, s, t, loc, d);
}

ValueId ir_transpose(IrFunc *f, ValueId x, const int *perm, SrcLoc loc, Diag *d) {
    if (x == IR_NONE)
        return IR_NONE;
    IrNode n = node(OP_TRANSPOSE, x, IR_NONE, loc);
    n.nlist = ir_value_type(f, x).rank;
    memcpy(n.list, perm, (size_t)n.nlist * sizeof *perm);
    bool identity = true;
    for (int i = 0; i < n.nlist; i++)
        identity &= perm[i] == i;
    return identity ? x : ir_emit(f, &n, d);
}

ValueId ir_slice(IrFunc *f, ValueId x, const int *start, IrType t, SrcLoc loc, Diag *d) {
    if (x == IR_NONE)
        return IR_NONE;
    IrNode n = node(OP_SLICE, x, IR_NONE, loc);
    n.type = t;
    n.type.dtype = ir_value_type(f, x).dtype;
    n.nlist = t.rank;
    memcpy(n.list, start, (size_t)t.rank * sizeof *start);
    return ir_type_eq(n.type, ir_value_type(f, x)) ? x : ir_emit(f, &n, d);
}

ValueId ir_concat(IrFunc *f, ValueId a, ValueId b, int axis, SrcLoc loc, Diag *d) {
    IrNode n = node(OP_CONCAT, a, b, loc);
    n.nlist = 1;
    n.list[0] = axis;
    return ir_emit(f, &n, d);
}

ValueId ir_matmul(IrFunc *f, ValueId a, ValueId b, SrcLoc loc, Diag *d) {
    IrNode n = node(OP_MATMUL, a, b, loc);
    return ir_emit(f, &n, d);
}

ValueId ir_onehot(IrFunc *f, ValueId labels, int classes, SrcLoc loc, Diag *d) {
    IrNode n = node(OP_ONEHOT, labels, IR_NONE, loc);
    n.ival = classes;
    return ir_emit(f, &n, d);
}

ValueId ir_argmax(IrFunc *f, ValueId x, int axis, SrcLoc loc, Diag *d) {
    IrNode n = node(OP_ARGMAX, x, IR_NONE, loc);
    n.nlist = 1;
    n.list[0] = axis;
    return ir_emit(f, &n, d);
}

ValueId ir_conv(IrFunc *f, IrOp op, ValueId a, ValueId b, int stride, int pad, IrType t, SrcLoc loc, Diag *d) {
    IrNode n = node(op, a, b, loc);
    n.nlist = IR_CONV_NATTR;
    n.list[IR_CONV_STRIDE] = stride;
    n.list[IR_CONV_PAD] = pad;
    if (op != OP_CONV2D)
        n.type = t;
    return ir_emit(f, &n, d);
}
