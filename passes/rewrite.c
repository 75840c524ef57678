/* pass_rebuild: the one loop that every rewriting pass shares.  A new body
 * is built in a scratch function, node by node, then moved into f.  Also
 * the small helpers that more than one rule needs. */
#include "passes.h"

#include <stdlib.h>

bool pass_rebuild(IrFunc *f, RewriteFn *rewrite, void *ctx, const bool *keep, bool dedupe) {
    IrFunc *g = ir_func_scratch(f->mod, f->name);
    ValueId *map = malloc((size_t)f->nnode * sizeof *map);
    bool changed = false;
    for (ValueId v = 0; v < f->nnode; v++) {
        IrNode n = f->node[v];
        map[v] = IR_NONE;
        if (n.op == OP_INPUT) {
            map[v] = ir_input(g, n.name, n.type, n.loc);
            continue;
        }
        if (keep && !keep[v]) {
            changed = true;
            continue;
        }
        for (int i = 0; i < ir_op_info[n.op].arity; i++)
            n.arg[i] = map[n.arg[i]];
        bool fired = false;
        RebuildAt at = {f, v, map, ctx};
        g->cur_phase = n.phase;     /* what a rule builds for v joins v's phase */
        ValueId r = rewrite ? rewrite(g, &n, &at, &fired) : IR_NONE;
        if (r == IR_NONE)
            r = dedupe ? ir_emit(g, &n, NULL) : ir_append(g, &n, NULL);
        changed |= fired || r != g->nnode - 1;
        if (n.name)
            ir_name(g, r, n.name);  /* the value lives on in r */
        map[v] = r;
    }
    for (int i = 0; i < f->noutput; i++)
        ir_output(g, map[f->output[i]]);
    free(map);
    ir_func_take(f, g);
    return changed;
}

bool pass_constant(const IrFunc *f, ValueId v, double *c) {
    if (v == IR_NONE || f->node[v].op != OP_CONST)
        return false;
    *c = f->node[v].value;
    return true;
}

ValueId pass_flip(IrFunc *g, ValueId x, SrcLoc loc) {
    static const int swap[2] = {1, 0};
    if (g->node[x].op == OP_TRANSPOSE)
        return g->node[x].arg[0];
    return ir_transpose(g, x, swap, loc, NULL);
}
