/* Buffer planning: the target-independent part of the back end (plan.c
 * places values in buffers and the arena, plan_fusion.c decides what is
 * fused into what, plan_kernels.c gives the kernels' scratch and the way
 * of each product).  Nothing here depends on LLVM: a code generator for
 * any target reads a BePlan and emits what it says.
 *
 * The plan decides, for every value of a function, where its elements are
 * read from.  That is an access: a base (an immediate, a register, an
 * input, an output or a place in the arena) plus an affine index
 *
 *     element(i_0, ..., i_{r-1}) = base[offset + sum_k i_k * stride[k]]
 *
 * over the value's own shape.  Layout ops are accesses to their operand's
 * storage and produce no code (BROADCAST: stride 0 along expanded dims;
 * TRANSPOSE: permuted strides; RESHAPE: regrouped strides where that is
 * affine; SLICE: the same strides, the offset moved to the window; STOP_GRAD:
 * the same access).  Values the code generator computes
 * get a fresh row-major buffer: in out[j] when the value is output j, else
 * in the arena at a 64-byte aligned offset, reusing the space of buffers
 * whose values are dead (plan_arena.c: greedy by size); an elementwise value
 * of at least 256 KiB may instead take over the buffer of an operand it
 * reads last, element for element (computed in place).  One-element values
 * that are not outputs live in an LLVM register instead (except the
 * results of convolutions, which are always in memory).  Convolutions and
 * matrix products also get scratch space in the arena for their packed
 * operands, live while their node runs.  Dead values get no storage and no
 * code.  An elementwise value, not an output, whose readers are all
 * elementwise values of the same shape is fused into them: each reader's
 * loop computes it from its operands, element by element, and it is never
 * stored (BE_FUSE_LEAVES bounds the operands one loop reads; a value read
 * twice must be cheap: arithmetic, no calls).  A matrix
 * product read only by such a loop of + - * and negation is fused too: its
 * register tiles compute the loop's value from each sum before storing it,
 * and its scratch moves to the loop's node; where that loop adds two
 * products, both can run in one set of tiles (be_product_pair).  A
 * blocked sum (BE_SUM_LANES) computes such values in its loop too, before
 * adding them. */
#ifndef MAMLC_BACKEND_PLAN_H
#define MAMLC_BACKEND_PLAN_H

#include "../ir/ir.h"

typedef enum {
    BE_NONE,        /* dead value: never computed, never read */
    BE_IMM,         /* every element is the constant `imm` */
    BE_REG,         /* one element, held in the register of value `index` */
    BE_INPUT,       /* in[index] */
    BE_OUTPUT,      /* out[index] */
    BE_ARENA        /* arena + `byte_off` */
} BeBase;

typedef struct {
    BeBase base;
    DType dtype;                    /* element type */
    int index;                      /* INPUT/OUTPUT: position; REG: owning value */
    int64_t byte_off;               /* ARENA: byte offset of the buffer, a multiple of 64 */
    int64_t offset;                 /* elements from the buffer start to element 0 */
    double imm;                     /* IMM: the element */
    int rank;                       /* rank of the value's type */
    int64_t stride[IR_MAX_RANK];    /* elements per step along each dim; 0 along broadcasts */
} BeAccess;

typedef struct {
    Arena arena;                    /* owns everything below */
    int nnode;
    BeAccess *acc;                  /* per value: where its elements are read */
    bool *computed;                 /* per value: code writes it into acc (a new buffer or register) */
    int *fused_into;                /* per value: the value whose loop computes it, element by element,
                                       with no buffer of its own (BE_NONE); -1: none */
    int noutput;
    bool *out_copy;                 /* per output: copied from acc[output[j]] into out[j] at the end */
    int64_t *scratch_off;           /* per value: byte offset of its scratch in the arena */
    int64_t *scratch_bytes;         /* per value: bytes of scratch (0: none) */
    size_t arena_bytes;             /* bytes of arena the function needs (a multiple of 64) */
    size_t live_peak_bytes;         /* the most bytes of buffers and scratch live at one node */
} BePlan;

/* The scratch of a convolution value function, at byte offsets that are
 * multiples of 64 (a region the op does not use may still be there):
 *   w     O*C*KH*KW elements: w packed, or conv2d_grad_w's sums
 *   x     C*KH*KW * Ho*Wo elements: one image's im2col matrix, or
 *         conv2d_grad_x's window sums
 *   g     O * Ho*Wo elements: one image of g packed
 *   pad   C * (H+2*pad) * (W+2*pad) elements: one image of x (or dx)
 *         zero-padded, when `direct` and pad > 0
 *   gpad  O * gpad_h * gpad_w elements, when `phased`: one image of
 *         conv2d_grad_x's g with gpad_top rows and gpad_left columns of
 *         zeros before it and enough after
 * `direct`: x's windows may be read in place or from the padded image (its
 * size within IR_MAX_DIM and IR_MAX_NUMEL); else the code packs them.
 * `phased`: conv2d_grad_x may run as stride^2 products, one per phase of
 * dx's positions (stride^2 <= BE_CONV_MAX_PHASES, sizes within limits). */
#define BE_CONV_MAX_PHASES 16
typedef struct {
    int64_t w, x, g, pad, gpad;     /* byte offsets in the scratch */
    int64_t bytes;                  /* all of it, a multiple of 64 */
    bool direct, phased;
    int64_t gpad_h, gpad_w, gpad_top, gpad_left;
} BeConvScratch;

/* The scratch layout of convolution node n of f. */
BeConvScratch be_conv_scratch(const IrFunc *f, const IrNode *n);

/* Register tiles of matrix products (backend/cg_matmul.c): BE_TILE_ROWS rows
 * of scalars by a vector of be_tile_cols(dt) columns, 64 bytes (one
 * AVX-512 register, two AVX2 registers). */
#define BE_TILE_ROWS 6
int be_tile_cols(DType dt);
/* The elements of one AVX2 register (32 bytes): the cost model's vectors,
 * and the blocks of transposing copies and dot products. */
int be_vector_lanes(DType dt);

/* The columns a packed operand of an n-column product has room for: n
 * rounded up to whole tiles, the last one a power of two wide. */
int64_t be_tile_pad(int64_t n, DType dt);

/* A rough cost, in cycles of a core with two FMA pipes of latency 4 and
 * 32-byte vectors, of an m x n product of kd terms in those tiles, n being
 * the vector columns (the last ones in tiles of halving widths, or with
 * `padded` in one tile as wide as be_tile_pad allows): a tile of h rows and
 * v vectors takes max(h*v/2, 4) cycles a term (fewer than 8 independent
 * accumulators wait on the latency); then the stores of the result (one
 * per element where its columns are `scattered`, else one per vector; with
 * `accumulate`, loads as well).  It decides which side of a product is the
 * vector columns. */
double be_gemm_cost(int64_t m, int64_t n, int64_t kd, bool scattered, bool accumulate, bool padded, DType dt);

/* How matmul c = a @ b runs: as c = a @ b with b's rows read as vectors,
 * or (`swap`) as c^T = b^T @ a^T with a's columns read as vectors,
 * whichever costs less (be_gemm_cost).  The operand read as vectors is
 * first packed dense into the scratch (`pack`), its rows padded with
 * zeros to be_tile_pad columns, when its vectors are not contiguous or
 * when whole tiles at the edge save more than the copy costs.  The
 * operand read as scalars is copied into rows dense along k, after it in
 * the scratch at `rows_at` (`pack_rows`), when its k are apart in memory
 * and at least BE_PACK_ROWS_TILES columns of tiles read each of its rows
 * again: a tile then reads BE_TILE_ROWS streams of adjacent elements
 * instead of a cache line per term, which a stride of a power of two maps
 * to a few sets of the cache.  Where both operands are dense along k, it
 * runs instead as dot products along k (`dot`; emit_dot), with no scratch,
 * when their estimate is at most 0.8 of the tiles': few rows or columns,
 * which leave a tile's rows or lanes idle. */
typedef struct {
    bool swap, pack, pack_rows, dot;
    int64_t rows_at, bytes;
} BeMatmulPlan;

#define BE_PACK_ROWS_TILES 8

BeMatmulPlan be_matmul_plan(IrType c, const BeAccess *a, IrType at, const BeAccess *b, IrType bt);

/* The most distinct operands (leaves) the loop of a value with fused
 * operands reads, and the most fused values it computes. */
#define BE_FUSE_LEAVES 10
#define BE_FUSE_NODES 16

/* The distinct operands the loop of v reads, its fused operands' in their
 * place, depth first: leaf[0, min(count, max)), each once (a fused product
 * is one); returns their count and, in *nodes, the fused values the loop
 * computes. */
int be_loop_leaves(const IrFunc *f, const BePlan *p, ValueId v, ValueId *leaf, int max, int *nodes);

/* Whether the fused add v sums two products in one set of tiles (plan.c
 * says when), and if so which drives them: *main, the one with more terms
 * (the first operand on a tie), as be_matmul_plan says; its scratch is
 * v's loop's.  *other's terms run into the same accumulators, its operands
 * read in place. */
bool be_product_pair(const IrFunc *f, const BePlan *p, ValueId v, ValueId *main, ValueId *other);
/* The product fused into the loop of v (directly or through its fused
 * operands), or -1; *other: a second one summed in its tiles, or -1. */
ValueId be_fused_product(const IrFunc *f, const BePlan *p, ValueId v, ValueId *other);

/* A sum whose operand ends in a dense run of at least BE_SUM_LANES reduced
 * elements is blocked (backend/cg_reduce.c: emit_reduce_blocked), and can
 * compute in its loop an operand made of + - *, negation, relu and step
 * (be_sum_op), vector by vector, from leaves each dense along that run or
 * the same all along it. */
#define BE_SUM_LANES 32
bool be_sum_op(IrOp op);

/* Plan f into p.  Never fails; release p with be_plan_free. */
void be_plan(const IrFunc *f, BePlan *p);
void be_plan_free(BePlan *p);

/* The row-major access to a fresh buffer of type t at `base`/`index`/`byte_off`. */
BeAccess be_access_dense(IrType t, BeBase base, int index, int64_t byte_off);
/* Whether a's elements are in memory (an input, an output or the arena). */
bool be_in_memory(const BeAccess *a);

#endif
