/* The CPU code generator's shared context (internal to backend/).
 *
 * codegen.c builds the LLVM module: a public entry per IR function, its
 * chunks, and a call per computed value; cg_value_fn.c builds the value
 * functions those calls reach (one per distinct code) and dispatches each
 * node to the file of its kind of op: cg_elementwise.c (maps, fused loops,
 * copies), cg_reduce.c (sums, maxima, argmax), cg_matmul.c (register tiles,
 * dot products, matmul) and cg_conv.c (the convolutions, on matmul's
 * tiles).  cg_core.c holds what they all use: constants, intrinsic calls,
 * counted loops, iteration spaces, loads and stores through the plan's
 * accesses.  Every file reads the plan (plan.h) and emits code only; none
 * decides placement or fusion. */
#ifndef MAMLC_BACKEND_CG_H
#define MAMLC_BACKEND_CG_H

#include <llvm-c/Core.h>

#include "plan.h"

/* The most accesses of one value function: a destination and operands, two
 * products' two each and the loop's others. */
#define CG_MAX_ACC (3 + BE_FUSE_LEAVES)

typedef struct {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;           /* code of the value function being built */
    LLVMBuilderRef eb;          /* its entry block: allocas */
    LLVMBuilderRef top;         /* the public entry being built: the calls */
    LLVMValueRef fn;            /* the value function being built */
    LLVMValueRef scratch;       /* its scratch parameter (convolutions), or NULL */
    LLVMValueRef images;        /* a convolution's image count parameter (i64), or NULL */
    const IrModule *m;
    const IrFunc *f;
    const BePlan *plan;
    LLVMValueRef *in, *out;     /* in the public entry: in[i] and out[j] */
    LLVMValueRef arena;
    LLVMValueRef *reg;          /* in the chunk being built: each BE_REG value's element */
    /* Chunks (a public entry of more than BE_CHUNK_CALLS calls, codegen.c): */
    LLVMValueRef entry;         /* the public entry being built */
    LLVMValueRef *chunk_fn;     /* its chunk functions so far, or NULL: the entry is one */
    int nchunk, chunk_cap;
    int calls;                  /* calls in the chunk being built */
    LLVMValueRef regs;          /* its slots parameter */
    int *reg_chunk;             /* the chunk in which reg[v] is valid */
    LLVMValueRef *reg_call;     /* the call that returned BE_REG value v */
    int *reg_slot;              /* v's slot in regs, or -1: none yet */
    int nslot;
    LLVMBuilderRef slot_b;      /* stores into slots, behind their calls */
    ValueId root;               /* the value being built when its loop computes fused operands
                                   (BePlan's fused_into), else -1 */
    ValueId product;            /* the product fused into root's loop (be_fused_product), or -1 */
    ValueId other;              /* a second product summed in its tiles (be_product_pair), or -1 */
    LLVMTypeRef i32, i64, f32, f64, ptr, void_;
    Diag *d;
    /* Value functions built so far, by what their code depends on (an
     * open-addressing table; keys live in `mem`). */
    Arena mem;
    uint64_t *fn_hash;
    unsigned char **fn_key;
    size_t *fn_klen;
    LLVMValueRef *fn_done;
    int fn_cap, fn_count;
} Cg;

/* The result (number 0) or an operand of one value function: the plan's
 * access over the shape it is read at, and where it is in the function
 * being built. */
typedef struct {
    BeAccess a;
    IrType t;                   /* the shape a is over */
    LLVMValueRef v;             /* memory: the buffer's address; BE_REG: the element */
} Opnd;

/* An iteration space: extents and, per access, the stride of each dim. */
typedef struct {
    int rank;
    int64_t dim[IR_MAX_RANK + 1];
    int nacc;
    int64_t stride[CG_MAX_ACC][IR_MAX_RANK + 1];
} Iter;

typedef struct {
    LLVMBasicBlockRef head;
    LLVMValueRef iv;
    LLVMValueRef end;           /* i64 */
    bool scalar;                /* no use vectorising it: tell LLVM not to try */
    int unroll;                 /* > 1: ask LLVM to unroll it this many times */
} Loop;

/* An index split row-major into up to three factors, each with a stride:
 * i = (i0*dim[1] + i1)*dim[2] + i2 is at i0*stride[0] + i1*stride[1] +
 * i2*stride[2]. */
typedef struct {
    int n;
    int64_t dim[3], stride[3];
} Split;

/* A matrix view for a product: element (i, j) is element base + r(i) +
 * c(j) of o (base an i64 value: an image's offset).  The columns of a
 * result or of an operand read as row vectors have one factor. */
typedef struct {
    Opnd o;
    LLVMValueRef base;
    Split r, c;
} Mat;

static inline Split cg_split1(int64_t d0, int64_t s0) { return (Split){1, {d0, 1, 1}, {s0, 0, 0}}; }
static inline Split cg_split2(int64_t d0, int64_t s0, int64_t d1, int64_t s1)
{
    return (Split){2, {d0, d1, 1}, {s0, s1, 0}};
}
static inline Split cg_split3(int64_t d0, int64_t s0, int64_t d1, int64_t s1, int64_t d2, int64_t s2)
{
    return (Split){3, {d0, d1, d2}, {s0, s1, s2}};
}

/* What a product's tiles apply to their results before storing them (cg_matmul.c). */
typedef struct Epilogue Epilogue;

/* --- cg_core.c: types, constants and calls --- */

LLVMTypeRef cg_elem_type(const Cg *cg, DType dt);
LLVMValueRef cg_c64(const Cg *cg, int64_t v);
/* The constant v of element type dt. */
LLVMValueRef cg_imm(const Cg *cg, DType dt, double v);
/* A call of LLVM intrinsic `name` overloaded on t (llvm.exp, llvm.fmuladd, ...). */
LLVMValueRef cg_intrinsic(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n);
LLVMValueRef cg_call1(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x);
LLVMValueRef cg_call2(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef x, LLVMValueRef y);
void cg_add_attr(Cg *cg, LLVMValueRef fn, LLVMAttributeIndex at, const char *name, uint64_t val);
LLVMValueRef cg_fcmp(Cg *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b);

/* --- cg_core.c: loops and iteration spaces --- */

/* for (iv = start; iv < end; iv++) in a fresh block (start < end); close
 * with cg_loop_close, which sets Loop's hints on the back edge. */
LLVMValueRef cg_loop_open_to(Cg *cg, Loop *l, int64_t start, LLVMValueRef end);
LLVMValueRef cg_loop_open(Cg *cg, Loop *l, int64_t start, int64_t end);
void cg_loop_close(Cg *cg, Loop *l);
/* An induction variable over [start, end): a loop, or the constant start. */
LLVMValueRef cg_range_open(Cg *cg, Loop *l, int64_t start, int64_t end);
void cg_range_close(Cg *cg, Loop *l);
/* The loops of it, outermost first, their induction variables in iv. */
void cg_nest_open(Cg *cg, const Iter *it, Loop *loop, LLVMValueRef *iv);
void cg_nest_close(Cg *cg, const Iter *it, Loop *loop);
void cg_iter_add_dim(Iter *it, int64_t dim, const int64_t *stride);
/* Merge the dims of it that every access steps across evenly. */
int cg_iter_coalesce(Iter *it, bool keep_last);
LLVMValueRef cg_iter_index(Cg *cg, const Iter *it, int a, const LLVMValueRef *iv);
/* a + b for element indices; sum of iv[i] * stride[i]. */
LLVMValueRef cg_idx_add(Cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_linear(Cg *cg, int n, const LLVMValueRef *iv, const int64_t *stride);

/* --- cg_core.c: element access --- */

LLVMValueRef cg_load_mem(Cg *cg, const Opnd *o, LLVMValueRef idx, LLVMTypeRef ty);
/* The element of o at element index idx (an immediate, a register or memory). */
LLVMValueRef cg_load_at(Cg *cg, const Opnd *o, LLVMValueRef idx);
void cg_store_at(Cg *cg, Opnd *o, LLVMValueRef idx, LLVMValueRef v);
LLVMValueRef cg_splat(Cg *cg, LLVMValueRef x, int n);
LLVMValueRef cg_load_vec_at(Cg *cg, const Opnd *o, LLVMValueRef idx, int nr);
/* An alloca in the value function's entry block. */
LLVMValueRef cg_entry_alloca(Cg *cg, LLVMTypeRef t, const char *name);
/* A region of the node's scratch, as a dense value. */
Opnd cg_scratch(Cg *cg, DType dt, int64_t off, int rank, const int *dim);

/* --- cg_elementwise.c: maps, fused operands, copies --- */

/* Whether x is fused into a reader's loop (no buffer of its own). */
bool cg_fused(const Cg *cg, ValueId x);
/* The operands the loop of v reads, its fused operands' in their place,
 * each once. */
void cg_fused_operands(const Cg *cg, ValueId v, Opnd *o, int *no);
/* Where cg_fused_operands puts operand x of the loop of cg->root. */
int cg_leaf_index(const Cg *cg, ValueId x);
/* v's element from the operands the loop of cg->root reads (and a fused
 * product's sum). */
LLVMValueRef cg_fused_value(Cg *cg, ValueId v, const LLVMValueRef *x, LLVMValueRef prod, LLVMValueRef cls);
/* dst = n(src...) elementwise over (rank, dim), or a copy when n is NULL. */
bool cg_emit_map(Cg *cg, const IrNode *n, int rank, const int *dim, Opnd *dst, int nsrc, const Opnd *src);
void cg_shuffle_halves(Cg *cg, LLVMValueRef a, LLVMValueRef b, int h, int w, LLVMValueRef *lo, LLVMValueRef *hi);
/* dst = src written through `stride` (a permuting copy). */
void cg_emit_copy_to(Cg *cg, const Opnd *dst, const int64_t *stride, const Opnd *src);
void cg_emit_zero(Cg *cg, Opnd *o);

/* --- cg_reduce.c --- */

/* Reduction n into y of x, or of the value fused into the sum (x[0, nx)). */
bool cg_emit_reduce(Cg *cg, const IrNode *n, Opnd *y, const Opnd *x, int nx);

/* --- cg_matmul.c: register tiles and matrix products --- */

/* The view of o with rows r and columns c from element 0. */
Mat cg_mat(Cg *cg, const Opnd *o, Split r, Split c);
void cg_split_simplify(Split *a, Split *b);
/* C (+)= A @ B (C m x n) in register tiles; e NULL or the fused loop's. */
void cg_emit_gemm(Cg *cg, Mat *C, Mat *A, Mat *B, int64_t m, int64_t n, bool accumulate, bool padded,
                  const Epilogue *e);
/* C = A @ B as be_matmul_plan says, with a fused loop's operands z[0, nz)
 * and a second product A2 @ B2 summed in its tiles (NULL: none). */
void cg_emit_matmul(Cg *cg, Opnd *C, const Opnd *A, const Opnd *B, const Opnd *z, int nz, const Opnd *A2,
                    const Opnd *B2);

/* --- cg_conv.c --- */

/* Convolution n: o[0] its result, o[1], o[2] its operands. */
bool cg_emit_conv(Cg *cg, const IrNode *n, Opnd *o);

/* --- cg_value_fn.c and codegen.c: value functions and the entry that calls them --- */

/* Call the value function for o[0] = node(o[1..n)), building it unless an
 * equal one exists. */
LLVMValueRef cg_emit_value_fn(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, int64_t scratch,
                              int64_t scratch_off, bool *ok);
/* In the chunk being built: the argument that passes access a. */
LLVMValueRef cg_entry_arg(Cg *cg, const BeAccess *a);

#endif
