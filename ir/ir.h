/* The mamlc IR: typed SSA over tensors with static shapes.
 *
 * A module holds functions.  A function is a list of nodes in definition
 * order (every operand precedes its user); a node is one op producing one
 * value, and a value is named by its node's index (ValueId).  Nodes are
 * hash-consed on creation, so equal computations share one value.  All
 * memory belongs to the module's arena.
 *
 * A module that holds a model (what the frontend lowers, and what the
 * meta-step builder reads) also carries its meta configuration (ir/meta.h),
 * printed as a `meta { ... }` block before the functions.
 *
 * Textual form (ir/print.c writes it, ir/parse.c reads it back):
 *
 *   func @loss(%W: f32[40,1], %x: f32[10,1]) {
 *     %0 = transpose %W {perm=[1,0]} : f32[1,40]
 *     %1 = matmul %x, %0 : f32[10,40]
 *     %2 = reduce_sum %1 {axes=[0,1]} : f32[]
 *     return %2
 *   }
 */
#ifndef MAMLC_IR_H
#define MAMLC_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../base/arena.h"
#include "../base/diag.h"
#include "meta.h"

#define IR_MAX_RANK 6
#define IR_MAX_DIM  (1 << 24)      /* largest extent of one dimension */
#define IR_MAX_NUMEL (1LL << 31)   /* largest element count of one tensor */

typedef enum { DT_F32, DT_F64, DT_I32 } DType;

typedef struct {
    DType dtype;
    int rank;                   /* 0 for a scalar */
    int dim[IR_MAX_RANK];       /* extents, row-major; dim[i] >= 1 */
} IrType;

typedef enum {
    KIND_LEAF, KIND_UNARY, KIND_BINARY, KIND_REDUCE, KIND_LAYOUT,
    KIND_MATMUL, KIND_CONV, KIND_OTHER
} IrKind;

typedef enum {
#define OP(id, name, arity, kind) OP_##id,
#include "ops.def"
#undef OP
    OP_COUNT
} IrOp;

typedef struct {
    const char *name;           /* spelling in the textual IR */
    int arity;
    IrKind kind;
} IrOpInfo;

extern const IrOpInfo ir_op_info[OP_COUNT];

typedef int32_t ValueId;
#define IR_NONE ((ValueId)-1)

typedef struct {
    IrOp op;
    IrType type;                /* result type */
    ValueId arg[2];             /* operands; IR_NONE past the op's arity */
    double value;               /* CONST: the splat value; POWC: the exponent */
    int ival;                   /* INPUT: argument index; ONEHOT: class count */
    int nlist;                  /* REDUCE_*, ARGMAX: axes; TRANSPOSE: perm;
                                 * CONV2D*: {stride, pad} (IR_CONV_STRIDE, IR_CONV_PAD);
                                 * SLICE: offsets; CONCAT: {axis} */
    int list[IR_MAX_RANK];
    const char *name;           /* INPUT: the argument's name; else the value's
                                   name from the source, or NULL: a def's
                                   local ("h"), a def's result ("net"), a
                                   gradient ("d.W1").  Printed, never computed
                                   with: equal nodes merge whatever their names */
    int phase;                  /* the part of the function it belongs to
                                   (IrModule.phase; 0: none, printed as that of
                                   its first use) */
    SrcLoc loc;                 /* source construct this op came from (for a
                                   gradient op, the op it differentiates) */
} IrNode;

/* Positions of a convolution's attributes in IrNode.list. */
enum { IR_CONV_STRIDE, IR_CONV_PAD, IR_CONV_NATTR };

typedef struct IrModule IrModule;

typedef struct {
    IrModule *mod;
    const char *name;
    IrNode *node;               /* nodes in definition order */
    int nnode, node_cap;
    ValueId *input;             /* INPUT nodes by argument position */
    int ninput, input_cap;
    ValueId *output;            /* returned values, in order */
    int noutput, output_cap;
    int32_t *hash;              /* open-addressing table of node ids; -1 empty */
    int hash_cap;
    Arena body;                 /* node, input, output and hash: freed when a
                                   pass replaces the body (ir_func_take) */
    int cur_phase;              /* the phase ir_emit gives the nodes it appends */
} IrFunc;

struct IrModule {
    Arena arena;
    DType real;                 /* the float type: DT_F32 or DT_F64 */
    IrFunc **func;
    int nfunc, func_cap;
    int internal_errors;        /* nodes a pass failed to build (each printed
                                   as an internal error); any fails the compile */
    MetaConfig *meta;           /* a model's meta configuration; NULL if none */
    /* The phases of the module's functions ("inner step 1: forward", ...):
     * phase[1..nphase) name them, and a node's adjoints (ad_grad) go to
     * phase adjoint[p] of the node's phase p (0: the function's current). */
    const char **phase;
    int *adjoint;
    int nphase, phase_cap;
};

/* --- types (ir/type.c) --- */
IrType ir_type(DType dt, int rank, const int *dim);
IrType ir_scalar(DType dt);
int64_t ir_numel(IrType t);
bool ir_type_eq(IrType a, IrType b);
bool ir_same_shape(IrType a, IrType b);
/* Writes e.g. "f32[10,40]" into buf (always NUL-terminated); returns buf. */
char *ir_type_str(IrType t, char *buf, size_t size);
const char *ir_dtype_name(DType dt);
size_t ir_dtype_size(DType dt);

/* --- modules and functions (ir/ir.c) --- */
IrModule *ir_module_new(DType real);
void ir_module_free(IrModule *m);
IrFunc *ir_func_new(IrModule *m, const char *name);
IrFunc *ir_module_find(const IrModule *m, const char *name);
/* The index of the phase called `name` in m, added if new (never 0). */
int ir_phase(IrModule *m, const char *name);
/* Name value v of f, unless it is an input, a constant or named already
 * (the first name a value gets is the one it keeps); no-op for IR_NONE or
 * a NULL name. */
void ir_name(IrFunc *f, ValueId v, const char *name);
/* Name v of f as ir_name does, replacing any name it has. */
void ir_rename(IrFunc *f, ValueId v, const char *name);
/* Give m a copy of the meta configuration mc (its adapt list included). */
void ir_module_set_meta(IrModule *m, const MetaConfig *mc);
/* The type of the learned inner learning rate of a param of type `param`:
 * the param's type (INNER_LR_LEARNED) or a scalar of its dtype. */
IrType ir_meta_rate_type(const MetaConfig *mc, IrType param);
/* A deep copy of f under a new name in the same module. */
IrFunc *ir_func_clone(IrFunc *f, const char *name);
/* An empty function that belongs to m's arena but is not listed in it:
 * passes build a rewritten body there and move it back with ir_func_take. */
IrFunc *ir_func_scratch(IrModule *m, const char *name);
/* Replace dst's body (nodes, inputs, outputs) with src's, freeing dst's
 * old one; src is left empty. */
void ir_func_take(IrFunc *dst, IrFunc *src);

/* Append argument `name` of type t; returns its value. */
ValueId ir_input(IrFunc *f, const char *name, IrType t, SrcLoc loc);
/* Append v to the returned values. */
void ir_output(IrFunc *f, ValueId v);

static inline IrNode *ir_node(IrFunc *f, ValueId v) { return &f->node[v]; }
static inline IrType ir_value_type(const IrFunc *f, ValueId v) { return f->node[v].type; }

/* --- building (ir/build.c) ---
 * ir_emit is the one constructor: it computes the result type with the op's
 * shape rule (ir/shape.c), returns an existing equal node if there is one,
 * and else appends `n`.  The caller fills op, operands, attributes and loc;
 * for RESHAPE/BROADCAST/SLICE/CONST/CONV2D_GRAD_X/CONV2D_GRAD_W it also fills
 * n->type with the target type.
 * On a shape error it reports at n->loc through d (or, with d NULL, prints
 * an internal error) and returns IR_NONE.  An IR_NONE operand yields IR_NONE
 * without a second report, so errors propagate quietly. */
ValueId ir_emit(IrFunc *f, const IrNode *n, Diag *d);
/* ir_emit without the search for an equal node: always appends (the IR
 * parser keeps what it reads, so that CSE has something to test on). */
ValueId ir_append(IrFunc *f, const IrNode *n, Diag *d);

/* Append callee's body to f with its inputs bound to args[0..callee->ninput)
 * (values of f, of the inputs' types): each node through ir_emit, so that
 * it merges with equal nodes f has already, in f's current phase and with
 * its name (ir_name).  Stores the values of callee's
 * outputs in out[0..callee->noutput); callee must be well formed. */
void ir_inline(IrFunc *f, const IrFunc *callee, const ValueId *args, ValueId *out);

/* Convenience wrappers over ir_emit; d may be NULL where the caller knows
 * the shapes fit (passes). */
ValueId ir_const(IrFunc *f, double value, IrType t, SrcLoc loc);
ValueId ir_unary(IrFunc *f, IrOp op, ValueId x, SrcLoc loc, Diag *d);
ValueId ir_powc(IrFunc *f, ValueId x, double exponent, SrcLoc loc, Diag *d);
/* Same-shape elementwise op. */
ValueId ir_binary(IrFunc *f, IrOp op, ValueId a, ValueId b, SrcLoc loc, Diag *d);
/* Elementwise op with NumPy broadcasting: inserts BROADCAST as needed. */
ValueId ir_binary_bcast(IrFunc *f, IrOp op, ValueId a, ValueId b, SrcLoc loc, Diag *d);
/* The scalar constant c combined with x elementwise (x op c, or c op x). */
ValueId ir_binary_scalar(IrFunc *f, IrOp op, ValueId x, double c, bool c_first, SrcLoc loc, Diag *d);
ValueId ir_reduce(IrFunc *f, IrOp op, ValueId x, int naxes, const int *axes, SrcLoc loc, Diag *d);
ValueId ir_reshape(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d);
ValueId ir_broadcast(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d);
/* Inverse of broadcast: sum x down to type t (NumPy rules). */
ValueId ir_sum_to(IrFunc *f, ValueId x, IrType t, SrcLoc loc, Diag *d);
ValueId ir_transpose(IrFunc *f, ValueId x, const int *perm, SrcLoc loc, Diag *d);
/* The window of x at offsets start[0..t.rank) with t's extents (its dtype
 * is ignored); x itself when t is x's shape. */
ValueId ir_slice(IrFunc *f, ValueId x, const int *start, IrType t, SrcLoc loc, Diag *d);
/* a then b along `axis`. */
ValueId ir_concat(IrFunc *f, ValueId a, ValueId b, int axis, SrcLoc loc, Diag *d);
ValueId ir_matmul(IrFunc *f, ValueId a, ValueId b, SrcLoc loc, Diag *d);
ValueId ir_onehot(IrFunc *f, ValueId labels, int classes, SrcLoc loc, Diag *d);
/* A convolution op (OP_CONV2D, OP_CONV2D_GRAD_X or OP_CONV2D_GRAD_W) of a
 * and b with the given stride and pad.  t is the result type for the two
 * adjoint ops (its dtype is ignored) and unused for OP_CONV2D. */
ValueId ir_conv(IrFunc *f, IrOp op, ValueId a, ValueId b, int stride, int pad, IrType t, SrcLoc loc, Diag *d);
ValueId ir_argmax(IrFunc *f, ValueId x, int axis, SrcLoc loc, Diag *d);

/* --- shape rules (ir/shape.c) ---
 * Computes n->type from its operands' types and attributes.  On failure
 * writes a message ("shape mismatch in 'add': f32[3] vs f32[4]") into msg
 * and returns false. */
bool ir_infer_type(const IrFunc *f, IrNode *n, char *msg, size_t msgsize);
/* Whether t has a valid rank, extents (1 to IR_MAX_DIM) and element count
 * (at most IR_MAX_NUMEL); else false with the reason in msg. */
bool ir_valid_type(IrType t, char *msg, size_t msgsize);

/* --- text (ir/print.c, ir/parse.c) --- */
typedef struct {
    bool locations;             /* end each op with loc("FILE":LINE:COL) */
} IrPrintOptions;
void ir_print_func(FILE *out, const IrFunc *f);
void ir_print_module(FILE *out, const IrModule *m);
void ir_print_module_with(FILE *out, const IrModule *m, const IrPrintOptions *o);
/* The phase each value of f prints in, into phase[0..f->nnode): its own,
 * or where it has none (a pass made it) that of its first use (0: none). */
void ir_print_phases(const IrFunc *f, int *phase);
/* One line per phase of f, in the order they start: its ops (inputs and
 * constants aside), its FLOPs (ir_node_flops) and the bytes of the values
 * its ops produce (layout ops, which make views, aside). */
void ir_print_summary(FILE *out, const IrFunc *f);
/* Parse a module from text; locations point into `file`.  Returns NULL after
 * reporting through d.  The module's real type is that of its first float
 * value (f32 when it has none). */
IrModule *ir_parse(const char *file, const char *text, size_t len, Diag *d);

/* --- verifier (ir/verify.c) ---
 * Checks operand order, arity, attributes and that every type is what its
 * shape rule gives.  Reports through d; returns true when f is well formed. */
bool ir_verify_func(const IrFunc *f, Diag *d);
bool ir_verify_module(const IrModule *m, Diag *d);

/* --- analysis (ir/flops.c) ---
 * Floating-point operations of one call of f, from its ops: a matrix
 * product [m,k]@[k,n] counts 2mkn (a multiply and an add each), each
 * convolution op 2 * N*O*Ho*Wo * C*KH*KW (its one trilinear form), every other
 * arithmetic op one per element it reads or writes (elementwise: per result
 * element; reductions: per operand element); layout ops, constants and
 * inputs count nothing. */
int64_t ir_flops(const IrFunc *f);
/* The share of value v in ir_flops(f). */
int64_t ir_node_flops(const IrFunc *f, ValueId v);

/* --- reference evaluator (ir/eval.c) ---
 * Runs f in double precision, for tests and as the oracle for the code
 * generator: in[i] holds input i's elements (integers as doubles), out[j]
 * receives output j.  Slow and allocating; never used inside a step. */
bool ir_eval(const IrFunc *f, const double *const *in, double *const *out);

#endif
