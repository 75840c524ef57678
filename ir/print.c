/* The canonical text of the IR (read back by ir/parse.c):
 *
 *   func @NAME(%ARG: TYPE, ...) {
 *     %N = OP %A, %B {ATTR=VALUE, ...} : TYPE
 *     return %X, ...
 *   }
 *
 * Arguments keep their names; other values are numbered in order. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>

/* The shortest decimal that reads back as exactly v in type dt (integers
 * without an exponent). */
static void print_number(FILE *out, double v, DType dt) {
    char buf[32];
    if (fabs(v) < 1e15 && v == (double)(long long)v) {
        fprintf(out, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        double r = strtod(buf, NULL);
        if (dt == DT_F32 ? (float)r == (float)v : r == v)
            break;
    }
    fputs(buf, out);
}

static void print_value(FILE *out, const IrFunc *f, const int *number, ValueId v) {
    if (f->node[v].op == OP_INPUT)
        fprintf(out, "%%%s", f->node[v].name);
    else
        fprintf(out, "%%%d", number[v]);
}

static void print_list(FILE *out, const char *key, const IrNode *n) {
    fprintf(out, " {%s=[", key);
    for (int i = 0; i < n->nlist; i++)
        fprintf(out, i ? ",%d" : "%d", n->list[i]);
    fputs("]}", out);
}

static void print_attrs(FILE *out, const IrNode *n) {
    switch (n->op) {
    case OP_CONST: fputc(' ', out); print_number(out, n->value, n->type.dtype); break;
    case OP_POWC: fputs(" {value=", out); print_number(out, n->value, DT_F64); fputc('}', out); break;
    case OP_REDUCE_SUM:
    case OP_REDUCE_MAX: print_list(out, "axes", n); break;
    case OP_ARGMAX: fprintf(out, " {axis=%d}", n->list[0]); break;
    case OP_TRANSPOSE: print_list(out, "perm", n); break;
    case OP_SLICE: print_list(out, "start", n); break;
    case OP_CONCAT: fprintf(out, " {axis=%d}", n->list[0]); break;
    case OP_ONEHOT: fprintf(out, " {classes=%d}", n->ival); break;
    case OP_CONV2D:
    case OP_CONV2D_GRAD_X:
    case OP_CONV2D_GRAD_W:
        fprintf(out, " {stride=%d, pad=%d}", n->list[IR_CONV_STRIDE], n->list[IR_CONV_PAD]);
        break;
    default: break;
    }
}

void ir_print_func(FILE *out, const IrFunc *f) {
    int *number = calloc((size_t)f->nnode + 1, sizeof *number);
    char ts[64];
    fprintf(out, "func @%s(", f->name);
    for (int i = 0; i < f->ninput; i++) {
        const IrNode *n = &f->node[f->input[i]];
        fprintf(out, "%s%%%s: %s", i ? ", " : "", n->name, ir_type_str(n->type, ts, sizeof ts));
    }
    fputs(") {\n", out);
    int next = 0;
    for (ValueId v = 0; v < f->nnode; v++) {
        const IrNode *n = &f->node[v];
        if (n->op == OP_INPUT)
            continue;
        number[v] = next++;
        fprintf(out, "  %%%d = %s", number[v], ir_op_info[n->op].name);
        for (int i = 0; i < ir_op_info[n->op].arity; i++) {
            fputs(i ? ", " : " ", out);
            print_value(out, f, number, n->arg[i]);
        }
        print_attrs(out, n);
        fprintf(out, " : %s\n", ir_type_str(n->type, ts, sizeof ts));
    }
    fputs("  return", out);
    for (int i = 0; i < f->noutput; i++) {
        fputs(i ? ", " : " ", out);
        print_value(out, f, number, f->output[i]);
    }
    fputs("\n}\n", out);
    free(number);
}

/* The meta block (ir/meta.h); adapt names the params of @loss. */
static void print_meta(FILE *out, const IrModule *m) {
    const MetaConfig *mc = m->meta;
    fputs("meta {\n  algorithm = ", out);
    if (mc->algorithm == ALGO_REPTILE) {
        fputs("reptile(epsilon = ", out);
        print_number(out, mc->epsilon, DT_F64);
        fputc(')', out);
    } else
        fputs("maml", out);
    fprintf(out, "\n  inner_steps = %d\n  inner_lr = ", mc->inner_steps);
    static const char *const lr_kind[] = {"", "learned", "learned_scalar"};
    fprintf(out, "%s%s", lr_kind[mc->inner_lr_kind], mc->inner_lr_kind == INNER_LR_FIXED ? "" : "(");
    print_number(out, mc->inner_lr, DT_F64);
    fprintf(out, "%s\n  order = %s\n", mc->inner_lr_kind == INNER_LR_FIXED ? "" : ")",
            mc->order == ORDER_FIRST ? "first" : "second");
    const IrFunc *loss = ir_module_find(m, "loss");
    bool all = true;
    for (int i = 0; i < mc->nparam; i++)
        all &= ir_meta_adapts(mc, i);
    if (!all && loss && loss->ninput >= mc->nparam) {
        fputs("  adapt = [", out);
        const char *sep = "";
        for (int i = 0; i < mc->nparam; i++)
            if (mc->adapt[i]) {
                fprintf(out, "%s%s", sep, loss->node[loss->input[i]].name);
                sep = ", ";
            }
        fputs("]\n", out);
    }
    fputs("  eval_steps = [", out);
    for (int i = 0; i < mc->neval_steps; i++)
        fprintf(out, i ? ", %d" : "%d", mc->eval_steps[i]);
    fprintf(out, "]\n  meta_batch = %d\n  optimizer = ", mc->meta_batch);
    const OptimizerConfig *o = &mc->optimizer;
    fputs(o->kind == OPT_ADAM ? "adam(lr = " : "sgd(lr = ", out);
    print_number(out, o->lr, DT_F64);
    if (o->kind == OPT_ADAM) {
        fputs(", beta1 = ", out);
        print_number(out, o->beta1, DT_F64);
        fputs(", beta2 = ", out);
        print_number(out, o->beta2, DT_F64);
        fputs(", eps = ", out);
        print_number(out, o->eps, DT_F64);
    }
    fprintf(out, ")\n  iterations = %ld\n}\n", mc->iterations);
}

void ir_print_module(FILE *out, const IrModule *m) {
    if (m->meta)
        print_meta(out, m);
    for (int i = 0; i < m->nfunc; i++) {
        if (i || m->meta)
            fputc('\n', out);
        ir_print_func(out, m->func[i]);
    }
}
