/* The JIT: every ORC call of the compiler is in this file.
 *
 * be_jit_compile builds the module in the LLVMContext of a fresh
 * thread-safe context, optimises it with a host target machine, hands that
 * machine's settings to an LLJIT (so the JIT generates code for the same
 * CPU and features), adds the module, and looks up every function at once,
 * so all machine code exists when it returns.  C library symbols (expf,
 * tanh, log1p, ...) resolve in the running process. */
#include "codegen.h"
#include "target.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include <stdlib.h>
#include <string.h>

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
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMModuleRef mod = be_codegen_module(m, LLVMOrcThreadSafeContextGetContext(tsc), d);
    double t1 = be_now();
    LLVMTargetMachineRef tm = mod ? be_target_machine(o, LLVMRelocDefault, LLVMCodeModelJITDefault, d) : NULL;
    bool ok = tm && be_optimize(mod, tm, o, d);
    double t2 = be_now();
    if (!ok) {
        if (tm)
            LLVMDisposeTargetMachine(tm);
        if (mod)
            LLVMDisposeModule(mod);
        LLVMOrcDisposeThreadSafeContext(tsc);
        be_jit_free(j);
        return NULL;
    }

    j->d = d;
    j->jit = create_lljit(tm, j, d);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (!j->jit) {
        LLVMOrcDisposeThreadSafeModule(tsm);
        be_jit_free(j);
        return NULL;
    }
    LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
    ok = !be_llvm_error(d, err, "cannot add the module to the JIT");
    for (int i = 0; ok && i < m->nfunc; i++) {
        const char *name = m->func[i]->name;
        LLVMOrcExecutorAddress addr = 0;
        err = LLVMOrcLLJITLookup(j->jit, &addr, name);
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
