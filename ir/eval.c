/* The reference evaluator: the meaning of every op, written as plainly as
 * possible in double precision.  Tests compare the code generator and the
 * gradients against it; nothing in a compiled step uses it. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row-major strides of t. */
static void strides(IrType t, int64_t *s) {
    int64_t k = 1;
    for (int i = t.rank - 1; i >= 0; i--) {
        s[i] = k;
        k *= t.dim[i];
    }
}

/* The multi-index of flat element `flat` of t. */
static void unravel(IrType t, int64_t flat, int *idx) {
    for (int i = t.rank - 1; i >= 0; i--) {
        idx[i] = (int)(flat % t.dim[i]);
        flat /= t.dim[i];
    }
}

static double unary(IrOp op, double x, double c) {
    switch (op) {
    case OP_NEG: return -x;
    case OP_EXP: return exp(x);
    case OP_LOG: return log(x);
    case OP_SQRT: return sqrt(x);
    case OP_TANH: return tanh(x);
    case OP_SIGMOID: return 1 / (1 + exp(-x));
    case OP_RELU: return x > 0 ? x : 0;
    case OP_SOFTPLUS: return fmax(x, 0) + log1p(exp(-fabs(x)));
    case OP_SIN: return sin(x);
    case OP_COS: return cos(x);
    case OP_ABS: return fabs(x);
    case OP_ERF: return erf(x);
    case OP_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case OP_STEP: return x > 0 ? 1 : 0;
    case OP_POWC: return pow(x, c);
    case OP_STOP_GRAD: return x;
    default: return NAN;
    }
}

static double binary(IrOp op, double a, double b) {
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    case OP_EQ: return a == b ? 1 : 0;
    default: return NAN;
    }
}

static void eval_reduce(const IrNode *n, IrType tx, const double *x, int64_t ny, double *y) {
    bool reduced[IR_MAX_RANK] = {0};
    for (int i = 0; i < n->nlist; i++)
        reduced[n->list[i]] = true;
    bool is_max = n->op != OP_REDUCE_SUM;
    for (int64_t j = 0; j < ny; j++)
        y[j] = n->op == OP_REDUCE_SUM ? 0 : -INFINITY;
    int64_t *best = n->op == OP_ARGMAX ? calloc((size_t)ny, sizeof *best) : NULL;
    int idx[IR_MAX_RANK];
    for (int64_t k = 0; k < ir_numel(tx); k++) {
        unravel(tx, k, idx);
        int64_t j = 0, pos = 0;
        for (int i = 0; i < tx.rank; i++)
            if (!reduced[i])
                j = j * tx.dim[i] + idx[i];
            else
                pos = idx[i];
        if (!is_max)
            y[j] += x[k];
        else if (x[k] > y[j] || (isnan(x[k]) && !isnan(y[j]))) {
            y[j] = x[k];
            if (best)
                best[j] = pos;
        }
    }
    if (best) {
        for (int64_t j = 0; j < ny; j++)
            y[j] = (double)best[j];
        free(best);
    }
}

static void eval_broadcast(IrType tx, IrType ty, const double *x, double *y) {
    int64_t sx[IR_MAX_RANK];
    strides(tx, sx);
    int idx[IR_MAX_RANK], lead = ty.rank - tx.rank;
    for (int64_t k = 0; k < ir_numel(ty); k++) {
        unravel(ty, k, idx);
        int64_t src = 0;
        for (int i = 0; i < tx.rank; i++)
            src += (tx.dim[i] == 1 ? 0 : idx[i + lead]) * sx[i];
        y[k] = x[src];
    }
}

/* y[i] = x[j] with j[perm[k]] = start[k] + i[k] for each axis k of y:
 * transpose (start all 0) and slice (perm the identity) both read x so. */
static void gather(IrType ty, IrType tx, const int *perm, const int *start, const double *x, double *y) {
    int64_t sx[IR_MAX_RANK];
    strides(tx, sx);
    int idx[IR_MAX_RANK];
    for (int64_t k = 0; k < ir_numel(ty); k++) {
        unravel(ty, k, idx);
        int64_t src = 0;
        for (int i = 0; i < ty.rank; i++)
            src += (idx[i] + start[i]) * sx[perm[i]];
        y[k] = x[src];
    }
}

/* y = a then b along axis n->list[0]. */
static void eval_concat(const IrNode *n, IrType ta, IrType tb, const double *a, const double *b, double *y) {
    int axis = n->list[0], idx[IR_MAX_RANK];
    int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
    strides(ta, sa);
    strides(tb, sb);
    for (int64_t k = 0; k < ir_numel(n->type); k++) {
        unravel(n->type, k, idx);
        bool first = idx[axis] < ta.dim[axis];
        if (!first)
            idx[axis] -= ta.dim[axis];
        int64_t src = 0;
        for (int i = 0; i < ta.rank; i++)
            src += idx[i] * (first ? sa[i] : sb[i]);
        y[k] = first ? a[src] : b[src];
    }
}

static void eval_matmul(IrType ta, IrType tb, const double *a, const double *b, double *y) {
    int m = ta.dim[0], k = ta.dim[1], n = tb.dim[1];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += a[i * k + p] * b[p * n + j];
            y[i * n + j] = s;
        }
}

static void eval_onehot(const IrNode *n, int64_t nlabels, const double *x, double *y) {
    int c = n->ival;
    memset(y, 0, (size_t)(nlabels * c) * sizeof *y);
    for (int64_t i = 0; i < nlabels; i++)
        if (x[i] >= 0 && x[i] < c)
            y[i * c + (int64_t)x[i]] = 1;
}

/* The three convolution ops as one loop over every term of the trilinear
 * form T(x, g, w) = sum g[n,o,i,j] * xp[n,c,i*s+a,j*s+b] * w[o,c,a,b] (xp:
 * x padded with zeros), where tx, tg, tw are the three types and two of
 * x, g, w are given:
 *   conv2d:        y[n,o,i,j]  = sum_{c,a,b} xp * w     (g NULL, y of tg's shape)
 *   conv2d_grad_x: y[n,c,h,v]  = sum_{o,i,j,a,b} g * w  over the terms whose
 *                  padded position (h,v) is inside x (x NULL)
 *   conv2d_grad_w: y[o,c,a,b]  = sum_{n,i,j} xp * g     (w NULL)
 * Padding positions count as zeros that multiply: 0 * inf is NaN here as
 * in the compiled code, which multiplies packed zeros. */
static void eval_conv(const IrNode *n, IrType tx, IrType tg, IrType tw, const double *x, const double *g,
                      const double *w, double *y) {
    int s = n->list[IR_CONV_STRIDE], p = n->list[IR_CONV_PAD];
    int N = tx.dim[0], C = tx.dim[1], H = tx.dim[2], W = tx.dim[3];
    int O = tw.dim[0], KH = tw.dim[2], KW = tw.dim[3], Ho = tg.dim[2], Wo = tg.dim[3];
    memset(y, 0, (size_t)ir_numel(n->type) * sizeof *y);
    for (int in = 0; in < N; in++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++)
                    for (int c = 0; c < C; c++)
                        for (int a = 0; a < KH; a++)
                            for (int b = 0; b < KW; b++) {
                                int h = i * s + a - p, v = j * s + b - p;
                                bool inside = h >= 0 && h < H && v >= 0 && v < W;
                                int64_t xi = (((int64_t)in * C + c) * H + h) * W + v;
                                int64_t gi = (((int64_t)in * O + o) * Ho + i) * Wo + j;
                                int64_t wi = (((int64_t)o * C + c) * KH + a) * KW + b;
                                double xv = x && inside ? x[xi] : 0;
                                if (n->op == OP_CONV2D)
                                    y[gi] += xv * w[wi];
                                else if (n->op == OP_CONV2D_GRAD_W)
                                    y[wi] += xv * g[gi];
                                else if (inside)
                                    y[xi] += g[gi] * w[wi];
                            }
}

bool ir_eval(const IrFunc *f, const double *const *in, double *const *out) {
    static const int identity[IR_MAX_RANK] = {0, 1, 2, 3, 4, 5}, zeros[IR_MAX_RANK] = {0};
    double **val = calloc((size_t)f->nnode, sizeof *val);
    if (!val)
        return false;
    bool ok = true;
    for (ValueId v = 0; v < f->nnode && ok; v++) {
        const IrNode *n = &f->node[v];
        int64_t ny = ir_numel(n->type);
        double *y = val[v] = malloc((size_t)ny * sizeof *y);
        const double *a = n->arg[0] >= 0 ? val[n->arg[0]] : NULL;
        const double *b = n->arg[1] >= 0 ? val[n->arg[1]] : NULL;
        IrType ta = n->arg[0] >= 0 ? f->node[n->arg[0]].type : n->type;
        if (!y) {
            ok = false;
            break;
        }
        switch (ir_op_info[n->op].kind) {
        case KIND_LEAF:
            for (int64_t k = 0; k < ny; k++)
                y[k] = n->op == OP_INPUT ? in[n->ival][k] : n->value;
            break;
        case KIND_UNARY:
            for (int64_t k = 0; k < ny; k++)
                y[k] = unary(n->op, a[k], n->value);
            break;
        case KIND_BINARY:
            for (int64_t k = 0; k < ny; k++)
                y[k] = binary(n->op, a[k], b[k]);
            break;
        case KIND_REDUCE: eval_reduce(n, ta, a, ny, y); break;
        case KIND_LAYOUT:
            if (n->op == OP_RESHAPE)
                memcpy(y, a, (size_t)ny * sizeof *y);
            else if (n->op == OP_BROADCAST)
                eval_broadcast(ta, n->type, a, y);
            else if (n->op == OP_SLICE)
                gather(n->type, ta, identity, n->list, a, y);
            else
                gather(n->type, ta, n->list, zeros, a, y);
            break;
        case KIND_MATMUL: eval_matmul(ta, f->node[n->arg[1]].type, a, b, y); break;
        case KIND_CONV: {
            IrType tb = f->node[n->arg[1]].type;
            if (n->op == OP_CONV2D)
                eval_conv(n, ta, n->type, tb, a, NULL, b, y);
            else if (n->op == OP_CONV2D_GRAD_X)
                eval_conv(n, n->type, ta, tb, NULL, a, b, y);
            else
                eval_conv(n, ta, tb, n->type, a, b, NULL, y);
            break;
        }
        case KIND_OTHER:
            if (n->op == OP_CONCAT)
                eval_concat(n, ta, f->node[n->arg[1]].type, a, b, y);
            else
                eval_onehot(n, ir_numel(ta), a, y);
            break;
        }
    }
    for (int i = 0; ok && i < f->noutput; i++)
        memcpy(out[i], val[f->output[i]], (size_t)ir_numel(f->node[f->output[i]].type) * sizeof(double));
    for (ValueId v = 0; v < f->nnode; v++)
        free(val[v]);
    free(val);
    return ok;
}
