/* The JIT: every ORC call of the compiler is in this file.
 *
 * be_jit_compile builds the module, gives every function external linkage
 * and splits the functions into parts of about equal size (instructions),
 * one per compile thread.  Each thread reads the module back from bitcode
 * into an LLVMContext of its own, declares the functions of the other
 * parts, optimises it with a host target machine and compiles it to an
 * object file.  An LLJIT with the same machine's settings (so the same CPU
 * and features) links the objects, resolving calls between parts among
 * them and C library symbols (expf, tanh, log1p, ...) in the running
 * process, and every function is looked up at once, so all machine code
 * exists when it returns.  Only linkage differs from one module compiled
 * whole, so the results are the same bits for any number of threads. */
#include "codegen.h"
#include "target.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_PARTS = 4 };         /* the most compile threads */

struct BeJit {
    LLVMOrcLLJITRef jit;
    Diag *d;                    /* where the JIT's own errors go while compiling; NULL after */
    int nfn;
    char **name;                /* the functions, as named in the IR module */
    BeFn *fn;                   /* their machine code */
    BeTimes times;
};

static const SrcLoc no_loc = {0};

void be_jit_free(BeJit *j)
{
    if (!j)
        return;
    if (j->jit) {
        LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
        if (err) {
            /* No Diag here: the machine code is gone either way. */
            char *msg = LLVMGetErrorMessage(err);
            fprintf(stderr, "mamlc: error: releasing the JIT: %s\n", msg);
            LLVMDisposeErrorMessage(msg);
        }
    }
    for (int i = 0; i < j->nfn; i++)
        free(j->name[i]);
    free(j->name);
    free(j->fn);
    free(j);
}

/* Errors the JIT session reports on its own (a symbol that does not
 * resolve while materialising, say): through the Diag of the compilation
 * in progress, else to stderr. */
static void report_session_error(void *ctx, LLVMErrorRef err)
{
    BeJit *j = ctx;
    if (j->d) {
        be_llvm_error(j->d, err, "JIT session error");
        return;
    }
    char *msg = LLVMGetErrorMessage(err);
    fprintf(stderr, "mamlc: error: JIT session error: %s\n", msg);
    LLVMDisposeErrorMessage(msg);
}

/* An LLJIT generating code like tm (which it takes), resolving what the
 * module does not define in this process, reporting its errors for j. */
static LLVMOrcLLJITRef create_lljit(LLVMTargetMachineRef tm, BeJit *j, Diag *d)
{
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    LLVMOrcLLJITRef jit = NULL;
    if (be_llvm_error(d, LLVMOrcCreateLLJIT(&jit, builder), "cannot create the JIT"))
        return NULL;
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    LLVMErrorRef err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (be_llvm_error(d, err, "cannot make the process's symbols visible to the JIT")) {
        be_llvm_error(d, LLVMOrcDisposeLLJIT(jit), "releasing the JIT");
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen);
    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(jit), report_session_error, j);
    return jit;
}

/* --- the module in parts --- */

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
    long load[MAX_PARTS] = {0};
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
    pthread_t thread[MAX_PARTS];
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
        return o->compile_threads < MAX_PARTS ? o->compile_threads : MAX_PARTS;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > MAX_PARTS ? MAX_PARTS : (int)cpus;
}

/* --- compiling --- */

BeJit *be_jit_compile(const IrModule *m, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    BeJit *j = calloc(1, sizeof *j);
    if (j) {
        j->name = calloc((size_t)m->nfunc + 1, sizeof *j->name);
        j->fn = calloc((size_t)m->nfunc + 1, sizeof *j->fn);
    }
    if (!j || !j->name || !j->fn) {
        diag_error(d, no_loc, "out of memory starting the JIT");
        be_jit_free(j);
        return NULL;
    }

    double t0 = be_now();
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = be_codegen_module(m, ctx, d);
    int nparts = compile_threads(o);
    int *part_of = mod ? assign_parts(mod, &nparts) : NULL;
    LLVMMemoryBufferRef bitcode = part_of ? LLVMWriteBitcodeToMemoryBuffer(mod) : NULL;
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    if (mod && !bitcode)
        diag_error(d, no_loc, "out of memory starting the JIT");
    double t1 = be_now();

    Part part[MAX_PARTS] = {0};
    bool ok = bitcode != NULL;
    for (int q = 0; ok && q < nparts; q++) {
        part[q] = (Part){.index = q, .part_of = part_of, .bitcode = bitcode, .o = o};
        ok = (part[q].tm = be_target_machine(o, LLVMRelocDefault, LLVMCodeModelJITDefault, d)) != NULL;
    }
    if (ok)
        compile_parts(part, nparts);
    double t2 = t1;
    for (int q = 0; q < nparts; q++) {
        t2 = part[q].optimized > t2 ? part[q].optimized : t2;
        if (ok && *part[q].error) {
            diag_error(d, no_loc, "compiling part %d of %d of the module: %s", q + 1, nparts, part[q].error);
            ok = false;
        }
        if (q > 0 && part[q].tm)
            LLVMDisposeTargetMachine(part[q].tm);
    }
    free(part_of);
    if (bitcode)
        LLVMDisposeMemoryBuffer(bitcode);

    /* part 0's target machine goes on to the LLJIT, which links for the same CPU */
    LLVMTargetMachineRef tm = part[0].tm;
    if (!ok && tm) {
        LLVMDisposeTargetMachine(tm);
        tm = NULL;
    }
    j->d = d;
    j->jit = tm ? create_lljit(tm, j, d) : NULL;
    ok = j->jit != NULL;
    for (int q = 0; q < nparts; q++) {
        if (ok && part[q].object) {
            LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), part[q].object);
            ok = !be_llvm_error(d, err, "cannot add machine code to the JIT");
        } else if (part[q].object) {
            LLVMDisposeMemoryBuffer(part[q].object);
        }
    }
    for (int i = 0; ok && i < m->nfunc; i++) {
        const char *name = m->func[i]->name;
        LLVMOrcExecutorAddress addr = 0;
        LLVMErrorRef err = LLVMOrcLLJITLookup(j->jit, &addr, name);
        if (be_llvm_error(d, err, "cannot compile a function")) {
            diag_note(d, no_loc, "while compiling '@%s'", name);
            ok = false;
            break;
        }
        j->name[i] = strdup(name);
        if (!j->name[i]) {
            diag_error(d, no_loc, "out of memory starting the JIT");
            ok = false;
            break;
        }
        j->fn[i] = (BeFn)(uintptr_t)addr;
        j->nfn = i + 1;
    }
    j->d = NULL;
    if (!ok) {
        be_jit_free(j);
        return NULL;
    }
    j->times.codegen_s = t1 - t0;
    j->times.optimize_s = t2 - t1;
    j->times.jit_s = be_now() - t2;
    return j;
}

BeFn be_jit_lookup(BeJit *j, const char *name)
{
    for (int i = 0; i < j->nfn; i++)
        if (!strcmp(j->name[i], name))
            return j->fn[i];
    return NULL;
}

const BeTimes *be_jit_times(const BeJit *j)
{
    return &j->times;
}
