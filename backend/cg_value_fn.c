/* Value functions (cg.h): one internal function per computed value, of
 * the signature its accesses give it, shared by every value whose code
 * would be the same (keyed by what the code depends on); each node's code
 * comes from the file of its kind of op. */
#include "cg.h"

#include <string.h>

static const SrcLoc no_loc = {0};

/* --- each node's code, by its kind of op --- */

/* The code of node n: o[0] is its result, o[1..no) its operands (with a
 * fused product, its two operands, those of a second one summed in its
 * tiles, then the other operands of the loop). */
static bool emit_node(Cg *cg, const IrNode *n, Opnd *o, int no)
{
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
    case KIND_BINARY:
        if (cg->product < 0)
            return cg_emit_map(cg, n, n->type.rank, n->type.dim, &o[0], no - 1, &o[1]);
        if (cg->other >= 0)
            cg_emit_matmul(cg, &o[0], &o[1], &o[2], &o[5], no - 5, &o[3], &o[4]);
        else
            cg_emit_matmul(cg, &o[0], &o[1], &o[2], &o[3], no - 3, NULL, NULL);
        return true;
    case KIND_REDUCE:
        return cg_emit_reduce(cg, n, &o[0], &o[1], no - 1);
    case KIND_MATMUL:
        cg_emit_matmul(cg, &o[0], &o[1], &o[2], NULL, 0, NULL, NULL);
        return true;
    case KIND_LAYOUT:
        if (n->op == OP_RESHAPE && o[0].a.base != BE_REG) {
            /* A reshape the plan could not express as a view: copy the
             * operand in its row-major order into the dense result. */
            Opnd dst = o[0];
            dst.a = be_access_dense(o[1].t, o[0].a.base, o[0].a.index, o[0].a.byte_off);
            return cg_emit_map(cg, NULL, o[1].t.rank, o[1].t.dim, &dst, 1, &o[1]);
        }
        break;
    case KIND_CONV:
        return cg_emit_conv(cg, n, o);
    case KIND_OTHER: {
        if (n->op == OP_CONCAT) {
            /* each operand copied into its window of the result */
            Opnd dst = o[0];
            cg_emit_copy_to(cg, &dst, o[0].a.stride, &o[1]);
            dst.a.offset += o[1].t.dim[n->list[0]] * o[0].a.stride[n->list[0]];
            cg_emit_copy_to(cg, &dst, o[0].a.stride, &o[2]);
            return true;
        }
        /* ONEHOT: the label, repeated along the class dim. */
        Opnd lab = o[1];
        lab.a.rank = n->type.rank;
        lab.a.stride[lab.a.rank - 1] = 0;
        return cg_emit_map(cg, n, n->type.rank, n->type.dim, &o[0], 1, &lab);
    }
    case KIND_LEAF:
        break;
    }
    diag_error(cg->d, no_loc, "internal error: no code for '%s' in '@%s'", ir_op_info[n->op].name, cg->f->name);
    return false;
}

/* --- value functions --- */

/* Bytes from the start of o's buffer to the end of the last element o reads. */
static uint64_t span_bytes(const Opnd *o)
{
    int64_t last = o->a.offset;
    for (int k = 0; k < o->t.rank; k++)
        last += (int64_t)(o->t.dim[k] - 1) * o->a.stride[k];
    return (uint64_t)(last + 1) * ir_dtype_size(o->a.dtype);
}

/* Whether o[i] of node's value function is a convolution's batch of
 * images, whose count (dim 0) the function takes as a parameter, so that
 * the support and query sets share one function. */
static bool images_dim(const IrNode *node, int i)
{
    return node && ir_op_info[node->op].kind == KIND_CONV && i != (node->op == OP_CONV2D_GRAD_W ? 0 : 2);
}

/* Whether operand i (> 0) is the result's own buffer: a value computed in
 * place of an operand it reads last (BePlan), which gets no parameter of its
 * own (two noalias pointers must not meet). */
static bool result_buffer(const Opnd *o, int i)
{
    return i > 0 && o[i].a.base == BE_ARENA && o[0].a.base == BE_ARENA && o[i].a.byte_off == o[0].a.byte_off;
}

/* Whether operand i of a value function is one of its parameters. */
static bool is_param(const Opnd *o, int i)
{
    return (be_in_memory(&o[i].a) || (i > 0 && o[i].a.base == BE_REG)) && !result_buffer(o, i);
}

/* Start the value function `name` for the result o[0] and operands o[1..n)
 * of node (NULL: a copy): one noalias pointer parameter per operand in
 * memory, the element of each operand in a register, then a noalias
 * pointer to `scratch` bytes of the arena if that is not 0, then for a
 * convolution the image count (i64); the element of a register result
 * returned.  Binds each o[i].v (and cg->scratch, cg->images) to its
 * parameter and leaves cg->b at the function's start. */
static void value_fn_begin(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, int64_t scratch)
{
    static const char *const pname[CG_MAX_ACC] = {"y", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"};
    LLVMTypeRef pt[CG_MAX_ACC + 2];
    int np = 0;
    for (int i = 0; i < n; i++)
        if (is_param(o, i))
            pt[np++] = be_in_memory(&o[i].a) ? cg->ptr : cg_elem_type(cg, o[i].a.dtype);
    if (scratch)
        pt[np++] = cg->ptr;
    bool conv = images_dim(node, 1);
    if (conv)
        pt[np++] = cg->i64;
    LLVMTypeRef rt = o[0].a.base == BE_REG ? cg_elem_type(cg, o[0].a.dtype) : cg->void_;
    cg->fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(rt, pt, (unsigned)np, 0));
    LLVMSetLinkage(cg->fn, LLVMInternalLinkage);
    cg_add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "nounwind", 0);
    cg_add_attr(cg, cg->fn, LLVMAttributeFunctionIndex, "noinline", 0);
    unsigned p = 0;
    for (int i = 0; i < n; i++) {
        if (!is_param(o, i))
            continue;
        o[i].v = LLVMGetParam(cg->fn, p);
        LLVMSetValueName2(o[i].v, pname[i], 1);
        if (be_in_memory(&o[i].a)) {
            cg_add_attr(cg, cg->fn, p + 1, "noalias", 0);
            cg_add_attr(cg, cg->fn, p + 1, "nocapture", 0);
            cg_add_attr(cg, cg->fn, p + 1, "noundef", 0);
            cg_add_attr(cg, cg->fn, p + 1, "nonnull", 0);
            if (i > 0)
                cg_add_attr(cg, cg->fn, p + 1, "readonly", 0);
            cg_add_attr(cg, cg->fn, p + 1, "align", ir_dtype_size(o[i].a.dtype));
            Opnd one = o[i];            /* of a batch of images, the first is there */
            if (images_dim(node, i))
                one.t.dim[0] = 1;
            cg_add_attr(cg, cg->fn, p + 1, "dereferenceable", span_bytes(&one));
        }
        p++;
    }
    for (int i = 1; i < n; i++)
        if (result_buffer(o, i))
            o[i].v = o[0].v;
    cg->scratch = NULL;
    if (scratch) {
        static const char *const attrs[] = {"noalias", "nocapture", "noundef", "nonnull"};
        cg->scratch = LLVMGetParam(cg->fn, p);
        LLVMSetValueName2(cg->scratch, "scratch", 7);
        for (size_t a = 0; a < sizeof attrs / sizeof *attrs; a++)
            cg_add_attr(cg, cg->fn, p + 1, attrs[a], 0);
        cg_add_attr(cg, cg->fn, p + 1, "align", 64);
        cg_add_attr(cg, cg->fn, p + 1, "dereferenceable", (uint64_t)scratch);
        p++;
    }
    cg->images = conv ? LLVMGetParam(cg->fn, p) : NULL;
    if (conv)
        LLVMSetValueName2(cg->images, "images", 6);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry");
    LLVMPositionBuilderAtEnd(cg->eb, entry);
    LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "start"));
}

/* Finish the value function: return the result's element if it is a
 * register; branch from the allocas to the code. */
static void value_fn_end(Cg *cg, const Opnd *o)
{
    if (o[0].a.base == BE_REG)
        LLVMBuildRet(cg->b, o[0].v);
    else
        LLVMBuildRetVoid(cg->b);
    LLVMBuildBr(cg->eb, LLVMGetNextBasicBlock(LLVMGetEntryBasicBlock(cg->fn)));
}

/* What the code of a value function depends on: the op and its attributes,
 * those of the operands computed in its loop, and, for the result and each
 * operand, how it is reached (memory, an immediate, a register), its
 * element type, shape (but a convolution's image count), offset and
 * strides.  Equal keys give the same function, so it is built once: a
 * meta-step repeats the same shapes many times.  (Whether a buffer is in
 * the arena, and so 64-byte aligned, is left out on purpose: it would
 * split functions for the sake of an alignment that AVX code does not
 * need.) */
typedef struct {
    /* op, scratch bytes, value, ival, nlist, list; the fused operands'
     * op, value and ival, and each operand's place (fused_key: 3
     * per fused value, 1 per operand of the root and of each fused
     * value); per access: class, dtype, rank, dims, imm or offset,
     * strides (8 bytes each) */
    unsigned char b[8 * (5 + IR_MAX_RANK + 5 * (BE_FUSE_NODES + 1) + CG_MAX_ACC * (5 + 2 * IR_MAX_RANK))];
    size_t n;
} Key;

static void key_i64(Key *k, int64_t v)
{
    memcpy(k->b + k->n, &v, sizeof v);
    k->n += sizeof v;
}

static void key_f64(Key *k, double v)
{
    memcpy(k->b + k->n, &v, sizeof v);
    k->n += sizeof v;
}

/* For each operand of v: -1 - its place among the loop's operands
 * (cg_leaf_index), or the fused op, value, ival (and its own). */
static void fused_key(const Cg *cg, Key *k, ValueId v)
{
    const IrNode *n = &cg->f->node[v];
    for (int a = 0; a < ir_op_info[n->op].arity; a++) {
        const IrNode *x = &cg->f->node[n->arg[a]];
        if (!cg_fused(cg, n->arg[a])) {
            key_i64(k, -1 - cg_leaf_index(cg, n->arg[a]));
            continue;
        }
        key_i64(k, x->op);
        key_f64(k, x->value);
        key_i64(k, x->ival);
        if (x->op != OP_MATMUL)
            fused_key(cg, k, n->arg[a]);
    }
}

static void value_key(const Cg *cg, Key *k, const IrNode *node, const Opnd *o, int n, int64_t scratch)
{
    k->n = 0;
    key_i64(k, node ? (int64_t)node->op : -1);
    key_i64(k, scratch);
    if (node) {
        key_f64(k, node->value);
        key_i64(k, node->ival);
        key_i64(k, node->nlist);
        for (int i = 0; i < node->nlist; i++)
            key_i64(k, node->list[i]);
        if (cg->root >= 0)
            fused_key(cg, k, cg->root);
    }
    for (int i = 0; i < n; i++) {
        const BeAccess *a = &o[i].a;
        int cls = a->base == BE_IMM ? 0 : a->base == BE_REG ? 1 : 2;
        key_i64(k, cls);
        key_i64(k, result_buffer(o, i));
        key_i64(k, a->dtype);
        key_i64(k, o[i].t.rank);
        for (int d = 0; d < o[i].t.rank; d++)
            key_i64(k, d == 0 && images_dim(node, i) ? 0 : o[i].t.dim[d]);
        if (a->base == BE_IMM)
            key_f64(k, a->imm);
        if (be_in_memory(a)) {
            key_i64(k, a->offset);
            for (int d = 0; d < o[i].t.rank; d++)
                key_i64(k, a->stride[d]);
        }
    }
}

static uint64_t key_hash(const Key *k)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < k->n; i++)
        h = (h ^ k->b[i]) * 0x100000001b3ULL;
    return h;
}

/* The slot of key k (hash h) in the table: its entry, or the empty slot
 * where it goes. */
static int fn_slot(const Cg *cg, const Key *k, uint64_t h)
{
    int mask = cg->fn_cap - 1;
    for (int i = (int)(h & (uint64_t)mask);; i = (i + 1) & mask)
        if (!cg->fn_done[i] || (cg->fn_hash[i] == h && cg->fn_klen[i] == k->n && !memcmp(cg->fn_key[i], k->b, k->n)))
            return i;
}

static void fn_remember(Cg *cg, const Key *k, uint64_t h, LLVMValueRef fn)
{
    if (2 * (cg->fn_count + 1) > cg->fn_cap) {
        int old_cap = cg->fn_cap;
        uint64_t *oh = cg->fn_hash;
        unsigned char **ok = cg->fn_key;
        size_t *ol = cg->fn_klen;
        LLVMValueRef *of = cg->fn_done;
        cg->fn_cap = old_cap ? 2 * old_cap : 256;
        cg->fn_hash = arena_alloc(&cg->mem, sizeof *oh * (size_t)cg->fn_cap);
        cg->fn_key = arena_alloc(&cg->mem, sizeof *ok * (size_t)cg->fn_cap);
        cg->fn_klen = arena_alloc(&cg->mem, sizeof *ol * (size_t)cg->fn_cap);
        cg->fn_done = arena_alloc(&cg->mem, sizeof *of * (size_t)cg->fn_cap);
        for (int i = 0; i < old_cap; i++) {
            if (!of[i])
                continue;
            int mask = cg->fn_cap - 1, j = (int)(oh[i] & (uint64_t)mask);
            while (cg->fn_done[j])
                j = (j + 1) & mask;
            cg->fn_hash[j] = oh[i];
            cg->fn_key[j] = ok[i];
            cg->fn_klen[j] = ol[i];
            cg->fn_done[j] = of[i];
        }
    }
    int i = fn_slot(cg, k, h);
    cg->fn_hash[i] = h;
    cg->fn_key[i] = arena_alloc(&cg->mem, k->n);
    memcpy(cg->fn_key[i], k->b, k->n);
    cg->fn_klen[i] = k->n;
    cg->fn_done[i] = fn;
    cg->fn_count++;
}

/* Call, from the public entry, the value function for o[0] = node(o[1..n))
 * (node NULL: a copy), building it as `name` unless an equal one exists;
 * with `scratch` bytes of arena at byte offset scratch_off when that is not
 * 0.  Returns the call. */
LLVMValueRef cg_emit_value_fn(Cg *cg, const char *name, const IrNode *node, Opnd *o, int n, int64_t scratch,
                              int64_t scratch_off, bool *ok)
{
    LLVMValueRef args[CG_MAX_ACC + 2];
    int na = 0;
    for (int i = 0; i < n; i++)
        if (is_param(o, i))
            args[na++] = cg_entry_arg(cg, &o[i].a);
    if (scratch)
        args[na++] = cg_entry_arg(cg, &(BeAccess){.base = BE_ARENA, .byte_off = scratch_off});
    if (images_dim(node, 1))
        args[na++] = cg_c64(cg, o[1].t.dim[0]);
    Key k;
    value_key(cg, &k, node, o, n, scratch);
    uint64_t h = key_hash(&k);
    LLVMValueRef fn = cg->fn_cap ? cg->fn_done[fn_slot(cg, &k, h)] : NULL;
    *ok = true;
    if (!fn) {
        value_fn_begin(cg, name, node, o, n, scratch);
        *ok = node ? emit_node(cg, node, o, n) : cg_emit_map(cg, NULL, o[0].t.rank, o[0].t.dim, &o[0], 1, &o[1]);
        value_fn_end(cg, o);
        fn = cg->fn;
        fn_remember(cg, &k, h, fn);
    }
    return LLVMBuildCall2(cg->top, LLVMGlobalGetValueType(fn), fn, args, (unsigned)na, "");
}
