#include "ir.h"

#include <string.h>

const IrOpInfo ir_op_info[OP_COUNT] = {
#define OP(id, name, arity, kind) [OP_##id] = {#name, arity, kind},
#include "ops.def"
#undef OP
};

IrModule *ir_module_new(DType real) {
    Arena a = {0};
    IrModule *m = arena_alloc(&a, sizeof *m);
    m->arena = a;
    m->real = real;
    return m;
}

void ir_module_free(IrModule *m) {
    if (!m)
        return;
    for (int i = 0; i < m->nfunc; i++)
        arena_free(&m->func[i]->body);
    Arena a = m->arena;     /* m itself lives in its arena */
    arena_free(&a);
}

IrFunc *ir_func_scratch(IrModule *m, const char *name) {
    IrFunc *f = arena_alloc(&m->arena, sizeof *f);
    f->mod = m;
    f->name = arena_strdup(&m->arena, name);
    return f;
}

IrFunc *ir_func_new(IrModule *m, const char *name) {
    IrFunc *f = ir_func_scratch(m, name);
    m->func = arena_grow(&m->arena, m->func, &m->func_cap, m->nfunc + 1, sizeof *m->func);
    m->func[m->nfunc++] = f;
    return f;
}

IrFunc *ir_module_find(const IrModule *m, const char *name) {
    for (int i = 0; i < m->nfunc; i++)
        if (strcmp(m->func[i]->name, name) == 0)
            return m->func[i];
    return NULL;
}

void ir_func_take(IrFunc *dst, IrFunc *src) {
    const char *name = dst->name;
    arena_free(&dst->body);
    *dst = *src;
    dst->name = name;
    IrModule *m = src->mod;
    memset(src, 0, sizeof *src);
    src->mod = m;
}

IrFunc *ir_func_clone(IrFunc *f, const char *name) {
    IrFunc *g = ir_func_new(f->mod, name);
    Arena *a = &g->body;
    g->node = arena_grow(a, NULL, &g->node_cap, f->nnode, sizeof *g->node);
    memcpy(g->node, f->node, (size_t)f->nnode * sizeof *g->node);
    g->nnode = f->nnode;
    g->input = arena_grow(a, NULL, &g->input_cap, f->ninput, sizeof *g->input);
    memcpy(g->input, f->input, (size_t)f->ninput * sizeof *g->input);
    g->ninput = f->ninput;
    g->output = arena_grow(a, NULL, &g->output_cap, f->noutput, sizeof *g->output);
    memcpy(g->output, f->output, (size_t)f->noutput * sizeof *g->output);
    g->noutput = f->noutput;
    /* The hash table is rebuilt lazily by the builder (ir/build.c). */
    return g;
}

ValueId ir_input(IrFunc *f, const char *name, IrType t, SrcLoc loc) {
    IrNode n = {.op = OP_INPUT, .type = t, .arg = {IR_NONE, IR_NONE},
                .ival = f->ninput, .loc = loc};
    n.name = arena_strdup(&f->mod->arena, name);
    ValueId v = ir_append(f, &n, NULL);
    if (v == IR_NONE)
        return v;
    f->input = arena_grow(&f->body, f->input, &f->input_cap, f->ninput + 1, sizeof *f->input);
    f->input[f->ninput++] = v;
    return v;
}

void ir_output(IrFunc *f, ValueId v) {
    f->output = arena_grow(&f->body, f->output, &f->output_cap, f->noutput + 1, sizeof *f->output);
    f->output[f->noutput++] = v;
}

int ir_phase(IrModule *m, const char *name) {
    for (int p = 1; p < m->nphase; p++)
        if (strcmp(m->phase[p], name) == 0)
            return p;
    if (m->nphase == 0)
        m->nphase = 1;      /* phase 0 is "none" */
    int cap = m->phase_cap;
    m->phase = arena_grow(&m->arena, m->phase, &m->phase_cap, m->nphase + 1, sizeof *m->phase);
    m->adjoint = arena_grow(&m->arena, m->adjoint, &cap, m->nphase + 1, sizeof *m->adjoint);
    m->phase[m->nphase] = arena_strdup(&m->arena, name);
    return m->nphase++;
}

void ir_rename(IrFunc *f, ValueId v, const char *name) {
    if (v != IR_NONE && f->node[v].op != OP_INPUT && f->node[v].op != OP_CONST)
        f->node[v].name = NULL;
    ir_name(f, v, name);
}

void ir_name(IrFunc *f, ValueId v, const char *name) {
    if (v == IR_NONE || !name)
        return;
    IrNode *n = &f->node[v];
    if (!n->name && n->op != OP_INPUT && n->op != OP_CONST)
        n->name = arena_strdup(&f->mod->arena, name);
}
