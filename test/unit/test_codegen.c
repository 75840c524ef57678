/* The code generator against the reference evaluator: every op of ops.def,
 * in f32 and f64, at -O3 and -O0, over dense, broadcast, transposed and
 * reshaped operands, JIT-compiled and run on random inputs, compared with
 * ir_eval (relative tolerance 1e-12 in f64, 1e-5 in f32), the convolutions
 * among them; then random graphs of views and ops in f64.  Every run also checks that the function
 * writes nothing past its outputs (guard bytes) or past its planned arena
 * (canary bytes), that it does not depend on what the arena held before,
 * and that a second run gives the same bits.  Last: arena sizes of known
 * plans, a refused function name, powc at special values, and the compile
 * time of a MAML meta-gradient (printed), whose outputs are the same bits
 * when the JIT compiles it on 1-4 threads, and which be_emit_objects
 * writes as one object file per thread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../backend/backend.h"
#include "../../passes/passes.h"
#include "check.h"

static const SrcLoc L = {0};

#define TY(dt, ...) ((IrType){dt, sizeof((int[]){__VA_ARGS__}) / sizeof(int), {__VA_ARGS__}})
#define SCALAR(dt) ((IrType){dt, 0, {0}})
#define AXES(...) (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (int[]){__VA_ARGS__}

enum { GUARD = 64, CANARY = 256 };

typedef struct Case Case;
typedef void Build(IrFunc *f, DType dt, const Case *c);

struct Case {
    const char *name;
    Build *build;
    IrOp op;                    /* for the builders shared by several ops */
    double value;               /* POWC: the exponent */
    double lo, hi;              /* magnitudes of real inputs */
    bool positive;              /* no random sign on real inputs */
    double tol;                 /* relative tolerance; 0: 1e-12 in f64, 1e-5 in f32 */
};

/* --- random inputs --- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

/* --- builders --- */

static ValueId arg(IrFunc *f, const char *name, IrType t) { return ir_input(f, name, t, L); }
static ValueId un(IrFunc *f, IrOp op, ValueId x) { return ir_unary(f, op, x, L, NULL); }
static ValueId bin(IrFunc *f, IrOp op, ValueId a, ValueId b) { return ir_binary(f, op, a, b, L, NULL); }
static ValueId bcast(IrFunc *f, ValueId x, IrType t) { return ir_broadcast(f, x, t, L, NULL); }
static ValueId reshape(IrFunc *f, ValueId x, IrType t) { return ir_reshape(f, x, t, L, NULL); }
static ValueId tr(IrFunc *f, ValueId x, const int *perm) { return ir_transpose(f, x, perm, L, NULL); }
static ValueId mm(IrFunc *f, ValueId a, ValueId b) { return ir_matmul(f, a, b, L, NULL); }
static ValueId red(IrFunc *f, IrOp op, ValueId x, int n, const int *axes) { return ir_reduce(f, op, x, n, axes, L, NULL); }
static ValueId cst(IrFunc *f, double v, IrType t) { return ir_const(f, v, t, L); }
static void ret(IrFunc *f, ValueId v) { ir_output(f, v); }

static ValueId apply1(IrFunc *f, const Case *c, ValueId x)
{
    return c->op == OP_POWC ? ir_powc(f, x, c->value, L, NULL) : un(f, c->op, x);
}

/* A unary op over a dense matrix, a transposed view, a broadcast row and a
 * long vector (vector loop and remainder). */
static void b_unary(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 7, 13)), w = arg(f, "w", TY(dt, 13)), y = arg(f, "y", TY(dt, 1031));
    ret(f, apply1(f, c, x));
    ret(f, apply1(f, c, tr(f, x, (int[]){1, 0})));
    ret(f, apply1(f, c, bcast(f, w, TY(dt, 5, 13))));
    ret(f, apply1(f, c, y));
}

/* A binary op over dense operands, broadcast rows, columns and scalars, a
 * transposed view and constants. */
static void b_binary(IrFunc *f, DType dt, const Case *c)
{
    IrType t = TY(dt, 7, 13);
    ValueId x = arg(f, "x", t), y = arg(f, "y", t), w = arg(f, "w", TY(dt, 13));
    ValueId col = arg(f, "c", TY(dt, 7, 1)), s = arg(f, "s", SCALAR(dt)), z = arg(f, "z", TY(dt, 13, 7));
    ret(f, bin(f, c->op, x, y));
    ret(f, bin(f, c->op, x, bcast(f, w, t)));
    ret(f, bin(f, c->op, bcast(f, col, t), y));
    ret(f, bin(f, c->op, x, bcast(f, s, t)));
    ret(f, bin(f, c->op, tr(f, z, (int[]){1, 0}), y));
    ret(f, bin(f, c->op, x, cst(f, 1.5, t)));
    ret(f, bin(f, c->op, cst(f, -0.75, t), y));
    ret(f, bin(f, c->op, bcast(f, w, TY(dt, 3, 4, 13)), bcast(f, arg(f, "r", TY(dt, 4, 1)), TY(dt, 3, 4, 13))));
    ValueId big = arg(f, "big", TY(dt, 2, 515));
    ret(f, bin(f, c->op, big, bcast(f, arg(f, "bw", TY(dt, 515)), TY(dt, 2, 515))));
}

/* eq on reals (the positions of each row's max, a one-hot of the argmax)
 * and on i32 labels (accuracy), with ties from step(). */
static void b_eq(IrFunc *f, DType dt, const Case *c)
{
    IrType t = TY(dt, 6, 9);
    ValueId x = arg(f, "x", t), lab = arg(f, "lab", TY(DT_I32, 6));
    ValueId m = bcast(f, reshape(f, red(f, OP_REDUCE_MAX, x, AXES(1)), TY(dt, 6, 1)), t);
    ret(f, bin(f, OP_EQ, x, m));
    ret(f, bin(f, OP_EQ, ir_argmax(f, x, 1, L, NULL), lab));
    ValueId st = un(f, OP_STEP, x);
    ret(f, bin(f, OP_EQ, st, tr(f, un(f, OP_STEP, arg(f, "z", TY(dt, 9, 6))), (int[]){1, 0})));
    ret(f, bin(f, OP_EQ, lab, lab));
}

/* Reductions over every subset of axes, of dense, transposed and broadcast
 * operands, to scalars kept in registers and used again. */
static void b_reduce(IrFunc *f, DType dt, const Case *c)
{
    IrOp op = c->op;
    ValueId x = arg(f, "x", TY(dt, 3, 5, 7)), m = arg(f, "m", TY(dt, 9, 21)), w = arg(f, "w", TY(dt, 21));
    ret(f, red(f, op, x, AXES(0)));
    ret(f, red(f, op, x, AXES(1)));
    ret(f, red(f, op, x, AXES(2)));
    ret(f, red(f, op, x, AXES(0, 1)));
    ret(f, red(f, op, x, AXES(0, 2)));
    ret(f, red(f, op, x, AXES(1, 2)));
    ret(f, red(f, op, x, AXES(0, 1, 2)));
    ret(f, red(f, op, m, AXES(0)));
    ret(f, red(f, op, m, AXES(1)));
    ret(f, red(f, op, tr(f, m, (int[]){1, 0}), AXES(0)));
    ret(f, red(f, op, tr(f, m, (int[]){1, 0}), AXES(1)));
    ret(f, red(f, op, tr(f, x, (int[]){2, 0, 1}), AXES(0, 2)));
    ret(f, red(f, op, bcast(f, w, TY(dt, 4, 21)), AXES(0)));
    ret(f, red(f, op, bcast(f, w, TY(dt, 4, 21)), AXES(1)));
    ret(f, red(f, op, un(f, OP_EXP, m), AXES(0)));
    ValueId all = red(f, op, m, AXES(0, 1));            /* a register */
    ret(f, bin(f, OP_SUB, m, bcast(f, all, TY(dt, 9, 21))));
    ret(f, red(f, op, arg(f, "one", TY(dt, 1, 4, 1)), AXES(0, 2)));
    ret(f, red(f, op, arg(f, "long", TY(dt, 3, 1000)), AXES(0)));
    ret(f, red(f, op, arg(f, "lng", TY(dt, 2, 999)), AXES(1)));
}

/* Values read only through stop_grad (a view): computed all the same. */
static void b_stop_grad(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 4, 9));
    ret(f, un(f, OP_NEG, un(f, OP_SIN, un(f, OP_STOP_GRAD, un(f, OP_EXP, x)))));
    ValueId s = bin(f, OP_MUL, x, un(f, OP_STOP_GRAD, bin(f, OP_ADD, x, arg(f, "y", TY(dt, 4, 9)))));
    ret(f, bin(f, OP_SUB, s, x));
}

/* Products whose operand read as scalars is copied into rows dense along
 * k (many columns of tiles, k apart in memory): A^T B (a weight's
 * gradient), with a fused epilogue, and C^T = B^T A^T with B^T copied. */
static void b_packed_rows(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ValueId g = arg(f, "g", TY(dt, 9, 30)), x = arg(f, "x", TY(dt, 9, 200));
    ret(f, mm(f, tr(f, g, t01), x));
    ret(f, bin(f, OP_ADD, mm(f, tr(f, g, t01), x), arg(f, "y", TY(dt, 30, 200))));
    ret(f, mm(f, arg(f, "a", TY(dt, 150, 40)), arg(f, "b", TY(dt, 40, 3))));
}

/* g_i^T q_i over [64, 200] (g_i: k_i x 64 read transposed, q_i: k_i x
 * 200), with new operands for each product, so that nothing else reads it. */
static ValueId weight_grad(IrFunc *f, DType dt, int k)
{
    static const char *const name[][2] = {{"g0", "q0"}, {"g1", "q1"}, {"g2", "q2"}, {"g3", "q3"},
                                          {"g4", "q4"}, {"g5", "q5"}, {"g6", "q6"}, {"g7", "q7"}};
    static int next;
    const char *const *nm = name[next++ % 8];
    return mm(f, tr(f, arg(f, nm[0], TY(dt, k, 64)), (int[]){1, 0}), arg(f, nm[1], TY(dt, k, 200)));
}

/* Sums of two products, which run in the tiles of the one with more terms
 * (the other's terms first): either one first, under an epilogue, with
 * as many terms each; and a pair that packs an operand, which cannot. */
static void b_summed_products(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ret(f, bin(f, OP_ADD, weight_grad(f, dt, 15), weight_grad(f, dt, 3)));
    ret(f, bin(f, OP_ADD, weight_grad(f, dt, 3), weight_grad(f, dt, 15)));
    ret(f, bin(f, OP_SUB, arg(f, "y", TY(dt, 64, 200)), bin(f, OP_ADD, weight_grad(f, dt, 7), weight_grad(f, dt, 2))));
    ret(f, bin(f, OP_ADD, weight_grad(f, dt, 5), weight_grad(f, dt, 5)));
    ValueId x = arg(f, "x", TY(dt, 5, 20)), w = arg(f, "w", TY(dt, 1700, 20)), v = arg(f, "v", TY(dt, 1700, 20));
    ret(f, bin(f, OP_ADD, mm(f, x, tr(f, w, t01)), mm(f, x, tr(f, v, t01))));
}

/* Sums over long dense runs, which are blocked: runs with remainders of
 * blocks, vectors and elements, behind an outer reduced dim, merged from
 * several dims, and as long as a block and as a segment (and one more). */
static void b_blocked_sum(IrFunc *f, DType dt, const Case *c)
{
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "runs", TY(dt, 3, 4, 45)), AXES(0, 2)));
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "merged", TY(dt, 2, 3, 8, 5)), AXES(0, 2, 3)));
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "block", TY(dt, 2, 32)), AXES(1)));
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "segment", TY(dt, 3, 1024)), AXES(1)));
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "more", TY(dt, 2, 2, 1025)), AXES(0, 2)));
}

/* Sums that compute their operand in their blocked loop: squares, products
 * and differences of dense operands, with constants and registers; and
 * operands they cannot compute (transposed, broadcast, a run too short),
 * which are stored first. */
static void b_fused_sum(IrFunc *f, DType dt, const Case *c)
{
    IrType t = TY(dt, 3, 4, 45);
    ValueId x = arg(f, "x", t), y = arg(f, "y", t);
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, x, x), AXES(0, 2)));
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_SUB, x, cst(f, 0.25, t)), AXES(0, 2)));
    ValueId all = red(f, OP_REDUCE_SUM, y, AXES(0, 1, 2));            /* a register */
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, y, bcast(f, all, t)), AXES(1, 2)));
    ret(f, red(f, OP_REDUCE_SUM, un(f, OP_NEG, bin(f, OP_ADD, x, y)), AXES(2)));
    ValueId m = arg(f, "m", TY(dt, 40, 33));
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, tr(f, m, (int[]){1, 0}), tr(f, m, (int[]){1, 0})), AXES(1)));
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, x, bcast(f, arg(f, "v", TY(dt, 45)), t)), AXES(0, 2)));
    ValueId s = arg(f, "s", TY(dt, 6, 7));
    ret(f, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, s, s), AXES(1)));
}

/* Half a million positive terms, to a scalar and per channel over images
 * (batch norm's statistics): blocked, the f32 results stay within 1e-6 of
 * the exact sums, where one running f32 sum drifts off by about 5e-5. */
static void b_long_sum(IrFunc *f, DType dt, const Case *c)
{
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "x", TY(dt, 4, 131072)), AXES(0, 1)));
    ret(f, red(f, OP_REDUCE_SUM, arg(f, "y", TY(dt, 4, 2, 65536)), AXES(0, 2)));
}

/* argmax along each axis, with ties (first wins) and NaNs (the first wins). */
static void b_argmax(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 3, 5, 7));
    for (int a = 0; a < 3; a++)
        ret(f, ir_argmax(f, x, a, L, NULL));
    ValueId st = un(f, OP_STEP, x);
    ret(f, ir_argmax(f, st, 2, L, NULL));
    ret(f, ir_argmax(f, st, 0, L, NULL));
    ret(f, ir_argmax(f, un(f, OP_LOG, x), 2, L, NULL));
    ret(f, ir_argmax(f, tr(f, x, (int[]){2, 1, 0}), 0, L, NULL));
    ret(f, ir_argmax(f, arg(f, "v", TY(dt, 33)), 0, L, NULL));
    ret(f, ir_argmax(f, arg(f, "c", TY(dt, 4, 1)), 1, L, NULL));
}

/* reduce_max with NaNs in the operand. */
static void b_max_nan(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = un(f, OP_LOG, arg(f, "x", TY(dt, 5, 7)));
    ret(f, red(f, OP_REDUCE_MAX, x, AXES(0)));
    ret(f, red(f, OP_REDUCE_MAX, x, AXES(1)));
    ret(f, red(f, OP_REDUCE_MAX, x, AXES(0, 1)));
}

/* matmul in both loop orders: dense, transposed A, transposed B (dot
 * products), both transposed, k = 1, n = 1, 1x1 (a register), broadcast
 * and constant operands, and sizes with vector remainders. */
static void b_matmul(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ValueId a = arg(f, "a", TY(dt, 5, 7)), b = arg(f, "b", TY(dt, 7, 9));
    ValueId at = arg(f, "at", TY(dt, 7, 5)), bt = arg(f, "bt", TY(dt, 9, 7));
    ret(f, mm(f, a, b));
    ret(f, mm(f, tr(f, at, t01), b));
    ret(f, mm(f, a, tr(f, bt, t01)));
    ret(f, mm(f, tr(f, at, t01), tr(f, bt, t01)));
    ret(f, mm(f, arg(f, "k1", TY(dt, 5, 1)), arg(f, "k1b", TY(dt, 1, 9))));
    ret(f, mm(f, a, arg(f, "n1", TY(dt, 7, 1))));
    ValueId dot = mm(f, arg(f, "r", TY(dt, 1, 7)), arg(f, "s", TY(dt, 7, 1)));
    ret(f, bin(f, OP_MUL, a, bcast(f, dot, TY(dt, 5, 7))));
    ret(f, mm(f, a, bcast(f, arg(f, "w", TY(dt, 9)), TY(dt, 7, 9))));
    ret(f, mm(f, cst(f, 0.5, TY(dt, 5, 7)), b));
    ret(f, mm(f, arg(f, "big", TY(dt, 33, 65)), arg(f, "bigb", TY(dt, 65, 17))));
    ret(f, mm(f, arg(f, "big2", TY(dt, 17, 65)), tr(f, arg(f, "bigt", TY(dt, 19, 65)), t01)));
    ret(f, mm(f, un(f, OP_TANH, mm(f, a, b)), tr(f, b, t01)));
}

/* Products whose vector operand is packed from a transposed one: the
 * copies move whole blocks of 32 bytes square through registers and the
 * rows and columns past the last block element by element; sizes with
 * both edges, exactly whole blocks, and under one block. */
static void b_transposed_packs(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ValueId w = arg(f, "w", TY(dt, 37, 45));
    ret(f, mm(f, arg(f, "x", TY(dt, 19, 45)), tr(f, w, t01)));
    ret(f, mm(f, arg(f, "h", TY(dt, 21, 45)), tr(f, un(f, OP_TANH, w), t01)));
    ret(f, mm(f, arg(f, "x16", TY(dt, 16, 24)), tr(f, arg(f, "w16", TY(dt, 40, 24)), t01)));
    ret(f, mm(f, arg(f, "x3", TY(dt, 3, 12)), tr(f, arg(f, "w3", TY(dt, 5, 12)), t01)));
}

/* Products whose operands are both dense along k, with few rows or
 * columns: dot products along k, whole vectors of terms then the last
 * ones, whole tiles of columns then the last ones; as a register (1 x 1),
 * and computing the loop that reads them (an epilogue). */
static void b_dot_products(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ValueId w = arg(f, "w", TY(dt, 130, 200)), s = arg(f, "s", TY(dt, 5, 45));
    ret(f, mm(f, arg(f, "a", TY(dt, 5, 200)), tr(f, w, t01)));
    ret(f, mm(f, arg(f, "x", TY(dt, 75, 45)), tr(f, s, t01)));
    ret(f, mm(f, s, tr(f, arg(f, "x2", TY(dt, 19, 45)), t01)));
    ret(f, mm(f, arg(f, "r", TY(dt, 1, 37)), tr(f, arg(f, "q", TY(dt, 1, 37)), t01)));
    ValueId big = mm(f, arg(f, "a5", TY(dt, 5, 27)), tr(f, arg(f, "w5", TY(dt, 1700, 27)), t01));
    ret(f, bin(f, OP_SUB, bcast(f, arg(f, "bias", TY(dt, 1700)), TY(dt, 5, 1700)), big));
}

/* Values computed in their one reader's loop (fused): elementwise chains
 * with broadcast operands, and products (of at least 32 KiB) whose tiles
 * compute the loop reading them, in both loop orders, with padded tiles,
 * transposed, broadcast, constant and register operands, the product first
 * or second. */
static void b_fused(IrFunc *f, DType dt, const Case *c)
{
    const int *t01 = (int[]){1, 0};
    ValueId a = arg(f, "a", TY(dt, 75, 33)), b = arg(f, "b", TY(dt, 33, 130)), y = arg(f, "y", TY(dt, 75, 130));
    ValueId w = arg(f, "w", TY(dt, 1700, 20)), x = arg(f, "x", TY(dt, 5, 20));
    ValueId g = arg(f, "g", TY(dt, 5, 130)), h = arg(f, "h", TY(dt, 5, 70));
    ret(f, bin(f, OP_SUB, y, bin(f, OP_MUL, cst(f, 0.5, TY(dt, 75, 130)), mm(f, a, b))));
    ret(f, bin(f, OP_ADD, mm(f, x, tr(f, w, t01)), bcast(f, arg(f, "bias", TY(dt, 1700)), TY(dt, 5, 1700))));
    ret(f, bin(f, OP_SUB, mm(f, x, tr(f, w, t01)), arg(f, "y2", TY(dt, 5, 1700))));
    ret(f, bin(f, OP_ADD, un(f, OP_NEG, mm(f, tr(f, g, t01), h)), tr(f, arg(f, "ht", TY(dt, 70, 130)), t01)));
    ValueId s = red(f, OP_REDUCE_SUM, arg(f, "r", TY(dt, 3)), AXES(0));
    ret(f, bin(f, OP_MUL, mm(f, a, b), bcast(f, s, TY(dt, 75, 130))));
    ValueId e = un(f, OP_EXP, arg(f, "e", TY(dt, 4, 6)));
    ret(f, bin(f, OP_MUL, e, bcast(f, arg(f, "v", TY(dt, 6)), TY(dt, 4, 6))));
    ret(f, un(f, OP_TANH, bin(f, OP_DIV, un(f, OP_SIN, e), arg(f, "d", TY(dt, 4, 6)))));
}

/* onehot of labels in and out of range, of rank 1 and 2, with one class. */
static void b_onehot(IrFunc *f, DType dt, const Case *c)
{
    ValueId l1 = arg(f, "l1", TY(DT_I32, 40)), l2 = arg(f, "l2", TY(DT_I32, 3, 4));
    ret(f, ir_onehot(f, l1, 10, L, NULL));
    ret(f, ir_onehot(f, l2, 7, L, NULL));
    ret(f, ir_onehot(f, l1, 1, L, NULL));
    ret(f, ir_onehot(f, tr(f, l2, (int[]){1, 0}), 5, L, NULL));
}

/* Layout views: reshapes of dense, transposed and broadcast values (views
 * where affine, copies where not), transposes of rank 3, stop_grad. */
static void b_layout(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 6, 4)), y = arg(f, "y", TY(dt, 24)), w = arg(f, "w", TY(dt, 3));
    ValueId e = un(f, OP_EXP, x);
    ret(f, bin(f, OP_ADD, reshape(f, e, TY(dt, 24)), y));                          /* view of a buffer */
    ret(f, bin(f, OP_ADD, reshape(f, tr(f, x, (int[]){1, 0}), TY(dt, 24)), y));    /* copy */
    ret(f, bin(f, OP_MUL, reshape(f, tr(f, e, (int[]){1, 0}), TY(dt, 4, 2, 3)),    /* view: split dim */
               reshape(f, y, TY(dt, 4, 2, 3))));
    ValueId bw = bcast(f, w, TY(dt, 4, 5, 3));
    ret(f, bin(f, OP_ADD, reshape(f, bw, TY(dt, 20, 3)), arg(f, "z", TY(dt, 20, 3))));   /* view */
    ret(f, bin(f, OP_ADD, reshape(f, bw, TY(dt, 60)), arg(f, "u", TY(dt, 60))));         /* copy */
    ValueId x3 = arg(f, "x3", TY(dt, 2, 3, 4));
    ret(f, bin(f, OP_MUL, tr(f, x3, (int[]){2, 0, 1}), tr(f, un(f, OP_SIN, x3), (int[]){2, 0, 1})));
    ret(f, un(f, OP_STOP_GRAD, x));
    ret(f, bin(f, OP_MUL, un(f, OP_STOP_GRAD, e), x));
    ret(f, reshape(f, tr(f, e, (int[]){1, 0}), TY(dt, 2, 12)));                    /* output is a copy */
    ret(f, reshape(f, reshape(f, tr(f, x, (int[]){1, 0}), TY(dt, 24)), TY(dt, 8, 3)));
    ret(f, reshape(f, cst(f, 2.5, TY(dt, 2, 3)), TY(dt, 6)));
}

/* Outputs that are inputs, constants, views, repeated values, scalars, and
 * values later nodes still read. */
static void b_outputs(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 4, 5)), lab = arg(f, "lab", TY(DT_I32, 4));
    ValueId e = un(f, OP_EXP, x);
    ret(f, x);
    ret(f, lab);
    ret(f, cst(f, 3.25, TY(dt, 2, 3)));
    ret(f, cst(f, 7, TY(DT_I32, 5)));
    ret(f, e);
    ret(f, e);
    ret(f, tr(f, e, (int[]){1, 0}));
    ret(f, bcast(f, arg(f, "w", TY(dt, 5)), TY(dt, 3, 5)));
    ValueId s = red(f, OP_REDUCE_SUM, e, AXES(0, 1));
    ret(f, s);
    ret(f, bin(f, OP_DIV, e, bcast(f, s, TY(dt, 4, 5))));
    ret(f, reshape(f, s, TY(dt, 1, 1)));
    ret(f, un(f, OP_NEG, cst(f, 1.5, SCALAR(dt))));
    ValueId m = red(f, OP_REDUCE_MAX, x, AXES(0, 1));  /* a register ... */
    ret(f, bcast(f, m, TY(dt, 2, 2)));                  /* ... copied out through a view */
    ret(f, ir_argmax(f, reshape(f, x, TY(dt, 20)), 0, L, NULL));   /* an i32 register, output */
    un(f, OP_SIN, e);                                   /* dead: no code, no buffer */
}

/* A chain of 40 elementwise ops on one shape: the arena holds two buffers
 * at a time, not forty. */
static void b_chain(IrFunc *f, DType dt, const Case *c)
{
    IrType t = TY(dt, 32, 32);
    ValueId x = arg(f, "x", t), v = x;
    for (int i = 0; i < 40; i++)
        v = i % 2 ? un(f, OP_SIN, v) : bin(f, OP_ADD, v, x);
    ret(f, v);
}

/* Values of at least 256 KiB computed in place of an operand they read
 * last: a chain (each sin with its add fused), a value reading the dying
 * operand twice, and one reading it transposed as well (not in place). */
static void b_in_place(IrFunc *f, DType dt, const Case *c)
{
    IrType t = TY(dt, 256, 256);
    ValueId x = arg(f, "x", t), v = un(f, OP_EXP, x);
    for (int i = 0; i < 6; i++)
        v = i % 2 ? un(f, OP_SIN, v) : bin(f, OP_ADD, v, x);
    ret(f, bin(f, OP_MUL, un(f, OP_SIN, bin(f, OP_MUL, v, v)), x));
    ValueId e = un(f, OP_EXP, arg(f, "y", t));
    ret(f, un(f, OP_SIN, bin(f, OP_ADD, e, tr(f, e, (int[]){1, 0}))));
}

/* log-softmax cross-entropy and accuracy of a small MLP, as a model's loss
 * lowers. */
static void b_mlp_loss(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 10, 8)), w1 = arg(f, "w1", TY(dt, 16, 8)), b1 = arg(f, "b1", TY(dt, 16));
    ValueId w2 = arg(f, "w2", TY(dt, 16, 5)), lab = arg(f, "lab", TY(DT_I32, 10));
    ValueId h = un(f, OP_RELU, bin(f, OP_ADD, mm(f, x, tr(f, w1, (int[]){1, 0})), bcast(f, b1, TY(dt, 10, 16))));
    ValueId z = mm(f, h, w2);
    IrType t = TY(dt, 10, 5), k = TY(dt, 10, 1);
    ValueId m = un(f, OP_STOP_GRAD, red(f, OP_REDUCE_MAX, z, AXES(1)));
    ValueId zs = bin(f, OP_SUB, z, bcast(f, reshape(f, m, k), t));
    ValueId lse = un(f, OP_LOG, red(f, OP_REDUCE_SUM, un(f, OP_EXP, zs), AXES(1)));
    ValueId lp = bin(f, OP_SUB, zs, bcast(f, reshape(f, lse, k), t));
    ValueId ce = red(f, OP_REDUCE_SUM, bin(f, OP_MUL, lp, ir_onehot(f, lab, 5, L, NULL)), AXES(0, 1));
    ret(f, bin(f, OP_MUL, ce, cst(f, -0.1, SCALAR(dt))));
    ValueId acc = red(f, OP_REDUCE_SUM, bin(f, OP_EQ, ir_argmax(f, z, 1, L, NULL), lab), AXES(0));
    ret(f, acc);
}

/* One convolution op (c->op) over a set of geometries: strides 1 to 3,
 * padding, odd sizes whose last rows no window reads, 1x1 kernels and
 * kernels wider than the image, channel and position counts on both sides
 * of a vector (both ways of tiling the product); then operands that are
 * transposed and broadcast views, constants and computed values. */
static ValueId conv(IrFunc *f, IrOp op, ValueId a, ValueId b, int s, int p, IrType t)
{
    return ir_conv(f, op, a, b, s, p, t, L, NULL);
}

static ValueId conv_op(IrFunc *f, IrOp op, ValueId x, ValueId w, ValueId g, int s, int p)
{
    if (op == OP_CONV2D)
        return conv(f, op, x, w, s, p, ir_value_type(f, x));
    if (op == OP_CONV2D_GRAD_X)
        return conv(f, op, g, w, s, p, ir_value_type(f, x));
    return conv(f, op, x, g, s, p, ir_value_type(f, w));
}

static const char *name_of(IrFunc *f, const char *what, int i)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%s%d", what, i);
    return arena_strdup(&f->mod->arena, buf);
}

static void b_conv(IrFunc *f, DType dt, const Case *c)
{
    static const struct { int n, ci, h, w, o, kh, kw, s, p; } geo[] = {
        {2, 3, 9, 9, 5, 3, 3, 1, 1},        /* stride 1, pad 1 */
        {3, 4, 8, 8, 17, 3, 3, 2, 1},       /* stride 2, pad 1 */
        {2, 2, 7, 9, 6, 2, 3, 2, 0},        /* odd sizes: the last row and column unread */
        {1, 1, 28, 28, 16, 3, 3, 2, 1},     /* K = 9 */
        {2, 16, 5, 5, 3, 1, 1, 1, 0},       /* 1x1 */
        {1, 2, 3, 3, 2, 5, 5, 1, 2},        /* kernel as wide as the padded image */
        {2, 3, 6, 7, 33, 3, 2, 3, 2},       /* stride 3, pad 2 */
        {1, 1, 1, 1, 1, 1, 1, 1, 0},        /* one element */
        {2, 2, 16, 16, 2, 3, 3, 1, 1},      /* few channels, many positions */
        {3, 20, 5, 5, 24, 2, 2, 1, 0},      /* many channels, few positions */
        {2, 3, 11, 12, 8, 5, 5, 5, 2},      /* stride 5: 25 phases */
        {2, 16, 5, 5, 32, 5, 5, 5, 0},      /* one position */
        {1, 2, 1, 1, 3, 1, 1, 32768, 32768},    /* the padded image too large to copy */
    };
    IrOp op = c->op;
    for (int i = 0; i < (int)(sizeof geo / sizeof geo[0]); i++) {
        int ho = (geo[i].h + 2 * geo[i].p - geo[i].kh) / geo[i].s + 1;
        int wo = (geo[i].w + 2 * geo[i].p - geo[i].kw) / geo[i].s + 1;
        ValueId x = arg(f, name_of(f, "x", i), TY(dt, geo[i].n, geo[i].ci, geo[i].h, geo[i].w));
        ValueId w = arg(f, name_of(f, "w", i), TY(dt, geo[i].o, geo[i].ci, geo[i].kh, geo[i].kw));
        ValueId g = arg(f, name_of(f, "g", i), TY(dt, geo[i].n, geo[i].o, ho, wo));
        ret(f, conv_op(f, op, x, w, g, geo[i].s, geo[i].p));
    }
    /* views, constants, computed operands: x [2,3,6,5], w [4,3,3,3], g [2,4,3,3] at stride 2, pad 1 */
    IrType tx = TY(dt, 2, 3, 6, 5), tw = TY(dt, 4, 3, 3, 3), tg = TY(dt, 2, 4, 3, 3);
    ValueId x = arg(f, "vx", tx), w = arg(f, "vw", tw), g = arg(f, "vg", tg);
    ValueId xt = tr(f, arg(f, "xt", TY(dt, 2, 3, 5, 6)), (int[]){0, 1, 3, 2});
    ValueId wb = bcast(f, arg(f, "wb", TY(dt, 3, 3, 3)), tw);
    ValueId wt = tr(f, arg(f, "wt", TY(dt, 3, 4, 3, 3)), (int[]){1, 0, 3, 2});
    ValueId gt = tr(f, arg(f, "gt", TY(dt, 4, 2, 3, 3)), (int[]){1, 0, 2, 3});
    ValueId wr = reshape(f, arg(f, "wr", TY(dt, 4, 27)), tw);
    ret(f, conv_op(f, op, xt, w, g, 2, 1));
    ret(f, conv_op(f, op, x, wb, g, 2, 1));
    ret(f, conv_op(f, op, x, wt, gt, 2, 1));
    ret(f, conv_op(f, op, x, wr, gt, 2, 1));
    ret(f, conv_op(f, op, cst(f, 0.5, tx), cst(f, -1.25, tw), cst(f, 2, tg), 2, 1));
    ret(f, conv_op(f, op, un(f, OP_TANH, x), un(f, OP_SIN, w), un(f, OP_COS, g), 2, 1));
    /* a chain: conv -> relu -> conv, differentiated in x by hand (f64: in
     * f32 its rounding of intermediates exceeds the f32 tolerance) */
    if (dt != DT_F64)
        return;
    ValueId w2 = arg(f, "w2", TY(dt, 5, 4, 2, 2));
    ValueId h = un(f, OP_RELU, conv(f, OP_CONV2D, x, w, 2, 1, tx));
    ValueId y = conv(f, OP_CONV2D, h, w2, 1, 0, tx);
    ValueId dh = bin(f, OP_MUL, conv(f, OP_CONV2D_GRAD_X, un(f, OP_SIN, y), w2, 1, 0, ir_value_type(f, h)),
                     un(f, OP_STEP, h));
    ret(f, y);
    ret(f, conv(f, OP_CONV2D_GRAD_X, dh, w, 2, 1, tx));
    ret(f, conv(f, OP_CONV2D_GRAD_W, x, dh, 2, 1, tw));
}

static ValueId slice(IrFunc *f, ValueId x, const int *start, IrType t) { return ir_slice(f, x, start, t, L, NULL); }
static ValueId cat(IrFunc *f, ValueId a, ValueId b, int axis) { return ir_concat(f, a, b, axis, L, NULL); }

/* Slices (views at an offset) of inputs, computed buffers, transposed and
 * broadcast values and constants, read by maps, sums, products and
 * convolutions, and as outputs; a slice of a slice. */
static void b_slice(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 7, 9)), m = arg(f, "m", TY(dt, 6, 5)), w = arg(f, "w", TY(dt, 9));
    ValueId e = un(f, OP_EXP, x), t = tr(f, x, (int[]){1, 0});
    ret(f, slice(f, x, (int[]){2, 3}, TY(dt, 4, 5)));                                  /* output: a copy */
    ret(f, un(f, OP_SIN, slice(f, e, (int[]){1, 0}, TY(dt, 6, 9))));
    ret(f, bin(f, OP_ADD, slice(f, t, (int[]){4, 1}, TY(dt, 5, 6)), tr(f, m, (int[]){1, 0})));
    ret(f, red(f, OP_REDUCE_SUM, slice(f, x, (int[]){0, 1}, TY(dt, 7, 8)), AXES(1)));
    ret(f, red(f, OP_REDUCE_MAX, slice(f, e, (int[]){3, 2}, TY(dt, 4, 7)), AXES(0)));
    ret(f, mm(f, slice(f, x, (int[]){1, 2}, TY(dt, 6, 5)), slice(f, tr(f, m, (int[]){1, 0}), (int[]){0, 1},
                                                                 TY(dt, 5, 5))));
    ret(f, slice(f, slice(f, e, (int[]){1, 1}, TY(dt, 5, 7)), (int[]){2, 3}, TY(dt, 2, 3)));
    ret(f, bin(f, OP_MUL, slice(f, bcast(f, w, TY(dt, 4, 9)), (int[]){1, 4}, TY(dt, 2, 5)), arg(f, "z", TY(dt, 2, 5))));
    ret(f, un(f, OP_TANH, slice(f, cst(f, 1.5, TY(dt, 3, 3)), (int[]){1, 0}, TY(dt, 2, 3))));
    ValueId img = arg(f, "img", TY(dt, 2, 3, 7, 7)), k = arg(f, "k", TY(dt, 4, 3, 3, 3));
    ValueId crop = slice(f, un(f, OP_RELU, img), (int[]){0, 0, 1, 0}, TY(dt, 2, 3, 6, 6));
    ret(f, conv(f, OP_CONV2D, crop, k, 1, 1, TY(dt, 2, 3, 6, 6)));
    ret(f, conv(f, OP_CONV2D, slice(f, img, (int[]){1, 0, 0, 1}, TY(dt, 1, 3, 7, 6)), k, 2, 0, TY(dt, 1, 3, 7, 6)));
    ret(f, red(f, OP_REDUCE_MAX, reshape(f, crop, TY(dt, 2, 3, 3, 2, 3, 2)), AXES(3, 5)));
}

/* Concatenations along each axis of inputs, views, computed values,
 * constants (zero padding) and one-element registers, read by maps and
 * products and as outputs. */
static void b_concat(IrFunc *f, DType dt, const Case *c)
{
    ValueId x = arg(f, "x", TY(dt, 4, 3)), y = arg(f, "y", TY(dt, 4, 5)), z = arg(f, "z", TY(dt, 2, 3));
    ValueId s = red(f, OP_REDUCE_SUM, x, AXES(0, 1));
    ret(f, cat(f, x, y, 1));
    ret(f, cat(f, x, z, 0));
    ret(f, un(f, OP_SIN, cat(f, un(f, OP_EXP, x), tr(f, arg(f, "t", TY(dt, 5, 4)), (int[]){1, 0}), 1)));
    ret(f, mm(f, cat(f, y, x, 1), arg(f, "w", TY(dt, 8, 6))));
    ret(f, cat(f, cst(f, 0, TY(dt, 1, 3)), cat(f, x, cst(f, 0, TY(dt, 2, 3)), 0), 0));
    ret(f, cat(f, reshape(f, s, TY(dt, 1)), reshape(f, red(f, OP_REDUCE_MAX, y, AXES(0, 1)), TY(dt, 1)), 0));
    ValueId img = arg(f, "img", TY(dt, 2, 3, 4, 5));
    ValueId padded = cat(f, cst(f, 0, TY(dt, 2, 3, 1, 5)), un(f, OP_TANH, img), 2);
    ret(f, cat(f, padded, cst(f, 0, TY(dt, 2, 3, 5, 2)), 3));
    ret(f, cat(f, img, bcast(f, arg(f, "b", TY(dt, 5)), TY(dt, 2, 2, 4, 5)), 1));
    ret(f, bin(f, OP_ADD, cat(f, x, x, 0), bcast(f, s, TY(dt, 8, 3))));
}

#define U(op, lo, hi, pos) {#op, b_unary, OP_##op, 0, lo, hi, pos, 0}
#define P(v, lo, pos) {"powc " #v, b_unary, OP_POWC, v, lo, 2, pos, 0}
#define B(op, lo, hi) {#op, b_binary, OP_##op, 0, lo, hi, false, 0}

static const Case cases[] = {
    U(NEG, 0.1, 3, false), U(EXP, 0.1, 3, false), U(LOG, 0.1, 5, true), U(SQRT, 0.1, 5, true),
    U(TANH, 0.001, 4, false), U(SIGMOID, 0.01, 30, false), U(RELU, 0.1, 3, false),
    U(SOFTPLUS, 0.01, 40, false), U(SIN, 0.1, 6, false), U(COS, 0.1, 6, false), U(ABS, 0.1, 3, false),
    U(SIGN, 0, 3, false), U(STEP, 0, 3, false), U(STOP_GRAD, 0.1, 3, false), U(ERF, 0.001, 4, false),
    P(0, 0.1, false), P(1, 0.1, false), P(2, 0.1, false), P(3, 0.1, false), P(7, 0.1, false),
    P(-1, 0.1, false), P(-2, 0.1, false), P(0.5, 0.1, true), P(-0.5, 0.1, true), P(1.5, 0.1, true),
    P(-1.5, 0.1, true), P(2.25, 0.1, true), P(17, 0.5, false),
    B(ADD, 0.1, 3), B(SUB, 0.1, 3), B(MUL, 0.1, 3), B(DIV, 0.3, 3),
    {"eq", b_eq, OP_EQ, 0, 0.1, 3, false, 0},
    {"reduce_sum", b_reduce, OP_REDUCE_SUM, 0, 0.1, 3, false, 0},
    {"reduce_max", b_reduce, OP_REDUCE_MAX, 0, 0.1, 3, false, 0},
    {"reduce_max nan", b_max_nan, OP_REDUCE_MAX, 0, 0.1, 3, false, 0},
    {"argmax", b_argmax, OP_ARGMAX, 0, 0.1, 3, false, 0},
    {"matmul", b_matmul, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"onehot", b_onehot, OP_ONEHOT, 0, 0, 1, false, 0},
    {"layout", b_layout, OP_RESHAPE, 0, 0.1, 2, false, 0},
    {"outputs", b_outputs, OP_CONST, 0, 0.1, 2, false, 0},
    {"chain", b_chain, OP_ADD, 0, 0.1, 1, false, 0},
    {"mlp loss", b_mlp_loss, OP_MATMUL, 0, 0.1, 1, false, 0},
    {"conv2d", b_conv, OP_CONV2D, 0, 0.1, 2, false, 0},
    {"conv2d_grad_x", b_conv, OP_CONV2D_GRAD_X, 0, 0.1, 2, false, 0},
    {"conv2d_grad_w", b_conv, OP_CONV2D_GRAD_W, 0, 0.1, 2, false, 0},
    {"fused", b_fused, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"transposed packs", b_transposed_packs, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"dot products", b_dot_products, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"packed rows", b_packed_rows, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"stop_grad", b_stop_grad, OP_STOP_GRAD, 0, 0.1, 2, false, 0},
    {"blocked sums", b_blocked_sum, OP_REDUCE_SUM, 0, 0.1, 3, false, 0},
    {"long sums", b_long_sum, OP_REDUCE_SUM, 0, 0.1, 3, true, 1e-6},
    {"fused sums", b_fused_sum, OP_REDUCE_SUM, 0, 0.1, 3, false, 0},
    {"summed products", b_summed_products, OP_MATMUL, 0, 0.1, 2, false, 0},
    {"in place", b_in_place, OP_ADD, 0, 0.1, 1, false, 0},
    {"slice", b_slice, OP_SLICE, 0, 0.1, 2, false, 0},
    {"concat", b_concat, OP_CONCAT, 0, 0.1, 2, false, 0},
};

/* --- running --- */

static size_t value_bytes(IrType t) { return (size_t)ir_numel(t) * ir_dtype_size(t.dtype); }

static double read_elem(const void *p, DType dt, int64_t i)
{
    return dt == DT_F32 ? ((const float *)p)[i] : dt == DT_F64 ? ((const double *)p)[i] : ((const int32_t *)p)[i];
}

static void write_elem(void *p, DType dt, int64_t i, double v)
{
    if (dt == DT_F32)
        ((float *)p)[i] = (float)v;
    else if (dt == DT_F64)
        ((double *)p)[i] = v;
    else
        ((int32_t *)p)[i] = (int32_t)v;
}

static bool close_enough(double got, double want, DType dt, double tol)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (got == want)
        return true;
    if (!tol || dt == DT_I32)
        tol = dt == DT_F32 ? 1e-5 : dt == DT_F64 ? 1e-12 : 0;
    return fabs(got - want) <= tol * fmax(1, fabs(want));
}

static bool all_bytes(const unsigned char *p, size_t n, unsigned char b)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != b)
            return false;
    return true;
}

/* Compile f's module at opt level `opt`, run f on random inputs and compare
 * every output with ir_eval. */
static void run(const Case *c, IrFunc *f, DType dt, int opt)
{
    const char *dn = ir_dtype_name(dt);
    Diag d;
    diag_init(&d, stderr);
    BeOptions o = {.target_cpu = NULL, .opt_level = opt};
    BeJit *j = be_jit_compile(f->mod, &o, &d);
    CHECK(j != NULL, "%s %s -O%d: compiles", c->name, dn, opt);
    BeFn fn = j ? be_jit_lookup(j, f->name) : NULL;
    CHECK(!j || fn, "%s %s -O%d: the function is there", c->name, dn, opt);
    CHECK(!j || !be_jit_lookup(j, "no_such_function"), "%s: lookup of a missing name", c->name);
    if (!fn) {
        be_jit_free(j);
        diag_free(&d);
        return;
    }

    int ni = f->ninput, no = f->noutput;
    void **in = calloc((size_t)ni + 1, sizeof *in), **out = calloc((size_t)no + 1, sizeof *out);
    void **out2 = calloc((size_t)no + 1, sizeof *out2);
    double **rin = calloc((size_t)ni + 1, sizeof *rin), **rout = calloc((size_t)no + 1, sizeof *rout);
    for (int i = 0; i < ni; i++) {
        IrType t = ir_value_type(f, f->input[i]);
        int64_t n = ir_numel(t);
        in[i] = malloc(value_bytes(t) + 1);
        rin[i] = malloc((size_t)n * sizeof(double) + 1);
        for (int64_t k = 0; k < n; k++) {
            double v;
            if (t.dtype == DT_I32) {
                v = floor(-1 + 12 * urand());                   /* labels in [-1, 10], some out of range */
            } else {
                v = c->lo + (c->hi - c->lo) * urand();
                if (!c->positive && urand() < 0.5)
                    v = -v;
                if (urand() < 0.05)
                    v = c->positive ? c->lo : 0;                /* exact zeros and ties */
            }
            write_elem(in[i], t.dtype, k, v);
            rin[i][k] = read_elem(in[i], t.dtype, k);           /* as the compiled code sees it */
        }
    }
    for (int k = 0; k < no; k++) {
        IrType t = ir_value_type(f, f->output[k]);
        out[k] = malloc(value_bytes(t) + GUARD);
        out2[k] = malloc(value_bytes(t) + GUARD);
        memset(out[k], 0xA5, value_bytes(t) + GUARD);
        memset(out2[k], 0x3C, value_bytes(t) + GUARD);
        rout[k] = malloc((size_t)ir_numel(t) * sizeof(double));
    }
    size_t ab = be_arena_bytes(f);
    CHECK(ab % 64 == 0, "%s: arena size %zu is a multiple of 64", c->name, ab);
    unsigned char *arena = aligned_alloc(64, ab + CANARY);
    memset(arena, 0xFF, ab);                                    /* NaNs: reads before writes show */
    memset(arena + ab, 0x5A, CANARY);

    fn((const void *const *)in, out, arena);
    CHECK(all_bytes(arena + ab, CANARY, 0x5A), "%s %s -O%d: nothing written past the %zu-byte arena",
          c->name, dn, opt, ab);
    memset(arena, 0x00, ab);
    fn((const void *const *)in, out2, arena);
    CHECK(ir_eval(f, (const double *const *)rin, rout), "%s: the reference runs", c->name);

    for (int k = 0; k < no; k++) {
        IrType t = ir_value_type(f, f->output[k]);
        size_t bytes = value_bytes(t);
        CHECK(all_bytes((unsigned char *)out[k] + bytes, GUARD, 0xA5) &&
                  all_bytes((unsigned char *)out2[k] + bytes, GUARD, 0x3C),
              "%s %s -O%d: nothing written past output %d", c->name, dn, opt, k);
        CHECK(memcmp(out[k], out2[k], bytes) == 0, "%s %s -O%d: output %d is the same on a second run",
              c->name, dn, opt, k);
        int64_t bad = -1, n = ir_numel(t);
        for (int64_t e = 0; e < n && bad < 0; e++)
            if (!close_enough(read_elem(out[k], t.dtype, e), rout[k][e], t.dtype, c->tol))
                bad = e;
        CHECK(bad < 0, "%s %s -O%d: output %d element %lld is %.17g, want %.17g", c->name, dn, opt, k,
              (long long)bad, bad < 0 ? 0 : read_elem(out[k], t.dtype, bad), bad < 0 ? 0 : rout[k][bad]);
    }

    for (int i = 0; i < ni; i++) {
        free(in[i]);
        free(rin[i]);
    }
    for (int k = 0; k < no; k++) {
        free(out[k]);
        free(out2[k]);
        free(rout[k]);
    }
    free(in);
    free(out);
    free(out2);
    free(rin);
    free(rout);
    free(arena);
    be_jit_free(j);
    diag_free(&d);
}

static void run_case(const Case *c)
{
    static const DType dts[2] = {DT_F32, DT_F64};
    for (int i = 0; i < 2; i++) {
        IrModule *m = ir_module_new(dts[i]);
        IrFunc *f = ir_func_new(m, "f");
        c->build(f, dts[i], c);
        CHECK(ir_verify_func(f, NULL), "%s %s: the IR verifies", c->name, ir_dtype_name(dts[i]));
        run(c, f, dts[i], 3);
        run(c, f, dts[i], 0);
        ir_module_free(m);
    }
}

/* --- random graphs --- */

/* Random functions of views and ops, against the evaluator: the plan's
 * views (transpose of transpose, reshape of broadcast, ...) composed in
 * ways the cases above do not list.  Values stay bounded (tanh after every
 * product) so that relative errors stay meaningful. */

static int irand(int n) { return (int)(urand() * n) % n; }

typedef struct {
    ValueId v[64];
    int n;
} Pool;

static void pool_add(Pool *p, ValueId v)
{
    if (v != IR_NONE && p->n < 64)
        p->v[p->n++] = v;
}

static ValueId pool_pick(const Pool *p) { return p->v[irand(p->n)]; }

/* A random shape of numel n: rank 1 to 3, dims dividing n. */
static IrType random_factor(DType dt, int64_t n)
{
    IrType t = {dt, 1 + irand(3), {0}};
    int64_t rest = n;
    for (int i = 0; i < t.rank - 1; i++) {
        int64_t div[64], nd = 0;
        for (int64_t d = 1; d <= rest && nd < 64; d++)
            if (rest % d == 0)
                div[nd++] = d;
        t.dim[i] = (int)div[irand((int)nd)];
        rest /= t.dim[i];
    }
    t.dim[t.rank - 1] = (int)rest;
    return t;
}

/* A value of x's shape from x: a reduction kept as extent-1 dims and
 * broadcast back, or a constant. */
static ValueId same_shape_partner(IrFunc *f, const Pool *p, ValueId x)
{
    IrType t = ir_value_type(f, x);
    ValueId same[64];
    int ns = 0;
    for (int i = 0; i < p->n; i++)
        if (ir_type_eq(ir_value_type(f, p->v[i]), t))
            same[ns++] = p->v[i];
    int how = irand(3);
    if (how == 0 && ns > 0)
        return same[irand(ns)];
    if (how == 1 || t.rank == 0)
        return cst(f, 0.25 + irand(4), t);
    int axes[IR_MAX_RANK], na = 0;
    IrType keep = t;
    for (int i = 0; i < t.rank; i++)
        if (urand() < 0.5 || (i == t.rank - 1 && na == 0)) {
            axes[na++] = i;
            keep.dim[i] = 1;
        }
    ValueId r = red(f, urand() < 0.5 ? OP_REDUCE_SUM : OP_REDUCE_MAX, x, na, axes);
    return bcast(f, reshape(f, un(f, OP_TANH, r), keep), t);
}

static void b_random(IrFunc *f, DType dt, const Case *c)
{
    static const IrOp unary_ops[] = {OP_SIN, OP_COS, OP_TANH, OP_SIGMOID, OP_NEG, OP_ABS, OP_RELU, OP_SOFTPLUS};
    static const IrOp binary_ops[] = {OP_ADD, OP_SUB, OP_MUL};
    rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(c->value * 7919);
    Pool p = {.n = 0}, inputs = {.n = 0};
    for (int i = 0; i < 3; i++) {
        IrType t = {dt, 1 + irand(3), {0}};
        for (int k = 0; k < t.rank; k++)
            t.dim[k] = 1 + irand(5);
        char name[8];
        snprintf(name, sizeof name, "x%d", i);
        ValueId v = arg(f, arena_strdup(&f->mod->arena, name), t);
        pool_add(&p, v);
        pool_add(&inputs, v);
    }
    for (int step = 0; step < 24; step++) {
        ValueId x = pool_pick(&p), y = IR_NONE;
        IrType t = ir_value_type(f, x);
        switch (irand(8)) {
        case 0:
            y = un(f, unary_ops[irand(8)], x);
            break;
        case 1:
            if (t.rank >= 2) {
                int perm[IR_MAX_RANK] = {0, 1, 2};
                for (int i = t.rank - 1; i > 0; i--) {
                    int j = irand(i + 1), s = perm[i];
                    perm[i] = perm[j];
                    perm[j] = s;
                }
                y = tr(f, x, perm);
            }
            break;
        case 2:
            y = reshape(f, x, random_factor(dt, ir_numel(t)));
            break;
        case 3: {
            IrType bt = {dt, t.rank < 3 ? t.rank + 1 : t.rank, {0}};
            int lead = bt.rank - t.rank;
            if (lead)
                bt.dim[0] = 1 + irand(3);
            for (int i = 0; i < t.rank; i++)
                bt.dim[lead + i] = t.dim[i] == 1 ? 1 + irand(4) : t.dim[i];
            y = bcast(f, x, bt);
            break;
        }
        case 4:
            y = bin(f, binary_ops[irand(3)], x, same_shape_partner(f, &p, x));
            if (urand() < 0.5)
                y = un(f, OP_TANH, y);
            break;
        case 5:
            if (t.rank >= 1) {
                int axes[IR_MAX_RANK], na = 0;
                for (int i = 0; i < t.rank; i++)
                    if (urand() < 0.5)
                        axes[na++] = i;
                if (na)
                    y = red(f, irand(2) ? OP_REDUCE_SUM : OP_REDUCE_MAX, x, na, axes);
            }
            break;
        case 6:
            if (t.rank == 2) {
                ValueId b = tr(f, x, (int[]){1, 0});
                for (int i = 0; i < p.n; i++) {
                    IrType bt = ir_value_type(f, p.v[i]);
                    if (bt.rank == 2 && bt.dim[0] == t.dim[1] && urand() < 0.5)
                        b = p.v[i];
                }
                y = un(f, OP_TANH, mm(f, x, b));
            }
            break;
        default: {
            ValueId in = pool_pick(&inputs);
            IrType it = ir_value_type(f, in);
            int axis = irand(it.rank);
            y = ir_onehot(f, ir_argmax(f, in, axis, L, NULL), it.dim[axis], L, NULL);
            break;
        }
        }
        pool_add(&p, y);
    }
    for (int k = 0; k < 3 && k < p.n; k++)
        ret(f, p.v[p.n - 1 - k]);
    ret(f, pool_pick(&p));
    ret(f, pool_pick(&p));
}

static void test_random_graphs(void)
{
    for (int seed = 0; seed < 60; seed++) {
        Case c = {"random graph", b_random, OP_ADD, seed, 0.1, 2, false, 1e-9};
        char name[32];
        snprintf(name, sizeof name, "random graph %d", seed);
        c.name = name;
        IrModule *m = ir_module_new(DT_F64);
        IrFunc *f = ir_func_new(m, "g");
        b_random(f, DT_F64, &c);
        CHECK(ir_verify_func(f, NULL), "%s: the IR verifies", name);
        run(&c, f, DT_F64, 3);
        run(&c, f, DT_F64, 0);
        ir_module_free(m);
    }
}

/* --- the plan --- */

static void test_plan(void)
{
    IrModule *m = ir_module_new(DT_F64);
    IrFunc *f = ir_func_new(m, "f");
    b_chain(f, DT_F64, NULL);
    /* Each value of the chain is 8 KiB; at most two are live at once and
     * the last goes straight to the output. */
    size_t ab = be_arena_bytes(f);
    CHECK(ab == 2 * 32 * 32 * 8, "chain: arena of two buffers, got %zu bytes", ab);
    ir_module_free(m);

    m = ir_module_new(DT_F32);
    f = ir_func_new(m, "g");
    ValueId x = arg(f, "x", TY(DT_F32, 4, 3)), w = arg(f, "w", TY(DT_F32, 3));
    ValueId y = bin(f, OP_ADD, x, bcast(f, w, TY(DT_F32, 4, 3)));
    ret(f, mm(f, tr(f, y, (int[]){1, 0}), y));
    ret(f, red(f, OP_REDUCE_SUM, y, AXES(0, 1)));
    CHECK(be_arena_bytes(f) == 64, "views need no buffer: arena %zu bytes, want 64", be_arena_bytes(f));
    ir_module_free(m);
}

/* --- errors --- */

static void test_errors(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    Diag d;
    diag_init(&d, mem);
    IrModule *m = ir_module_new(DT_F32);
    IrFunc *f = ir_func_new(m, "expf");
    ret(f, un(f, OP_EXP, arg(f, "x", TY(DT_F32, 3))));
    BeJit *j = be_jit_compile(m, NULL, &d);
    fflush(mem);
    CHECK(!j && d.nerrors == 1 && strstr(text, "clashes"), "a function named expf is refused: %s", text);
    be_jit_free(j);
    ir_module_free(m);
    diag_free(&d);
    fclose(mem);
    free(text);
}

/* --- powc at special values --- */

/* x^c against libm's pow at zeros of both signs, infinities, NaN, negative
 * numbers, subnormals and the ends of each type's range: the same zeros,
 * infinities and NaNs, and finite results within a few ulps (f32: of pow
 * in double, rounded). */
static void test_powc_specials(void)
{
    static const double xs[] = {-0.0, 0.0, -INFINITY, INFINITY, NAN, -1, -2.5, 1e-40, 1e-310, 1e-30,
                                1e30, 3.4e38, 1e300, 2, 0.3, 7, 1};
    static const double cs[] = {0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 16.5, -16.5, 3, -2, 2.25, 17.5};
    enum { N = sizeof xs / sizeof *xs };
    for (int i = 0; i < 2; i++) {
        DType dt = i ? DT_F64 : DT_F32;
        for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
            double c = cs[k];
            IrModule *m = ir_module_new(dt);
            IrFunc *f = ir_func_new(m, "f");
            ret(f, ir_powc(f, arg(f, "x", TY(dt, N)), c, L, NULL));
            Diag d;
            diag_init(&d, stderr);
            BeJit *j = be_jit_compile(m, NULL, &d);
            BeFn fn = j ? be_jit_lookup(j, "f") : NULL;
            CHECK(fn != NULL, "powc %g %s compiles", c, ir_dtype_name(dt));
            float xf[N], yf[N];
            double xd[N], yd[N];
            for (int e = 0; e < N; e++) {
                xf[e] = (float)xs[e];
                xd[e] = xs[e];
            }
            const void *in[1] = {i ? (const void *)xd : xf};
            void *out[1] = {i ? (void *)yd : yf};
            unsigned char arena[64];
            if (fn)
                fn(in, out, arena);
            int bad = -1;
            for (int e = 0; fn && e < N && bad < 0; e++) {
                double x = i ? xd[e] : xf[e], got = i ? yd[e] : yf[e];
                double want = i ? pow(x, c) : (float)pow(x, c);
                double ulp = i ? 0x1p-52 : 0x1p-23, tiny = i ? 0x1p-1074 : 0x1p-149;
                bool same = isnan(want) ? isnan(got)
                            : want == 0 || isinf(want) ? got == want && signbit(got) == signbit(want)
                            : fabs(got - want) <= 4 * ulp * fabs(want) || fabs(got - want) <= tiny;
                if (!same)
                    bad = e;
            }
            CHECK(bad < 0, "powc %g %s at %g: %.17g, pow gives %.17g", c, ir_dtype_name(dt),
                  bad < 0 ? 0 : xs[bad], bad < 0 ? 0 : (i ? yd[bad] : yf[bad]),
                  bad < 0 ? 0 : pow(i ? xd[bad] : xf[bad], c));
            be_jit_free(j);
            diag_free(&d);
            ir_module_free(m);
        }
    }
}

/* --- compile time of a MAML-sized function --- */

/* f's outputs on random inputs, compiled whole and in 2, 3 and 4 parts at
 * once: the same bits (calls between parts link). */
static void same_bits_for_any_compile_threads(IrFunc *f)
{
    int ni = f->ninput, no = f->noutput;
    void *in[16], *out[4][16];
    EXPECT(ni <= 16 && no <= 16);
    if (ni > 16 || no > 16)
        return;
    for (int i = 0; i < ni; i++) {
        IrType t = ir_value_type(f, f->input[i]);
        in[i] = malloc(value_bytes(t) + 1);
        for (int64_t k = 0; k < ir_numel(t); k++)
            write_elem(in[i], t.dtype, k, urand() - 0.5);
    }
    unsigned char *arena = aligned_alloc(64, be_arena_bytes(f) + 64);
    bool same = true, ran = true;
    for (int threads = 1; threads <= 4; threads++) {
        Diag d;
        diag_init(&d, stderr);
        BeOptions o = {.opt_level = 3, .compile_threads = threads};
        BeJit *j = be_jit_compile(f->mod, &o, &d);
        BeFn fn = j ? be_jit_lookup(j, f->name) : NULL;
        ran &= fn != NULL;
        for (int k = 0; k < no; k++)
            out[threads - 1][k] = malloc(value_bytes(ir_value_type(f, f->output[k])) + 1);
        if (fn)
            fn((const void *const *)in, out[threads - 1], arena);
        for (int k = 0; fn && threads > 1 && k < no; k++)
            same &= !memcmp(out[0][k], out[threads - 1][k], value_bytes(ir_value_type(f, f->output[k])));
        be_jit_free(j);
        diag_free(&d);
    }
    CHECK(ran && same, "%s compiled on 1-4 threads gives the same bits", f->name);
    for (int i = 0; i < ni; i++)
        free(in[i]);
    for (int t = 0; t < 4; t++)
        for (int k = 0; k < no; k++)
            free(out[t][k]);
    free(arena);
}

/* be_emit_objects writes one object file per part: 3 for 3 threads. */
static void one_object_per_part(const IrModule *m)
{
    char dir[] = "/tmp/mamlc-test-XXXXXX", base[64], path[80];
    if (!mkdtemp(dir)) {
        CHECK(false, "a temporary folder for object files");
        return;
    }
    snprintf(base, sizeof base, "%s/model", dir);
    Diag d;
    diag_init(&d, stderr);
    BeOptions o = {.opt_level = 1, .compile_threads = 3};
    int n = be_emit_objects(m, base, "p_", &o, &d);
    int found = 0;
    for (int k = 0; k < BE_MAX_PARTS; k++) {
        snprintf(path, sizeof path, "%s.%d.o", base, k);
        found += unlink(path) == 0;
    }
    rmdir(dir);
    CHECK(n == 3 && found == 3, "be_emit_objects wrote %d object files (%d found) for 3 threads", n, found);
    diag_free(&d);
}

/* The exact second-order meta-gradient of a 1-40-40-1 tanh MLP on
 * sinusoid-shaped data, one inner step: about 200-400 nodes after cleanup. */
static void test_compile_time(void)
{
    IrModule *m = ir_module_new(DT_F32);
    IrFunc *f = ir_func_new(m, "meta");
    DType dt = DT_F32;
    IrType pt[6] = {TY(dt, 1, 40), TY(dt, 40), TY(dt, 40, 40), TY(dt, 40), TY(dt, 40, 1), TY(dt, 1)};
    const char *pn[6] = {"w1", "b1", "w2", "b2", "w3", "b3"};
    ValueId p[6], g[6], q[6], mg[6];
    for (int i = 0; i < 6; i++)
        p[i] = arg(f, pn[i], pt[i]);
    ValueId sx = arg(f, "sx", TY(dt, 10, 1)), sy = arg(f, "sy", TY(dt, 10, 1));
    ValueId qx = arg(f, "qx", TY(dt, 10, 1)), qy = arg(f, "qy", TY(dt, 10, 1));
    ValueId data[2][2] = {{sx, sy}, {qx, qy}}, loss[2];
    for (int s = 0; s < 2; s++) {
        const ValueId *w = s ? q : p;
        ValueId h = data[s][0];
        for (int l = 0; l < 3; l++) {
            IrType ht = {dt, 2, {10, pt[2 * l].dim[1]}};
            h = bin(f, OP_ADD, mm(f, h, w[2 * l]), bcast(f, w[2 * l + 1], ht));
            if (l < 2)
                h = un(f, OP_TANH, h);
        }
        ValueId e = bin(f, OP_SUB, h, data[s][1]);
        loss[s] = bin(f, OP_MUL, red(f, OP_REDUCE_SUM, bin(f, OP_MUL, e, e), AXES(0, 1)), cst(f, 0.1, SCALAR(dt)));
        if (!s) {
            ad_grad(f, loss[0], 6, p, g);
            for (int i = 0; i < 6; i++)
                q[i] = bin(f, OP_SUB, p[i], bin(f, OP_MUL, g[i], cst(f, 0.01, pt[i])));
        }
    }
    ad_grad(f, loss[1], 6, p, mg);
    ret(f, loss[1]);
    for (int i = 0; i < 6; i++)
        ret(f, mg[i]);
    pass_optimize(f, NULL, NULL);
    CHECK(ir_verify_func(f, NULL), "meta-gradient IR verifies");

    Diag d;
    diag_init(&d, stderr);
    BeJit *j = be_jit_compile(m, NULL, &d);
    CHECK(j != NULL, "meta-gradient compiles");
    if (j) {
        /* Compile time is reported, not asserted: it is measured with
         * mamlc --stats and bench/, where the machine's load is known. */
        const BeTimes *t = be_jit_times(j);
        printf("meta-gradient: %d nodes, arena %zu bytes; codegen %.1f ms, optimize %.1f ms, jit %.1f ms\n",
               f->nnode, be_arena_bytes(f), 1e3 * t->codegen_s, 1e3 * t->optimize_s, 1e3 * t->jit_s);
        Case c = {"meta-gradient", NULL, OP_MATMUL, 0, 0.1, 1, false, 0};
        run(&c, f, dt, 3);
    }
    be_jit_free(j);
    diag_free(&d);
    same_bits_for_any_compile_threads(f);
    one_object_per_part(m);
    ir_module_free(m);
}

int main(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    test_random_graphs();
    test_plan();
    test_errors();
    test_powc_specials();
    test_compile_time();
    return check_summary();
}
