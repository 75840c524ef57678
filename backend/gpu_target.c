/* The GPU target's compilation (gpu.h): the NVPTX target machine and the
 * PTX it prints, the LLVM IR, and the same kernels built for this machine
 * with their grid run serially (the CPU check), through ORC. */
#include "gpu_impl.h"
#include "target.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const SrcLoc no_loc = {0};
static const char *const triple = "nvptx64-nvidia-cuda";

static pthread_once_t nvptx_once = PTHREAD_ONCE_INIT;

static void init_nvptx(void)
{
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
}

bool be_gpu_arch_ok(const char *arch)
{
    return !strcmp(arch, "sm_80") || !strcmp(arch, "sm_90");
}

static const char *arch_of(const BeGpuOptions *o)
{
    return o && o->arch ? o->arch : "sm_80";
}

/* A target machine for o's architecture, with the oldest PTX ISA that
 * has it (7.0 for sm_80, 7.8 for sm_90), so that older drivers load it. */
static LLVMTargetMachineRef nvptx_machine(const BeGpuOptions *o, Diag *d)
{
    const char *arch = arch_of(o);
    if (!be_gpu_arch_ok(arch)) {
        diag_error(d, no_loc, "unknown GPU architecture '%s' (expected sm_80 or sm_90)", arch);
        return NULL;
    }
    pthread_once(&nvptx_once, init_nvptx);
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        diag_error(d, no_loc, "this LLVM has no NVPTX target: %s", msg);
        LLVMDisposeMessage(msg);
        return NULL;
    }
    int level = o ? o->opt_level : 3;
    LLVMTargetMachineRef tm =
        LLVMCreateTargetMachine(target, triple, arch, strcmp(arch, "sm_90") ? "+ptx70" : "+ptx78",
                                level <= 0 ? LLVMCodeGenLevelNone : LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                LLVMCodeModelDefault);
    if (!tm)
        diag_error(d, no_loc, "cannot create an LLVM target machine for '%s'", triple);
    return tm;
}

/* m's kernels for o, optimised, in ctx; *tm their target machine. */
static LLVMModuleRef device_module(const IrModule *m, const BeGpuOptions *o, LLVMContextRef ctx,
                                   LLVMTargetMachineRef *tm, Diag *d)
{
    *tm = nvptx_machine(o, d);
    LLVMModuleRef mod = *tm ? be_gpu_module(m, o ? o->only : NULL, ctx, true, d) : NULL;
    BeOptions bo = {.opt_level = o ? o->opt_level : 3};
    if (mod && !be_optimize(mod, *tm, &bo, d)) {
        LLVMDisposeModule(mod);
        mod = NULL;
    }
    return mod;
}

bool be_gpu_emit_llvm(FILE *out, const IrModule *m, const BeGpuOptions *o, Diag *d)
{
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm;
    LLVMModuleRef mod = device_module(m, o, ctx, &tm, d);
    bool ok = mod != NULL;
    if (ok) {
        char *text = LLVMPrintModuleToString(mod);
        ok = fputs(text, out) >= 0;
        LLVMDisposeMessage(text);
        if (!ok)
            diag_error(d, no_loc, "cannot write the LLVM IR");
        LLVMDisposeModule(mod);
    }
    if (tm)
        LLVMDisposeTargetMachine(tm);
    LLVMContextDispose(ctx);
    return ok;
}

char *be_gpu_ptx(const IrModule *m, const BeGpuOptions *o, Diag *d)
{
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm;
    LLVMModuleRef mod = device_module(m, o, ctx, &tm, d);
    char *ptx = NULL, *msg = NULL;
    LLVMMemoryBufferRef buf;
    if (mod && LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMAssemblyFile, &msg, &buf)) {
        diag_error(d, no_loc, "LLVM cannot generate PTX: %s", msg);
        LLVMDisposeMessage(msg);
    } else if (mod) {
        size_t n = LLVMGetBufferSize(buf);
        ptx = malloc(n + 1);
        if (ptx) {
            memcpy(ptx, LLVMGetBufferStart(buf), n);
            ptx[n] = 0;
        } else {
            diag_error(d, no_loc, "out of memory writing the PTX");
        }
        LLVMDisposeMemoryBuffer(buf);
    }
    if (mod)
        LLVMDisposeModule(mod);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    LLVMContextDispose(ctx);
    return ptx;
}

/* --- the host build --- */

struct BeGpuHost {
    LLVMOrcLLJITRef jit;
    Diag *d;
};

void be_gpu_host_free(BeGpuHost *h)
{
    if (!h)
        return;
    if (h->jit)
        be_llvm_error(h->d, LLVMOrcDisposeLLJIT(h->jit), "releasing the JIT");
    free(h);
}

BeGpuHost *be_gpu_host_compile(const IrModule *m, Diag *d)
{
    BeGpuHost *h = calloc(1, sizeof *h);
    if (!h) {
        diag_error(d, no_loc, "out of memory starting the JIT");
        return NULL;
    }
    h->d = d;
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMModuleRef mod = be_gpu_module(m, NULL, ctx, false, d);
    LLVMTargetMachineRef tm = mod ? be_target_machine(NULL, LLVMRelocDefault, LLVMCodeModelJITDefault, d) : NULL;
    bool ok = tm && be_optimize(mod, tm, NULL, d);
    if (ok) {
        LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
        LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
        tm = NULL;
        ok = !be_llvm_error(d, LLVMOrcCreateLLJIT(&h->jit, builder), "cannot create the JIT");
    }
    if (ok) {
        LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
        mod = NULL;
        LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(h->jit, LLVMOrcLLJITGetMainJITDylib(h->jit), tsm);
        ok = !be_llvm_error(d, err, "cannot add the GPU code to the JIT");
    }
    if (mod)
        LLVMDisposeModule(mod);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (!ok) {
        be_gpu_host_free(h);
        return NULL;
    }
    return h;
}

BeGpuHostFn be_gpu_host_lookup(BeGpuHost *h, const char *name)
{
    LLVMOrcExecutorAddress addr = 0;
    if (be_llvm_error(h->d, LLVMOrcLLJITLookup(h->jit, &addr, name), "cannot compile a GPU function"))
        return NULL;
    return (BeGpuHostFn)(uintptr_t)addr;
}
