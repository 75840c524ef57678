/* The LLVM back end: IR functions to native code through LLVM's C API.
 *
 * Every IR function becomes one LLVM function with the calling convention
 *
 *     void NAME(const void *const *in, void *const *out, void *arena);
 *
 * in[i] points at the elements of input i and out[j] at room for output j,
 * row-major, in the element type of their IR types (f32, f64 or i32).  arena
 * points at be_arena_bytes(f) bytes aligned to 64 that the function uses for
 * every intermediate value; the function allocates nothing, reads only its
 * inputs and the arena, and writes only its outputs and the arena.  Calls
 * with different arenas and outputs may run concurrently.
 *
 * The code assumes (and is compiled for) no overlap between the outputs, the
 * arena and the inputs: each out[j] and the arena must be memory that no
 * other pointer of the call reaches.  Inputs may overlap one another.  The
 * arena needs no initialisation and holds nothing useful after a call.
 *
 * Results are reproducible: no fast-math flags, every reduction and matrix
 * product sums in index order, so the same IR gives the same bits on every
 * run (matmul lets LLVM fuse multiply-adds where the CPU has them).
 *
 * Layout, and what a second target (a GPU through NVPTX, say) reuses and
 * what it provides.
 *
 * Reused as it is: plan.h, the target-independent part, with no LLVM in
 * it.  For every value of a function it says where the elements are read
 * (a view for layout ops; an immediate, a register, an input, an output,
 * or a buffer in the arena at an offset placed by liveness: plan.c), what
 * is fused into what (an elementwise value into its reader's loop, a
 * product into the loop that reads it, an operand into a blocked sum:
 * plan_fusion.c), and the scratch each node needs (plan_kernels.c: the
 * convolutions' packed operands, and which way a product runs, by a cost
 * model of the CPU's register tiles; product fusion consults it too).  So
 * be_arena_bytes and be_arena_sizes are the same for every target, and a
 * target whose kernels need other scratch changes plan_kernels.c alone.
 *
 * Provided by each target (here the CPU, through LLVM):
 *   - the code of every kind of op, from the plan's accesses: for the CPU
 *     cg_elementwise.c (maps, fused operands, copies), cg_reduce.c,
 *     cg_matmul.c (register tiles; a fused loop is their epilogue) and
 *     cg_conv.c, on cg_core.c's loops, loads and stores (cg.h: their shared
 *     context);
 *   - the entry points: a public function per IR function, of the calling
 *     convention above, that runs the values in node order (codegen.c
 *     builds the module, codegen.h; cg_value_fn.c the value functions it
 *     calls);
 *   - compiling and loading: be_jit_*, be_emit_objects and be_emit_llvm
 *     below (target.c: target machines and the O3 pipeline; parts.c: a
 *     module compiled in parts on threads; jit.c: the ORC JIT; emit.c: LLVM
 *     IR text and object files).
 * The drivers see this header, and target.h for --target-cpu's names. */
#ifndef MAMLC_BACKEND_H
#define MAMLC_BACKEND_H

#include "../ir/ir.h"

enum { BE_MAX_PARTS = 4 };      /* the most compile threads, and parts of a module */

typedef struct {
    const char *target_cpu;     /* NULL: the host CPU and its features */
    int opt_level;              /* 0..3; 3 runs LLVM's default<O3> */
    int compile_threads;        /* each compiling a part of the module (at
                                   most 4); 0: one per CPU */
} BeOptions;

typedef void (*BeFn)(const void *const *in, void *const *out, void *arena);

typedef struct {
    double codegen_s;           /* IR to LLVM IR, and its bitcode for the parts */
    double optimize_s;          /* until every part is optimised (LLVMRunPasses) */
    double jit_s;               /* the rest: machine code, and linking the parts */
} BeTimes;

typedef struct BeJit BeJit;

/* Bytes of arena that f needs (every intermediate placed at compile time,
 * buffers reused once their value is dead); a multiple of 64, possibly 0. */
size_t be_arena_bytes(const IrFunc *f);
/* be_arena_bytes(f), and the most bytes of f's intermediate buffers (and
 * scratch) live at once over its nodes: what any placement needs at least.
 * The arena exceeds the live peak only by the holes that reuse leaves. */
void be_arena_sizes(const IrFunc *f, size_t *arena_bytes, size_t *live_peak_bytes);

/* Compile every function of m with ORC LLJIT (o NULL: host CPU, -O3).  All
 * machine code exists when this returns.  A function may not be named like
 * a C math function the code calls (expf, tanh, log1p, ...) or an LLVM
 * intrinsic (llvm.*).  Returns NULL after reporting through d (LLVM errors
 * are consumed and reported, never leaked).  m is only read: compilations
 * may run on several threads at once, and each compiles its module in
 * parts on o->compile_threads threads; the results are the same bits for
 * any number. */
BeJit *be_jit_compile(const IrModule *m, const BeOptions *o, Diag *d);
/* The compiled function `name`, or NULL.  Valid until be_jit_free. */
BeFn be_jit_lookup(BeJit *j, const char *name);
const BeTimes *be_jit_times(const BeJit *j);
/* Release the machine code and everything LLVM holds for it (j may be NULL). */
void be_jit_free(BeJit *j);

/* Write m as position-independent object files, compiled in parts on
 * o->compile_threads threads as be_jit_compile compiles it (the same
 * code): part k at base.k.o, every function of m named prefix + its IR
 * name, and every function hidden.  Returns the number of files, at most
 * BE_MAX_PARTS, or 0 after reporting through d (some may have been
 * written). */
int be_emit_objects(const IrModule *m, const char *base, const char *prefix, const BeOptions *o, Diag *d);
/* The path of be_emit_objects's part k from base, base.k.o, into buf. */
void be_object_path(char *buf, size_t size, const char *base, int k);

/* Print the LLVM IR of m (optimised unless opt_level is 0; o NULL: -O3). */
bool be_emit_llvm(FILE *out, const IrModule *m, const BeOptions *o, Diag *d);

#endif
