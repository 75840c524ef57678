/* IR functions to LLVM functions.
 *
 * Every IR function f becomes a public entry
 *
 *   void @f(ptr %in, ptr %out, ptr %arena)
 *
 * that loads in[i] and out[j] and then calls, in node order, one internal
 * noinline "value function" per computed value v, and one per output that
 * is copied in at the end:
 *
 *   internal void @f.OP.v(ptr noalias %y, ptr noalias readonly %a, ...)
 *
 * taking the address of its result's buffer and of each operand's buffer
 * (or an operand's element, for one-element values kept in registers; such
 * a result is returned instead).  A value's buffer and its operands' are
 * live at the same time, so the plan keeps them apart and `noalias` is
 * true: LLVM vectorises without runtime overlap checks.  An operand the
 * plan fuses into its elementwise reader (or into a blocked sum) has no
 * buffer: the reader's function takes that operand's operands instead and
 * computes it in its own loop, element by element, or, for a fused
 * product, runs the product's register tiles and computes the loop's
 * value from each sum before its store.  Small functions keep LLVM's loop
 * analyses cheap (compile time grows linearly with the nodes), and values
 * whose code would be the same share one function (a convolution's takes
 * its image count as a parameter, so that the support and query sets
 * share it too).  A long function's calls go into chunk functions of
 * BE_CHUNK_CALLS calls each, which the public entry calls in turn:
 *
 *   internal void @f.chunk.K(ptr %in, ptr %out, ptr %arena, ptr %regs)
 *
 * so that no value lives across more than a chunk's calls in registers
 * (a one-element value that a later chunk reads goes through a slot of
 * the entry's stack array %regs), and the time LLVM takes to allocate
 * registers grows linearly with the calls.  Chunks are `optnone`: they
 * only make the calls, so optimising them gains no run time, and costs
 * a third of a long function's compile time (sharing each arena address
 * across a chunk's calls, then spilling it around them).
 *
 * The plan (plan.h) says where each value's elements are and what is
 * fused into what; the code generator only walks it.  Loops are plain
 * counted loops with i64 induction variables and static trip counts (but
 * a convolution's images), dims merged where every access steps evenly
 * across them, so that elementwise code over dense data is one flat loop.
 * Reductions sum in an order fixed by the shapes: index order, or, over
 * long dense runs, in blocks (cg_reduce.c); matmul and the convolutions
 * work on register tiles of their result (cg_matmul.c).  No fast-math
 * flags are set: results must match the reference evaluator and be
 * reproducible; only the products use llvm.fmuladd (contraction).
 *
 * This file builds the module, each function's public entry and its
 * chunks; cg.h lists the files that emit the value functions. */
#include "codegen.h"
#include "cg.h"

#include <llvm-c/Analysis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BE_CHUNK_CALLS = 256 };          /* calls of value functions per chunk of a public entry */

static const SrcLoc no_loc = {0};

/* --- the arguments of value functions --- */

/* In the chunk being built: the element of BE_REG value v.  From an
 * earlier chunk it comes through a slot of regs, which the call that
 * returned it is made to fill. */
static LLVMValueRef reg_arg(Cg *cg, ValueId v)
{
    if (cg->reg_chunk[v] == cg->nchunk)
        return cg->reg[v];
    LLVMValueRef call = cg->reg_call[v];
    LLVMTypeRef t = LLVMTypeOf(call);
    if (cg->reg_slot[v] < 0) {
        cg->reg_slot[v] = cg->nslot++;
        LLVMValueRef regs = LLVMGetParam(LLVMGetBasicBlockParent(LLVMGetInstructionParent(call)), 3);
        LLVMPositionBuilderBefore(cg->slot_b, LLVMGetNextInstruction(call));
        LLVMValueRef idx = cg_c64(cg, cg->reg_slot[v]);
        LLVMBuildStore(cg->slot_b, call, LLVMBuildInBoundsGEP2(cg->slot_b, cg->i64, regs, &idx, 1, ""));
    }
    LLVMValueRef idx = cg_c64(cg, cg->reg_slot[v]);
    cg->reg[v] = LLVMBuildLoad2(cg->top, t, LLVMBuildInBoundsGEP2(cg->top, cg->i64, cg->regs, &idx, 1, ""), "");
    cg->reg_chunk[v] = cg->nchunk;
    return cg->reg[v];
}

/* In the chunk being built: the argument that passes access a to a value
 * function (the buffer's address, or the register's element). */
LLVMValueRef cg_entry_arg(Cg *cg, const BeAccess *a)
{
    switch (a->base) {
    case BE_INPUT: return cg->in[a->index];
    case BE_OUTPUT: return cg->out[a->index];
    case BE_REG: return reg_arg(cg, a->index);
    default: break;
    }
    if (!a->byte_off)
        return cg->arena;
    LLVMValueRef off = cg_c64(cg, a->byte_off);
    return LLVMBuildInBoundsGEP2(cg->top, LLVMInt8TypeInContext(cg->ctx), cg->arena, &off, 1, "buf");
}

/* --- functions --- */

/* Names the machine code may call (or LLVM's intrinsics): a function of
 * ours with one of them would take the C library's place. */
static bool reserved_name(const char *name)
{
    static const char *const names[] = {
        "exp", "expf", "log", "logf", "sqrt", "sqrtf", "tanh", "tanhf", "sin", "sinf", "cos",
        "cosf", "fabs", "fabsf", "pow", "powf", "log1p", "log1pf", "fmax", "fmaxf", "exp2",
        "exp2f", "erf", "erff", "memset", "memcpy", "memmove", "main",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i]))
            return true;
    return !strncmp(name, "llvm.", 5);
}

/* The public entry's loads of in[i] and out[j], named after the arguments. */
static void entry_params(Cg *cg, const IrFunc *f, LLVMValueRef fn)
{
    for (int i = 0; i < f->ninput + f->noutput; i++) {
        bool is_in = i < f->ninput;
        int k = is_in ? i : i - f->ninput;
        char name[64];
        if (is_in)
            snprintf(name, sizeof name, "%s", f->node[f->input[k]].name ? f->node[f->input[k]].name : "in");
        else
            snprintf(name, sizeof name, "out%d", k);
        LLVMValueRef idx = cg_c64(cg, k);
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(cg->top, cg->ptr, LLVMGetParam(fn, is_in ? 0 : 1), &idx, 1, "");
        LLVMValueRef p = LLVMBuildLoad2(cg->top, cg->ptr, slot, name);
        LLVMSetAlignment(p, sizeof(void *));
        (is_in ? cg->in : cg->out)[k] = p;
    }
    cg->arena = LLVMGetParam(fn, 2);
}

/* The name of a value function of the function being built: NAME.WHAT.N,
 * with ".v" appended while that is the name of a function of the module
 * (whose public entry must keep it). */
static void value_fn_name(const Cg *cg, char *buf, size_t size, const char *what, int n)
{
    int len = snprintf(buf, size, "%s.%s.%d", cg->f->name, what, n);
    while (ir_module_find(cg->m, buf) && len >= 0 && (size_t)len + 2 < size)
        len += snprintf(buf + len, size - (size_t)len, ".v");
}

/* Name the first n (3 or 4) pointer parameters of an entry or chunk
 * function in, out, arena and regs: never captured, defined, in and out
 * only read, the arena aligned to 64. */
static void pointer_params(Cg *cg, LLVMValueRef fn, unsigned n)
{
    static const char *const pname[4] = {"in", "out", "arena", "regs"};
    for (unsigned i = 0; i < n; i++) {
        LLVMSetValueName2(LLVMGetParam(fn, i), pname[i], strlen(pname[i]));
        cg_add_attr(cg, fn, i + 1, "nocapture", 0);
        cg_add_attr(cg, fn, i + 1, "noundef", 0);
        if (i < 2)
            cg_add_attr(cg, fn, i + 1, "readonly", 0);
    }
    cg_add_attr(cg, fn, 3, "align", 64);
}

/* Begin chunk cg->nchunk of the public entry (its whole body when
 * cg->chunk_fn is NULL): position cg->top in it and load in[i], out[j]. */
static void chunk_begin(Cg *cg)
{
    LLVMValueRef fn = cg->entry;
    if (cg->chunk_fn) {
        char name[256];
        value_fn_name(cg, name, sizeof name, "chunk", cg->nchunk);
        LLVMTypeRef pt[4] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
        fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->void_, pt, 4, 0));
        LLVMSetLinkage(fn, LLVMInternalLinkage);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "noinline", 0);
        cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "optnone", 0);
        pointer_params(cg, fn, 4);
        cg_add_attr(cg, fn, 4, "noalias", 0);
        cg->chunk_fn = arena_grow(&cg->mem, cg->chunk_fn, &cg->chunk_cap, cg->nchunk + 1, sizeof *cg->chunk_fn);
        cg->chunk_fn[cg->nchunk] = fn;
        cg->regs = LLVMGetParam(fn, 3);
    }
    LLVMPositionBuilderAtEnd(cg->top, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    entry_params(cg, cg->f, fn);
    cg->calls = 0;
}

/* Room for one more call in the chunk being built: the next chunk when
 * this one is full. */
static void chunk_room(Cg *cg)
{
    if (cg->chunk_fn && cg->calls == BE_CHUNK_CALLS) {
        LLVMBuildRetVoid(cg->top);
        cg->nchunk++;
        chunk_begin(cg);
    }
    cg->calls++;
}

/* The public entry of a chunked function: its slots, and each chunk
 * called in turn. */
static void chunks_call(Cg *cg)
{
    LLVMBuildRetVoid(cg->top);
    LLVMPositionBuilderAtEnd(cg->top, LLVMAppendBasicBlockInContext(cg->ctx, cg->entry, "entry"));
    LLVMValueRef regs = LLVMBuildArrayAlloca(cg->top, cg->i64, cg_c64(cg, cg->nslot ? cg->nslot : 1), "regs");
    LLVMValueRef args[4] = {LLVMGetParam(cg->entry, 0), LLVMGetParam(cg->entry, 1), LLVMGetParam(cg->entry, 2), regs};
    for (int k = 0; k <= cg->nchunk; k++)
        LLVMBuildCall2(cg->top, LLVMGlobalGetValueType(cg->chunk_fn[k]), cg->chunk_fn[k], args, 4, "");
}

/* The body of the public entry of f: a value function per computed value
 * in node order, then a copy function per output not computed in place;
 * in chunks, past BE_CHUNK_CALLS calls. */
static bool emit_func(Cg *cg, const IrFunc *f, LLVMValueRef fn)
{
    BePlan plan;
    be_plan(f, &plan);
    cg->f = f;
    cg->plan = &plan;
    cg->entry = fn;
    cg->in = calloc((size_t)f->ninput + 1, sizeof *cg->in);
    cg->out = calloc((size_t)f->noutput + 1, sizeof *cg->out);
    cg->reg = calloc((size_t)f->nnode + 1, sizeof *cg->reg);
    cg->reg_chunk = calloc((size_t)f->nnode + 1, sizeof *cg->reg_chunk);
    cg->reg_call = calloc((size_t)f->nnode + 1, sizeof *cg->reg_call);
    cg->reg_slot = malloc(((size_t)f->nnode + 1) * sizeof *cg->reg_slot);
    bool ok = cg->in && cg->out && cg->reg && cg->reg_chunk && cg->reg_call && cg->reg_slot;
    if (!ok)
        diag_error(cg->d, no_loc, "out of memory compiling '@%s'", f->name);
    int calls = 0;
    for (ValueId v = 0; ok && v < f->nnode; v++) {
        calls += plan.computed[v];
        cg->reg_slot[v] = -1;
    }
    for (int j = 0; j < f->noutput; j++)
        calls += plan.out_copy[j];
    cg->chunk_fn = NULL;
    cg->nchunk = cg->chunk_cap = cg->nslot = 0;
    if (ok && calls > BE_CHUNK_CALLS)
        cg->chunk_fn = arena_grow(&cg->mem, NULL, &cg->chunk_cap, 1, sizeof *cg->chunk_fn);
    if (ok)
        chunk_begin(cg);
    char name[256];
    for (ValueId v = 0; ok && v < f->nnode; v++) {
        if (!plan.computed[v])
            continue;
        const IrNode *n = &f->node[v];
        Opnd o[CG_MAX_ACC] = {{.a = plan.acc[v], .t = n->type}};
        int no = 1;
        bool loop_fuses = false;
        for (int i = 0; i < ir_op_info[n->op].arity; i++)
            loop_fuses |= plan.fused_into[n->arg[i]] >= 0;
        cg->root = loop_fuses ? v : -1;
        cg->product = cg->other = -1;
        if (loop_fuses)
            cg->product = be_fused_product(f, &plan, v, &cg->other);
        ValueId product[2] = {cg->product, cg->other};
        for (int q = 0; q < 2 && product[q] >= 0; q++)
            for (int i = 0; i < 2; i++) {
                ValueId x = f->node[product[q]].arg[i];
                o[no++] = (Opnd){.a = plan.acc[x], .t = f->node[x].type};
            }
        cg_fused_operands(cg, v, o, &no);
        value_fn_name(cg, name, sizeof name, ir_op_info[n->op].name, v);
        chunk_room(cg);
        LLVMValueRef call = cg_emit_value_fn(cg, name, n, o, no, plan.scratch_bytes[v], plan.scratch_off[v], &ok);
        cg->root = cg->product = cg->other = -1;
        if (plan.acc[v].base == BE_REG) {
            cg->reg[v] = cg->reg_call[v] = call;
            cg->reg_chunk[v] = cg->nchunk;
        }
    }
    for (int j = 0; ok && j < f->noutput; j++) {
        if (!plan.out_copy[j])
            continue;
        IrType t = f->node[f->output[j]].type;
        Opnd o[2] = {{.a = be_access_dense(t, BE_OUTPUT, j, 0), .t = t}, {.a = plan.acc[f->output[j]], .t = t}};
        value_fn_name(cg, name, sizeof name, "out", j);
        chunk_room(cg);
        cg_emit_value_fn(cg, name, NULL, o, 2, 0, 0, &ok);
    }
    if (ok && cg->chunk_fn)
        chunks_call(cg);
    if (ok)
        LLVMBuildRetVoid(cg->top);
    free(cg->in);
    free(cg->out);
    free(cg->reg);
    free(cg->reg_chunk);
    free(cg->reg_call);
    free(cg->reg_slot);
    cg->in = cg->out = cg->reg = cg->reg_call = NULL;
    cg->reg_chunk = cg->reg_slot = NULL;
    cg->chunk_fn = NULL;
    be_plan_free(&plan);
    cg->plan = NULL;
    cg->f = NULL;
    return ok;
}

/* Declare f's public entry: void NAME(ptr in, ptr out, ptr arena). */
static LLVMValueRef declare_entry(Cg *cg, const IrFunc *f)
{
    if (reserved_name(f->name) || LLVMGetNamedFunction(cg->mod, f->name)) {
        diag_error(cg->d, no_loc, "function name '@%s' clashes with a function of the generated code", f->name);
        return NULL;
    }
    LLVMTypeRef pt[3] = {cg->ptr, cg->ptr, cg->ptr};
    LLVMValueRef fn = LLVMAddFunction(cg->mod, f->name, LLVMFunctionType(cg->void_, pt, 3, 0));
    cg_add_attr(cg, fn, LLVMAttributeFunctionIndex, "nounwind", 0);
    pointer_params(cg, fn, 3);
    return fn;
}

LLVMModuleRef be_codegen_module(const IrModule *m, LLVMContextRef ctx, Diag *d)
{
    if (!ir_verify_module(m, d))
        return NULL;
    Cg cg = {.ctx = ctx, .d = d, .root = -1, .product = -1, .other = -1};
    cg.mod = LLVMModuleCreateWithNameInContext("mamlc", ctx);
    cg.b = LLVMCreateBuilderInContext(ctx);
    cg.eb = LLVMCreateBuilderInContext(ctx);
    cg.top = LLVMCreateBuilderInContext(ctx);
    cg.slot_b = LLVMCreateBuilderInContext(ctx);
    cg.i32 = LLVMInt32TypeInContext(ctx);
    cg.i64 = LLVMInt64TypeInContext(ctx);
    cg.f32 = LLVMFloatTypeInContext(ctx);
    cg.f64 = LLVMDoubleTypeInContext(ctx);
    cg.ptr = LLVMPointerTypeInContext(ctx, 0);
    cg.void_ = LLVMVoidTypeInContext(ctx);
    cg.m = m;
    bool ok = true;
    for (int i = 0; ok && i < m->nfunc; i++) {
        LLVMValueRef entry = declare_entry(&cg, m->func[i]);
        ok = entry && emit_func(&cg, m->func[i], entry);
    }
    arena_free(&cg.mem);
    LLVMDisposeBuilder(cg.b);
    LLVMDisposeBuilder(cg.eb);
    LLVMDisposeBuilder(cg.top);
    LLVMDisposeBuilder(cg.slot_b);
    char *msg = NULL;
    if (ok && LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) {
        diag_error(d, no_loc, "internal error: the generated LLVM IR is invalid: %s", msg);
        ok = false;
    }
    LLVMDisposeMessage(msg);
    if (!ok) {
        LLVMDisposeModule(cg.mod);
        return NULL;
    }
    return cg.mod;
}
