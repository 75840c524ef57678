/* The verifier: a function is well formed when every operand is defined
 * before its use, every op has its arity and a type its shape rule agrees
 * with, inputs are numbered in order and every output names a value. */
#include "ir.h"

static bool check_node(const IrFunc *f, ValueId v, Diag *d) {
    const IrNode *n = &f->node[v];
    const char *name = (unsigned)n->op < OP_COUNT ? ir_op_info[n->op].name : "?";
    if ((unsigned)n->op >= OP_COUNT) {
        diag_error(d, n->loc, "value %d: unknown op %d", v, (int)n->op);
        return false;
    }
    for (int i = 0; i < 2; i++) {
        bool used = i < ir_op_info[n->op].arity;
        if (used && (n->arg[i] < 0 || n->arg[i] >= v)) {
            diag_error(d, n->loc, "value %d ('%s'): operand %d is not defined before its use", v, name, i);
            return false;
        }
        if (!used && n->arg[i] != IR_NONE) {
            diag_error(d, n->loc, "value %d ('%s') has an operand past its arity", v, name);
            return false;
        }
    }
    if (n->op == OP_INPUT && (n->ival < 0 || n->ival >= f->ninput || f->input[n->ival] != v)) {
        diag_error(d, n->loc, "value %d is an input that the argument list does not hold", v);
        return false;
    }
    IrNode t = *n;
    char msg[256], a[64], b[64];
    if (!ir_infer_type(f, &t, msg, sizeof msg)) {
        diag_error(d, n->loc, "value %d: %s", v, msg);
        return false;
    }
    if (!ir_type_eq(t.type, n->type)) {
        diag_error(d, n->loc, "value %d ('%s') has type %s, but its shape rule gives %s", v, name,
                   ir_type_str(n->type, a, sizeof a), ir_type_str(t.type, b, sizeof b));
        return false;
    }
    return true;
}

bool ir_verify_func(const IrFunc *f, Diag *d) {
    for (ValueId v = 0; v < f->nnode; v++)
        if (!check_node(f, v, d))
            return false;
    for (int i = 0; i < f->ninput; i++)
        if (f->input[i] < 0 || f->input[i] >= f->nnode || f->node[f->input[i]].op != OP_INPUT) {
            diag_error(d, (SrcLoc){0}, "function '@%s': argument %d is not an input value", f->name, i);
            return false;
        }
    for (int i = 0; i < f->noutput; i++)
        if (f->output[i] < 0 || f->output[i] >= f->nnode) {
            diag_error(d, (SrcLoc){0}, "function '@%s': returned value %d does not exist", f->name, i);
            return false;
        }
    return true;
}

bool ir_verify_module(const IrModule *m, Diag *d) {
    if (m->internal_errors) {
        diag_error(d, (SrcLoc){0}, "internal error: %d value(s) could not be built (see above)", m->internal_errors);
        return false;
    }
    for (int i = 0; i < m->nfunc; i++)
        if (!ir_verify_func(m->func[i], d))
            return false;
    return true;
}
