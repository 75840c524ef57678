/* Dead-code elimination: keep the nodes that some output needs (and every
 * input, which is part of the function's signature). */
#include "passes.h"

#include <stdlib.h>

bool pass_dce(IrFunc *f) {
    bool *live = calloc((size_t)f->nnode + 1, sizeof *live);
    for (int i = 0; i < f->noutput; i++)
        live[f->output[i]] = true;
    for (ValueId v = f->nnode - 1; v >= 0; v--) {
        const IrNode *n = &f->node[v];
        if (n->op == OP_INPUT)
            live[v] = true;
        if (live[v])
            for (int i = 0; i < ir_op_info[n->op].arity; i++)
                live[n->arg[i]] = true;
    }
    bool dead = false;
    for (ValueId v = 0; v < f->nnode; v++)
        dead |= !live[v];
    bool changed = dead && pass_rebuild(f, NULL, NULL, live, false);
    free(live);
    return changed;
}
