/* The pass pipeline: which passes exist, and the order they run in. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    PassFn *fn;
} passes[] = {
    {"simplify", pass_simplify},
    {"cse", pass_cse},
    {"transpose", pass_transpose},
    {"reassociate", pass_reassociate},
    {"dce", pass_dce},
    {"remat", pass_remat},
    {"grad", pass_grad},
};

PassFn *pass_lookup(const char *name) {
    for (size_t i = 0; i < sizeof passes / sizeof *passes; i++)
        if (strcmp(passes[i].name, name) == 0)
            return passes[i].fn;
    return NULL;
}

bool pass_run(IrFunc *f, const char *name, const PassOptions *o, Diag *d, bool *changed) {
    PassFn *fn = pass_lookup(name);
    if (!fn)
        return false;
    int errors = f->mod->internal_errors, before = f->nnode;
    bool c = fn(f);
    if (f->mod->internal_errors != errors) {
        diag_error(d, (SrcLoc){0}, "internal error: pass '%s' could not build its IR on '@%s'", name, f->name);
        return false;
    }
    if (changed)
        *changed = c;
    if (c && o && (o->print_after_all || (o->print_after && strcmp(o->print_after, name) == 0))) {
        fprintf(o->out, "// after %s", name);
        if (o->round)
            fprintf(o->out, " (round %d)", o->round);
        if (f->nnode != before)
            fprintf(o->out, ": %d ops %s\n", abs(f->nnode - before), f->nnode < before ? "removed" : "added");
        else
            fputs(": ops rewritten\n", o->out);
        ir_print_func(o->out, f);
    }
    if (o && o->verify_each && !ir_verify_func(f, d)) {
        diag_error(d, (SrcLoc){0}, "IR is malformed after pass '%s' on '@%s'", name, f->name);
        return false;
    }
    return true;
}

bool pass_optimize(IrFunc *f, const PassOptions *o, Diag *d) {
    static const char *const order[] = {"simplify", "cse", "transpose", "reassociate", "dce"};
    bool changed = true;
    PassOptions ro = o ? *o : (PassOptions){0};
    for (int round = 0; changed && round < 32; round++) {
        changed = false;
        ro.round = round + 1;
        for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
            bool c;
            if (!pass_run(f, order[i], o ? &ro : NULL, d, &c))
                return false;
            changed |= c;
        }
    }
    return pass_run(f, "remat", o, d, NULL);
}
