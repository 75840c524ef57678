/* FLOP counting from the IR (see ir_flops in ir.h). */
#include "ir.h"

int64_t ir_node_flops(const IrFunc *f, ValueId v) {
    const IrNode *n = &f->node[v];
    switch (ir_op_info[n->op].kind) {
    case KIND_UNARY:
        return n->op == OP_STOP_GRAD ? 0 : ir_numel(n->type);
    case KIND_BINARY:
        return ir_numel(n->type);
    case KIND_REDUCE:
        return ir_numel(f->node[n->arg[0]].type);
    case KIND_MATMUL: {
        IrType a = f->node[n->arg[0]].type, b = f->node[n->arg[1]].type;
        return 2 * (int64_t)a.dim[0] * a.dim[1] * b.dim[1];
    }
    case KIND_CONV: {
        /* x [N,C,H,W], w [O,C,KH,KW], y [N,O,Ho,Wo], whichever two are operands */
        IrType a = f->node[n->arg[0]].type, b = f->node[n->arg[1]].type;
        IrType y = n->op == OP_CONV2D ? n->type : n->op == OP_CONV2D_GRAD_X ? a : b;
        IrType w = n->op == OP_CONV2D_GRAD_W ? n->type : b;
        return 2 * ir_numel(y) * w.dim[1] * w.dim[2] * w.dim[3];
    }
    default:
        return 0;
    }
}

int64_t ir_flops(const IrFunc *f) {
    int64_t total = 0;
    for (ValueId v = 0; v < f->nnode; v++)
        total += ir_node_flops(f, v);
    return total;
}
