/* Compiling a module in parts on threads of their own (parts.h): the
 * split by size, the bitcode each thread reads back, and the threads. */
#include "codegen.h"
#include "parts.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const SrcLoc no_loc = {0};

static long instructions(LLVMValueRef fn)
{
    long n = 0;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
        for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in))
            n++;
    return n;
}

typedef struct {
    long size;
    int index;
} Sized;

static int by_size_down(const void *a, const void *b)
{
    const Sized *x = a, *y = b;
    return x->size != y->size ? (x->size < y->size) - (x->size > y->size) : x->index - y->index;
}

/* Give every function mod defines external linkage, so that other parts
 * can call it, and a part in [0, *nparts): the largest first, each to the
 * part with the fewest instructions so far.  Returns the parts of the
 * defined functions in module order (*nparts lowered to their number if
 * fewer), or NULL when memory is out. */
static int *assign_parts(LLVMModuleRef mod, int *nparts)
{
    int n = 0;
    for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn))
        n += !LLVMIsDeclaration(fn);
    int *part_of = calloc((size_t)n + 1, sizeof *part_of);
    Sized *by_size = calloc((size_t)n + 1, sizeof *by_size);
    if (!part_of || !by_size) {
        free(part_of);
        free(by_size);
        return NULL;
    }
    int i = 0;
    for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn))
        if (!LLVMIsDeclaration(fn)) {
            LLVMSetLinkage(fn, LLVMExternalLinkage);
            by_size[i] = (Sized){instructions(fn), i};
            i++;
        }
    qsort(by_size, (size_t)n, sizeof *by_size, by_size_down);
    if (*nparts > n)
        *nparts = n > 0 ? n : 1;
    long load[BE_MAX_PARTS] = {0};
    for (i = 0; i < n; i++) {
        int least = 0;
        for (int q = 1; q < *nparts; q++)
            if (load[q] < load[least])
                least = q;
        part_of[by_size[i].index] = least;
        load[least] += by_size[i].size;
    }
    free(by_size);
    return part_of;
}

/* One part: the module's functions of part `index` defined, the others
 * declared, optimised and compiled to an object file in a context of its
 * own (compile_part may run on several threads at once). */
typedef struct {
    int index;
    const int *part_of;                 /* per function the module defines, in order */
    LLVMMemoryBufferRef bitcode;        /* the whole module, shared */
    const BeOptions *o;
    LLVMTargetMachineRef tm;            /* this part's own */
    LLVMMemoryBufferRef object;         /* out: the machine code */
    double optimized;                   /* out: when the optimiser was done */
    char error[256];                    /* out: what failed, or "" */
} Part;

/* fn, which mod defines, declared instead (false when memory is out). */
static bool declare_only(LLVMModuleRef mod, LLVMValueRef fn)
{
    size_t len;
    const char *name = LLVMGetValueName2(fn, &len);
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, name, len + 1);
    LLVMValueRef decl = LLVMAddFunction(mod, "", LLVMGlobalGetValueType(fn));
    LLVMSetFunctionCallConv(decl, LLVMGetFunctionCallConv(fn));
    LLVMReplaceAllUsesWith(fn, decl);
    LLVMDeleteFunction(fn);
    LLVMSetValueName2(decl, copy, len);
    free(copy);
    return true;
}

static void *compile_part(void *arg)
{
    Part *p = arg;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMMemoryBufferRef view = LLVMCreateMemoryBufferWithMemoryRange(
        LLVMGetBufferStart(p->bitcode), LLVMGetBufferSize(p->bitcode), "module", 0);
    LLVMModuleRef mod = NULL;
    const char *error = NULL;
    if (LLVMParseBitcodeInContext2(ctx, view, &mod))
        error = "cannot read the module back";
    int i = 0;
    for (LLVMValueRef fn = mod ? LLVMGetFirstFunction(mod) : NULL, next; fn && !error; fn = next) {
        next = LLVMGetNextFunction(fn);     /* declarations go to the end: not met again */
        if (!LLVMIsDeclaration(fn) && p->part_of[i++] != p->index && !declare_only(mod, fn))
            error = "out of memory";
    }
    if (!error) {
        Diag d;
        diag_init(&d, stderr);
        if (!be_optimize(mod, p->tm, p->o, &d))
            error = "LLVM optimisation failed";
        diag_free(&d);
    }
    p->optimized = be_now();
    char *msg = NULL;
    if (!error && LLVMTargetMachineEmitToMemoryBuffer(p->tm, mod, LLVMObjectFile, &msg, &p->object))
        error = msg ? msg : "cannot generate machine code";
    if (error)
        snprintf(p->error, sizeof p->error, "%s", error);
    LLVMDisposeMessage(msg);
    if (mod)
        LLVMDisposeModule(mod);
    LLVMDisposeMemoryBuffer(view);
    LLVMContextDispose(ctx);
    return NULL;
}

/* The parts on threads of their own, part 0 on this one (and any part no
 * thread could be started for). */
static void compile_parts(Part *part, int nparts)
{
    pthread_t thread[BE_MAX_PARTS];
    int started = 1;
    while (started < nparts && pthread_create(&thread[started], NULL, compile_part, &part[started]) == 0)
        started++;
    compile_part(&part[0]);
    for (int q = started; q < nparts; q++)
        compile_part(&part[q]);
    for (int q = 1; q < started; q++)
        pthread_join(thread[q], NULL);
}

static int compile_threads(const BeOptions *o)
{
    if (o->compile_threads > 0)
        return o->compile_threads < BE_MAX_PARTS ? o->compile_threads : BE_MAX_PARTS;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > BE_MAX_PARTS ? BE_MAX_PARTS : (int)cpus;
}

/* m's functions named prefix + their IR names (a library's ABI layer
 * calls them by these). */
static bool rename_public(LLVMModuleRef mod, const IrModule *m, const char *prefix, Diag *d)
{
    for (int i = 0; i < m->nfunc; i++) {
        LLVMValueRef fn = LLVMGetNamedFunction(mod, m->func[i]->name);
        size_t n = strlen(prefix) + strlen(m->func[i]->name) + 1;
        char *name = fn ? malloc(n) : NULL;
        if (!name) {
            diag_error(d, no_loc, "object emission: cannot rename function '%s'", m->func[i]->name);
            return false;
        }
        snprintf(name, n, "%s%s", prefix, m->func[i]->name);
        LLVMSetValueName2(fn, name, strlen(name));
        free(name);
    }
    return true;
}

void be_parts_free(BeParts *p)
{
    for (int q = 0; q < p->n; q++)
        if (p->object[q])
            LLVMDisposeMemoryBuffer(p->object[q]);
    if (p->tm)
        LLVMDisposeTargetMachine(p->tm);
    *p = (BeParts){0};
}

bool be_compile_parts(const IrModule *m, const BeOptions *o, LLVMRelocMode reloc, LLVMCodeModel model,
                      const char *prefix, BeParts *out, Diag *d)
{
    o = be_options(o);
    *out = (BeParts){0};
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = be_codegen_module(m, ctx, d);
    int nparts = compile_threads(o);
    bool named = mod && (!prefix || rename_public(mod, m, prefix, d));
    int *part_of = named ? assign_parts(mod, &nparts) : NULL;
    /* a library exports only what its ABI layer chooses to */
    for (LLVMValueRef fn = part_of && prefix ? LLVMGetFirstFunction(mod) : NULL; fn; fn = LLVMGetNextFunction(fn))
        if (!LLVMIsDeclaration(fn))
            LLVMSetVisibility(fn, LLVMHiddenVisibility);
    LLVMMemoryBufferRef bitcode = part_of ? LLVMWriteBitcodeToMemoryBuffer(mod) : NULL;
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    if (named && !bitcode)
        diag_error(d, no_loc, "out of memory compiling the module");
    out->built = be_now();

    Part part[BE_MAX_PARTS] = {0};
    bool ok = bitcode != NULL;
    for (int q = 0; ok && q < nparts; q++) {
        part[q] = (Part){.index = q, .part_of = part_of, .bitcode = bitcode, .o = o};
        ok = (part[q].tm = be_target_machine(o, reloc, model, d)) != NULL;
    }
    if (ok)
        compile_parts(part, nparts);
    out->optimized = out->built;
    for (int q = 0; q < nparts; q++) {
        if (part[q].optimized > out->optimized)
            out->optimized = part[q].optimized;
        if (ok && *part[q].error) {
            diag_error(d, no_loc, "compiling part %d of %d of the module: %s", q + 1, nparts, part[q].error);
            ok = false;
        }
        if (q > 0 && part[q].tm)
            LLVMDisposeTargetMachine(part[q].tm);
        out->object[q] = part[q].object;
    }
    out->n = nparts;
    out->tm = part[0].tm;
    free(part_of);
    if (bitcode)
        LLVMDisposeMemoryBuffer(bitcode);
    if (!ok)
        be_parts_free(out);
    return ok;
}
