/* The canonical text of the IR (read back by ir/parse.c):
 *
 *   func @NAME(%ARG: TYPE, ...) {
 *     %N = OP %A, %B {ATTR=VALUE, ...} : TYPE
 *     return %X, ...
 *   }
 *
 * Arguments keep their names, named values print as theirs (made unique
 * with a suffix .1, .2, ...), other values are numbered in order.  A marker
 * line `// --- PHASE ---` starts each phase; with `locations`, each op ends
 * with loc("FILE":LINE:COL). */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* --- value names ---
 * Each value is printed as %NAME: an argument by its name, a named value by
 * its name (NAME.1, NAME.2, ... after the first that bears it), any other
 * by a number, counting the unnamed values in order. */

typedef struct {
    const char *key;
    int next;                   /* the next suffix to try after key */
} NameSlot;

typedef struct {
    NameSlot *slot;
    size_t cap;                 /* a power of two */
    char **owned;               /* the names made here, freed at the end */
    int nowned;
} NameSet;

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

/* The slot of key: where it is, or the empty one where it would go. */
static NameSlot *name_slot(NameSet *ns, const char *key) {
    for (size_t i = name_hash(key) & (ns->cap - 1);; i = (i + 1) & (ns->cap - 1))
        if (!ns->slot[i].key || strcmp(ns->slot[i].key, key) == 0)
            return &ns->slot[i];
}

/* The printed name for `name`, unique in ns from now on. */
static const char *name_take(NameSet *ns, const char *name) {
    NameSlot *s = name_slot(ns, name);
    if (!s->key) {
        *s = (NameSlot){name, 1};
        return name;
    }
    size_t len = strlen(name) + 16;
    char *buf = malloc(len);
    do
        snprintf(buf, len, "%s.%d", name, s->next++);
    while (name_slot(ns, buf)->key);
    *name_slot(ns, buf) = (NameSlot){buf, 1};
    ns->owned[ns->nowned++] = buf;
    return buf;
}

/* --- phases ---
 * A node prints in its own phase, or where it has none (a pass made it) in
 * that of its first use; the printer writes a marker at each change, and
 * the summary adds up each phase's share. */
void ir_print_phases(const IrFunc *f, int *phase) {
    for (ValueId v = 0; v < f->nnode; v++)
        phase[v] = -1;
    for (ValueId v = f->nnode - 1; v >= 0; v--) {
        const IrNode *n = &f->node[v];
        if (n->phase)
            phase[v] = n->phase;
        else if (phase[v] < 0)
            phase[v] = 0;
        for (int i = 0; i < ir_op_info[n->op].arity; i++)
            phase[n->arg[i]] = phase[v];      /* the earliest user writes last */
    }
    for (ValueId v = 0; v < f->nnode; v++)
        if (f->node[v].phase)
            phase[v] = f->node[v].phase;
}

void ir_print_summary(FILE *out, const IrFunc *f) {
    int np = f->mod->nphase ? f->mod->nphase : 1;
    int *phase = malloc(((size_t)f->nnode + 1) * sizeof *phase), *order = calloc((size_t)np + 1, sizeof *order);
    int64_t *ops = calloc((size_t)np, sizeof *ops), *flops = calloc((size_t)np, sizeof *flops);
    int64_t *bytes = calloc((size_t)np, sizeof *bytes), total[3] = {0};
    int norder = 0;
    ir_print_phases(f, phase);
    for (ValueId v = 0; v < f->nnode; v++) {
        const IrNode *n = &f->node[v];
        int p = phase[v];
        if (n->op == OP_INPUT || n->op == OP_CONST)
            continue;
        if (!ops[p] && !flops[p] && !bytes[p])
            order[norder++] = p;
        ops[p]++;
        flops[p] += ir_node_flops(f, v);
        if (ir_op_info[n->op].kind != KIND_LAYOUT)
            bytes[p] += ir_numel(n->type) * (int64_t)ir_dtype_size(n->type.dtype);
    }
    for (int k = 0; k < norder; k++) {
        int p = order[k];
        fprintf(out, "  %-40s %7lld ops %12.6g MFLOP %12lld bytes\n", p ? f->mod->phase[p] : "(no phase)",
                (long long)ops[p], flops[p] / 1e6, (long long)bytes[p]);
        total[0] += ops[p];
        total[1] += flops[p];
        total[2] += bytes[p];
    }
    fprintf(out, "  %-40s %7lld ops %12.6g MFLOP %12lld bytes\n", "total", (long long)total[0], total[1] / 1e6,
            (long long)total[2]);
    free(phase);
    free(order);
    free(ops);
    free(flops);
    free(bytes);
}

static void print_loc(FILE *out, SrcLoc loc) {
    if (loc.file)
        fprintf(out, " loc(\"%s\":%d:%d)", loc.file, loc.line, loc.col);
}

static void print_func(FILE *out, const IrFunc *f, const IrPrintOptions *o) {
    const char **name = calloc((size_t)f->nnode + 1, sizeof *name);
    char **number = calloc((size_t)f->nnode + 1, sizeof *number);
    NameSet ns = {.cap = 16};
    while (ns.cap < 4 * (size_t)f->nnode + 16)
        ns.cap *= 2;
    ns.slot = calloc(ns.cap, sizeof *ns.slot);
    ns.owned = calloc((size_t)f->nnode + 1, sizeof *ns.owned);
    int *phase = malloc(((size_t)f->nnode + 1) * sizeof *phase);
    ir_print_phases(f, phase);
    char ts[64];
    fprintf(out, "func @%s(", f->name);
    for (int i = 0; i < f->ninput; i++) {
        const IrNode *n = &f->node[f->input[i]];
        name[f->input[i]] = name_take(&ns, n->name);
        fprintf(out, "%s%%%s: %s", i ? ", " : "", name[f->input[i]], ir_type_str(n->type, ts, sizeof ts));
    }
    fputs(") {\n", out);
    int next = 0, shown = 0;
    for (ValueId v = 0; v < f->nnode; v++) {
        const IrNode *n = &f->node[v];
        if (n->op == OP_INPUT)
            continue;
        if (phase[v] != shown && phase[v] > 0)
            fprintf(out, "  // --- %s ---\n", f->mod->phase[phase[v]]);
        shown = phase[v];
        if (n->name)
            name[v] = name_take(&ns, n->name);
        else {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", next++);
            name[v] = number[v] = strdup(buf);
        }
        fprintf(out, "  %%%s = %s", name[v], ir_op_info[n->op].name);
        for (int i = 0; i < ir_op_info[n->op].arity; i++)
            fprintf(out, "%s%%%s", i ? ", " : " ", name[n->arg[i]]);
        print_attrs(out, n);
        fprintf(out, " : %s", ir_type_str(n->type, ts, sizeof ts));
        if (o && o->locations)
            print_loc(out, n->loc);
        fputc('\n', out);
    }
    fputs("  return", out);
    for (int i = 0; i < f->noutput; i++)
        fprintf(out, "%s%%%s", i ? ", " : " ", name[f->output[i]]);
    fputs("\n}\n", out);
    for (ValueId v = 0; v < f->nnode; v++)
        free(number[v]);
    for (int i = 0; i < ns.nowned; i++)
        free(ns.owned[i]);
    free(ns.owned);
    free(ns.slot);
    free(phase);
    free(number);
    free(name);
}

void ir_print_func(FILE *out, const IrFunc *f) { print_func(out, f, NULL); }

/* "  key = [NAME, ...]" for the params of @loss flagged in flags; nothing
 * when none is. */
static void print_flagged(FILE *out, const MetaConfig *mc, const IrFunc *loss, const char *key, const bool *flags) {
    if (!flags || !loss || loss->ninput < mc->nparam)
        return;
    const char *sep = NULL;
    for (int i = 0; i < mc->nparam; i++)
        if (flags[i]) {
            if (!sep)
                fprintf(out, "  %s = [", key);
            fprintf(out, "%s%s", sep ? sep : "", loss->node[loss->input[i]].name);
            sep = ", ";
        }
    if (sep)
        fputs("]\n", out);
}

/* The meta block (ir/meta.h); adapt names the params of @loss. */
static void print_meta(FILE *out, const IrModule *m) {
    const MetaConfig *mc = m->meta;
    fputs("meta {\n  algorithm = ", out);
    if (mc->algorithm == ALGO_REPTILE) {
        fputs("reptile(epsilon = ", out);
        print_number(out, mc->epsilon, DT_F64);
        fputc(')', out);
    } else if (mc->algorithm == ALGO_IMAML) {
        fputs("imaml(lambda = ", out);
        print_number(out, mc->lambda, DT_F64);
        fprintf(out, ", cg_steps = %d)", mc->cg_steps);
    } else
        fputs("maml", out);
    fprintf(out, "\n  inner_steps = %d\n  inner_lr = ", mc->inner_steps);
    static const char *const lr_kind[] = {"", "learned", "learned_scalar", "learned_per_step"};
    fprintf(out, "%s%s", lr_kind[mc->inner_lr_kind], mc->inner_lr_kind == INNER_LR_FIXED ? "" : "(");
    print_number(out, mc->inner_lr, DT_F64);
    fprintf(out, "%s\n  order = %s", mc->inner_lr_kind == INNER_LR_FIXED ? "" : ")",
            mc->order == ORDER_FIRST ? "first" : mc->order == ORDER_ANNEAL ? "anneal(first_until = " : "second");
    if (mc->order == ORDER_ANNEAL)
        fprintf(out, "%ld)", mc->first_until);
    fputc('\n', out);
    if (mc->msl_iterations)
        fprintf(out, "  multi_step_loss = anneal(%ld)\n", mc->msl_iterations);
    const IrFunc *loss = ir_module_find(m, "loss");
    bool all = true;
    for (int i = 0; i < mc->nparam; i++)
        all &= ir_meta_adapts(mc, i);
    if (!all && loss && loss->ninput >= mc->nparam) {
        fputs("  adapt = [", out);
        const char *sep = "";
        for (int i = 0; i < mc->nparam; i++)
            if (ir_meta_adapts(mc, i)) {
                fprintf(out, "%s%s", sep, loss->node[loss->input[i]].name);
                sep = ", ";
            }
        fputs("]\n", out);
    }
    print_flagged(out, mc, loss, "per_step", mc->per_step);
    fputs("  eval_steps = [", out);
    for (int i = 0; i < mc->neval_steps; i++)
        fprintf(out, i ? ", %d" : "%d", mc->eval_steps[i]);
    fprintf(out, "]\n  meta_batch = %d\n  optimizer = ", mc->meta_batch);
    const OptimizerConfig *o = &mc->optimizer;
    fputs(o->kind == OPT_ADAM ? "adam(lr = " : o->kind == OPT_ADAMW ? "adamw(lr = " : "sgd(lr = ", out);
    print_number(out, o->lr, DT_F64);
    if (o->kind != OPT_SGD) {
        fputs(", beta1 = ", out);
        print_number(out, o->beta1, DT_F64);
        fputs(", beta2 = ", out);
        print_number(out, o->beta2, DT_F64);
        fputs(", eps = ", out);
        print_number(out, o->eps, DT_F64);
    }
    if (o->weight_decay) {
        fputs(", weight_decay = ", out);
        print_number(out, o->weight_decay, DT_F64);
    }
    if (o->cosine) {
        fputs(", schedule = cosine(min_lr = ", out);
        print_number(out, o->min_lr, DT_F64);
        fputc(')', out);
    }
    fputs(")\n", out);
    if (mc->clip_norm) {
        fputs("  clip_norm = ", out);
        print_number(out, mc->clip_norm, DT_F64);
        fputc('\n', out);
    }
    fprintf(out, "  iterations = %ld\n", mc->iterations);
    static const char *const eval_mode[] = {"", "transductive", "running_stats"};
    if (mc->eval_mode != EVAL_MODE_NONE)
        fprintf(out, "  eval_mode = %s\n", eval_mode[mc->eval_mode]);
    fputs("}\n", out);
}

void ir_print_module_with(FILE *out, const IrModule *m, const IrPrintOptions *o) {
    if (m->meta)
        print_meta(out, m);
    for (int i = 0; i < m->nfunc; i++) {
        if (i || m->meta)
            fputc('\n', out);
        print_func(out, m->func[i], o);
    }
}

void ir_print_module(FILE *out, const IrModule *m) { ir_print_module_with(out, m, NULL); }
