/* Shape rules: the result type of every op from its operands' types and its
 * attributes.  One function per op of ir/ops.def (shape_ID), dispatched
 * through a table built from ops.def, so adding an op means adding a rule. */
#include "ir.h"

#include <stdarg.h>
#include <string.h>

typedef bool ShapeRule(const IrFunc *f, IrNode *n, char *msg, size_t size);

static bool failf(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool failf(char *msg, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    return false;
}

static IrType arg_type(const IrFunc *f, const IrNode *n, int i) { return f->node[n->arg[i]].type; }

static const char *opname(const IrNode *n) { return ir_op_info[n->op].name; }

static bool is_float(DType dt) { return dt == DT_F32 || dt == DT_F64; }

bool ir_valid_type(IrType t, char *msg, size_t size) {
    if (t.rank < 0 || t.rank > IR_MAX_RANK)
        return failf(msg, size, "rank %d is out of range (at most %d)", t.rank, IR_MAX_RANK);
    int64_t numel = 1;
    for (int i = 0; i < t.rank; i++) {
        if (t.dim[i] < 1 || t.dim[i] > IR_MAX_DIM)
            return failf(msg, size, "extent %d is out of range (1 to %d)", t.dim[i], IR_MAX_DIM);
        numel *= t.dim[i];
        if (numel > IR_MAX_NUMEL)
            return failf(msg, size, "tensor of more than %lld elements", (long long)IR_MAX_NUMEL);
    }
    return true;
}

static bool float_operand(const IrFunc *f, const IrNode *n, int i, char *msg, size_t size) {
    if (is_float(arg_type(f, n, i).dtype))
        return true;
    char s[64];
    return failf(msg, size, "'%s' needs a real operand, got %s", opname(n),
                 ir_type_str(arg_type(f, n, i), s, sizeof s));
}

static bool shape_INPUT(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    return ir_valid_type(n->type, msg, size);
}

static bool shape_CONST(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    return ir_valid_type(n->type, msg, size);
}

/* Elementwise unary: y has x's type. */
static bool unary(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    if (!float_operand(f, n, 0, msg, size))
        return false;
    n->type = arg_type(f, n, 0);
    return true;
}
#define UNARY_RULE(id) \
    static bool shape_##id(const IrFunc *f, IrNode *n, char *m, size_t s) { return unary(f, n, m, s); }
UNARY_RULE(NEG) UNARY_RULE(EXP) UNARY_RULE(LOG) UNARY_RULE(SQRT) UNARY_RULE(TANH)
UNARY_RULE(SIGMOID) UNARY_RULE(RELU) UNARY_RULE(SOFTPLUS) UNARY_RULE(SIN) UNARY_RULE(COS)
UNARY_RULE(ABS) UNARY_RULE(ERF) UNARY_RULE(SIGN) UNARY_RULE(STEP) UNARY_RULE(POWC)

/* stop_grad is the identity on any type. */
static bool shape_STOP_GRAD(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    n->type = arg_type(f, n, 0);
    return true;
}

/* Elementwise binary: both operands of one shape and dtype. */
static bool binary(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType a = arg_type(f, n, 0), b = arg_type(f, n, 1);
    if (!ir_type_eq(a, b)) {
        char sa[64], sb[64];
        return failf(msg, size, "shape mismatch in '%s': %s vs %s", opname(n),
                     ir_type_str(a, sa, sizeof sa), ir_type_str(b, sb, sizeof sb));
    }
    n->type = a;
    return true;
}
static bool arith(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    return float_operand(f, n, 0, msg, size) && binary(f, n, msg, size);
}
#define ARITH_RULE(id) \
    static bool shape_##id(const IrFunc *f, IrNode *n, char *m, size_t s) { return arith(f, n, m, s); }
ARITH_RULE(ADD) ARITH_RULE(SUB) ARITH_RULE(MUL) ARITH_RULE(DIV)

/* eq compares any two values of one type and gives 1 or 0 as a real. */
static bool shape_EQ(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    if (!binary(f, n, msg, size))
        return false;
    n->type.dtype = f->mod->real;
    return true;
}

/* Reductions remove the axes in n->list, which must be distinct and valid. */
static bool reduce(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0);
    bool seen[IR_MAX_RANK] = {0};
    if (n->nlist < 1)
        return failf(msg, size, "'%s' needs at least one axis", opname(n));
    for (int i = 0; i < n->nlist; i++) {
        int a = n->list[i];
        if (a < 0 || a >= x.rank)
            return failf(msg, size, "axis %d is out of range for a rank-%d value in '%s'", a, x.rank, opname(n));
        if (seen[a])
            return failf(msg, size, "axis %d appears twice in '%s'", a, opname(n));
        if (i && a < n->list[i - 1])
            return failf(msg, size, "axes of '%s' must be in increasing order", opname(n));
        seen[a] = true;
    }
    IrType t = {.dtype = x.dtype};
    for (int i = 0; i < x.rank; i++)
        if (!seen[i])
            t.dim[t.rank++] = x.dim[i];
    n->type = t;
    return true;
}

static bool shape_REDUCE_SUM(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    return float_operand(f, n, 0, msg, size) && reduce(f, n, msg, size);
}

static bool shape_REDUCE_MAX(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    return float_operand(f, n, 0, msg, size) && reduce(f, n, msg, size);
}

static bool shape_ARGMAX(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    if (n->nlist != 1)
        return failf(msg, size, "'argmax' takes exactly one axis");
    if (!float_operand(f, n, 0, msg, size) || !reduce(f, n, msg, size))
        return false;
    n->type.dtype = DT_I32;
    return true;
}

static bool shape_RESHAPE(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0);
    n->type.dtype = x.dtype;
    if (!ir_valid_type(n->type, msg, size))
        return false;
    if (ir_numel(n->type) != ir_numel(x)) {
        char sa[64], sb[64];
        return failf(msg, size, "cannot reshape %s (%lld elements) to %s (%lld elements)",
                     ir_type_str(x, sa, sizeof sa), (long long)ir_numel(x),
                     ir_type_str(n->type, sb, sizeof sb), (long long)ir_numel(n->type));
    }
    return true;
}

static bool shape_BROADCAST(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0), t = n->type;
    t.dtype = x.dtype;
    n->type = t;
    if (!ir_valid_type(t, msg, size))
        return false;
    bool ok = x.rank <= t.rank;
    for (int i = 0; ok && i < x.rank; i++) {
        int d = x.dim[i], to = t.dim[i + t.rank - x.rank];
        ok = d == to || d == 1;
    }
    if (!ok) {
        char sa[64], sb[64];
        return failf(msg, size, "cannot broadcast %s to %s", ir_type_str(x, sa, sizeof sa),
                     ir_type_str(t, sb, sizeof sb));
    }
    return true;
}

static bool shape_TRANSPOSE(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0), t = {.dtype = x.dtype, .rank = x.rank};
    bool seen[IR_MAX_RANK] = {0};
    if (n->nlist != x.rank)
        return failf(msg, size, "'transpose' of a rank-%d value needs a permutation of %d axes", x.rank, x.rank);
    for (int i = 0; i < x.rank; i++) {
        int p = n->list[i];
        if (p < 0 || p >= x.rank || seen[p])
            return failf(msg, size, "'transpose' needs a permutation of 0..%d", x.rank - 1);
        seen[p] = true;
        t.dim[i] = x.dim[p];
    }
    n->type = t;
    return true;
}

/* slice: the result type gives the window's extents, list its offsets in
 * x; the window lies inside x. */
static bool shape_SLICE(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0);
    char sx[64], st[64];
    n->type.dtype = x.dtype;
    if (!ir_valid_type(n->type, msg, size))
        return false;
    if (n->type.rank != x.rank || n->nlist != x.rank)
        return failf(msg, size, "'slice' of %s needs %d offsets and a result of rank %d",
                     ir_type_str(x, sx, sizeof sx), x.rank, x.rank);
    for (int i = 0; i < x.rank; i++)
        if (n->list[i] < 0 || n->list[i] > x.dim[i] - n->type.dim[i])
            return failf(msg, size, "'slice' of %s to %s at offset %d of axis %d is outside the operand",
                         ir_type_str(x, sx, sizeof sx), ir_type_str(n->type, st, sizeof st), n->list[i], i);
    return true;
}

/* concat: a and b of one dtype and rank, equal extents but along the axis. */
static bool shape_CONCAT(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType a = arg_type(f, n, 0), b = arg_type(f, n, 1);
    char sa[64], sb[64];
    if (n->nlist != 1 || n->list[0] < 0 || n->list[0] >= a.rank)
        return failf(msg, size, "'concat' needs an axis of its rank-%d operands", a.rank);
    int axis = n->list[0];
    bool ok = a.dtype == b.dtype && a.rank == b.rank;
    for (int i = 0; ok && i < a.rank; i++)
        ok = i == axis || a.dim[i] == b.dim[i];
    if (!ok)
        return failf(msg, size, "'concat' along axis %d needs operands that agree on every other axis, got %s and %s",
                     axis, ir_type_str(a, sa, sizeof sa), ir_type_str(b, sb, sizeof sb));
    n->type = a;
    n->type.dim[axis] = a.dim[axis] + b.dim[axis];     /* each at most 2^24 */
    return ir_valid_type(n->type, msg, size);
}

static bool shape_MATMUL(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType a = arg_type(f, n, 0), b = arg_type(f, n, 1);
    char sa[64], sb[64];
    if (!float_operand(f, n, 0, msg, size) || !float_operand(f, n, 1, msg, size))
        return false;
    if (a.rank != 2 || b.rank != 2 || a.dim[1] != b.dim[0] || a.dtype != b.dtype)
        return failf(msg, size, "matrix product needs [m,k] @ [k,n], got %s @ %s",
                     ir_type_str(a, sa, sizeof sa), ir_type_str(b, sb, sizeof sb));
    n->type = (IrType){.dtype = a.dtype, .rank = 2, .dim = {a.dim[0], b.dim[1]}};
    return ir_valid_type(n->type, msg, size);
}

static bool shape_ONEHOT(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    IrType x = arg_type(f, n, 0);
    char s[64];
    if (x.dtype != DT_I32)
        return failf(msg, size, "'onehot' needs i32 labels, got %s", ir_type_str(x, s, sizeof s));
    if (x.rank >= IR_MAX_RANK)
        return failf(msg, size, "'onehot' of a rank-%d value exceeds the maximum rank", x.rank);
    IrType t = x;
    t.dtype = f->mod->real;
    t.dim[t.rank++] = n->ival;
    n->type = t;
    return ir_valid_type(t, msg, size);
}

/* --- convolutions ---
 * x [N,C,H,W], w [O,C,KH,KW] and y [N,O,Ho,Wo] belong to one convolution
 * when the batch and channel counts agree and Ho = (H + 2*pad - KH)/stride
 * + 1 >= 1, likewise Wo.  conv2d computes y from x and w; the two adjoint
 * ops are given their result type (x's or w's) and check it. */

/* (in + 2*pad - k) / stride + 1, or 0 when the kernel does not fit. */
static int64_t conv_out(int64_t in, int64_t k, int stride, int pad) {
    int64_t span = in + 2 * (int64_t)pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

static bool conv_attrs(const IrNode *n, char *msg, size_t size) {
    if (n->nlist != IR_CONV_NATTR)
        return failf(msg, size, "'%s' needs the attributes stride and pad", opname(n));
    int stride = n->list[IR_CONV_STRIDE], pad = n->list[IR_CONV_PAD];
    if (stride < 1 || stride > IR_MAX_DIM)
        return failf(msg, size, "stride %d of '%s' is out of range (1 to %d)", stride, opname(n), IR_MAX_DIM);
    if (pad < 0 || pad > IR_MAX_DIM)
        return failf(msg, size, "pad %d of '%s' is out of range (0 to %d)", pad, opname(n), IR_MAX_DIM);
    return true;
}

/* Operands i of n: real, rank 4, of one dtype. */
static bool conv_operands(const IrFunc *f, const IrNode *n, const char *const *what, char *msg, size_t size) {
    for (int i = 0; i < 2; i++) {
        IrType t = arg_type(f, n, i);
        char s[64];
        if (!float_operand(f, n, i, msg, size))
            return false;
        if (t.rank != 4)
            return failf(msg, size, "'%s' needs %s, got %s", opname(n), what[i], ir_type_str(t, s, sizeof s));
    }
    if (arg_type(f, n, 0).dtype != arg_type(f, n, 1).dtype) {
        char sa[64], sb[64];
        return failf(msg, size, "'%s' needs operands of one element type, got %s and %s", opname(n),
                     ir_type_str(arg_type(f, n, 0), sa, sizeof sa), ir_type_str(arg_type(f, n, 1), sb, sizeof sb));
    }
    return true;
}

/* x, w and y of one convolution with n's attributes. */
static bool conv_fits(const IrNode *n, IrType x, IrType w, IrType y, char *msg, size_t size) {
    int stride = n->list[IR_CONV_STRIDE], pad = n->list[IR_CONV_PAD];
    char sx[64], sw[64], sy[64];
    ir_type_str(x, sx, sizeof sx);
    ir_type_str(w, sw, sizeof sw);
    ir_type_str(y, sy, sizeof sy);
    if (x.dim[1] != w.dim[1])
        return failf(msg, size, "'%s': x %s has %d channels, but w %s takes %d", opname(n), sx, x.dim[1], sw,
                     w.dim[1]);
    int64_t ho = conv_out(x.dim[2], w.dim[2], stride, pad), wo = conv_out(x.dim[3], w.dim[3], stride, pad);
    if (!ho || !wo)
        return failf(msg, size, "'%s': the %dx%d kernel of w %s does not fit x %s padded by %d", opname(n),
                     w.dim[2], w.dim[3], sw, sx, pad);
    if (y.dim[0] != x.dim[0] || y.dim[1] != w.dim[0] || y.dim[2] != ho || y.dim[3] != wo)
        return failf(msg, size, "'%s': x %s and w %s with stride %d, pad %d give [%d,%d,%lld,%lld], not %s",
                     opname(n), sx, sw, stride, pad, x.dim[0], w.dim[0], (long long)ho, (long long)wo, sy);
    return true;
}

/* The given result type of an adjoint op: rank 4, valid, operand dtype. */
static bool conv_result(const IrFunc *f, IrNode *n, const char *what, char *msg, size_t size) {
    n->type.dtype = arg_type(f, n, 0).dtype;
    if (n->type.rank != 4) {
        char s[64];
        return failf(msg, size, "'%s' must give %s, not %s", opname(n), what, ir_type_str(n->type, s, sizeof s));
    }
    return ir_valid_type(n->type, msg, size);
}

static bool shape_CONV2D(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    static const char *const what[2] = {"x [N,C,H,W]", "w [O,C,KH,KW]"};
    if (!conv_attrs(n, msg, size) || !conv_operands(f, n, what, msg, size))
        return false;
    IrType x = arg_type(f, n, 0), w = arg_type(f, n, 1);
    int stride = n->list[IR_CONV_STRIDE], pad = n->list[IR_CONV_PAD];
    int ho = (int)conv_out(x.dim[2], w.dim[2], stride, pad), wo = (int)conv_out(x.dim[3], w.dim[3], stride, pad);
    IrType y = {.dtype = x.dtype, .rank = 4, .dim = {x.dim[0], w.dim[0], ho, wo}};
    if (!conv_fits(n, x, w, y, msg, size) || !ir_valid_type(y, msg, size))
        return false;
    n->type = y;
    return true;
}

static bool shape_CONV2D_GRAD_X(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    static const char *const what[2] = {"g [N,O,Ho,Wo]", "w [O,C,KH,KW]"};
    return conv_attrs(n, msg, size) && conv_operands(f, n, what, msg, size) &&
           conv_result(f, n, "x [N,C,H,W]", msg, size) &&
           conv_fits(n, n->type, arg_type(f, n, 1), arg_type(f, n, 0), msg, size);
}

static bool shape_CONV2D_GRAD_W(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    static const char *const what[2] = {"x [N,C,H,W]", "g [N,O,Ho,Wo]"};
    return conv_attrs(n, msg, size) && conv_operands(f, n, what, msg, size) &&
           conv_result(f, n, "w [O,C,KH,KW]", msg, size) &&
           conv_fits(n, arg_type(f, n, 0), n->type, arg_type(f, n, 1), msg, size);
}

bool ir_infer_type(const IrFunc *f, IrNode *n, char *msg, size_t size) {
    static ShapeRule *const rule[OP_COUNT] = {
#define OP(id, name, arity, kind) [OP_##id] = shape_##id,
#include "ops.def"
#undef OP
    };
    if ((unsigned)n->op >= OP_COUNT)
        return failf(msg, size, "unknown op %d", (int)n->op);
    return rule[n->op](f, n, msg, size);
}
