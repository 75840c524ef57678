/* Target machines and LLVM's optimisation pipeline. */
#include "target.h"

#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <pthread.h>
#include <string.h>
#include <time.h>

static const SrcLoc no_loc = {0};
static const BeOptions default_options = {.target_cpu = NULL, .opt_level = 3};

static pthread_once_t native_once = PTHREAD_ONCE_INIT;
static bool native_ok;

/* Dead store elimination weighs each store of a block against up to this
 * many others.  LLVM's default (5000) makes it a quarter of the optimiser's
 * time on the conv net's tiles, blocks of about 100 stores none of which
 * is dead; at 50 the optimised IR is the same text. */
static const char *const llvm_flags[] = {"mamlc", "-dse-memoryssa-defs-per-block-limit=50"};

static void init_native(void)
{
    native_ok = !LLVMInitializeNativeTarget() && !LLVMInitializeNativeAsmPrinter();
    LLVMParseCommandLineOptions(sizeof llvm_flags / sizeof llvm_flags[0], llvm_flags, NULL);
}

const BeOptions *be_options(const BeOptions *o)
{
    return o ? o : &default_options;
}

double be_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool be_llvm_error(Diag *d, LLVMErrorRef err, const char *what)
{
    if (!err)
        return false;
    char *msg = LLVMGetErrorMessage(err);
    diag_error(d, no_loc, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return true;
}

static int opt_level(const BeOptions *o)
{
    return o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
}

LLVMTargetMachineRef be_target_machine(const BeOptions *o, LLVMRelocMode reloc,
                                       LLVMCodeModel model, Diag *d)
{
    o = be_options(o);
    pthread_once(&native_once, init_native);
    if (!native_ok) {
        diag_error(d, no_loc, "LLVM has no native target for this machine");
        return NULL;
    }
    static const LLVMCodeGenOptLevel levels[4] = {
        LLVMCodeGenLevelNone, LLVMCodeGenLevelLess, LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive,
    };
    char *triple = LLVMGetDefaultTargetTriple();
    char *msg = NULL;
    LLVMTargetRef target;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        diag_error(d, no_loc, "no LLVM target for '%s': %s", triple, msg);
    } else {
        char *cpu = o->target_cpu ? NULL : LLVMGetHostCPUName();
        char *features = o->target_cpu ? NULL : LLVMGetHostCPUFeatures();
        tm = LLVMCreateTargetMachine(target, triple, o->target_cpu ? o->target_cpu : cpu,
                                     features ? features : "", levels[opt_level(o)], reloc, model);
        if (!tm)
            diag_error(d, no_loc, "cannot create an LLVM target machine for '%s'", triple);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(features);
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    return tm;
}

/* Name tm's CPU and features on every function of mod, so that the module
 * says what it was built for (--emit=llvm, llc) and no pass assumes more. */
static void set_target_attributes(LLVMModuleRef mod, LLVMTargetMachineRef tm)
{
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
    LLVMAttributeRef a_cpu = LLVMCreateStringAttribute(ctx, "target-cpu", 10, cpu, (unsigned)strlen(cpu));
    LLVMAttributeRef a_feat =
        LLVMCreateStringAttribute(ctx, "target-features", 15, features, (unsigned)strlen(features));
    for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn)) {
        if (LLVMIsDeclaration(fn))
            continue;
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a_cpu);
        if (*features)
            LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a_feat);
    }
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);
}

bool be_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, const BeOptions *o, Diag *d)
{
    o = be_options(o);
    set_target_attributes(mod, tm);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, layout);
    LLVMDisposeTargetData(layout);

    int level = opt_level(o);
    if (level == 0)
        return true;
    char passes[32];
    snprintf(passes, sizeof passes, "default<O%d>", level);
    /* Vectorisation as clang does at -O2/-O3.  No unrolling and no
     * interleaving: every trip count is static and mostly small, and with
     * them on LLVM fully unrolls whole loop nests (the IR of a 171-node
     * meta-gradient grew fourfold, to 24k lines, and compiled 6x slower)
     * and interleaves a 40-iteration loop as one 32-wide step plus 8
     * scalar ones. */
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, level >= 2);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, level >= 2);
    LLVMPassBuilderOptionsSetLoopInterleaving(opts, 0);
    LLVMPassBuilderOptionsSetLoopUnrolling(opts, 0);
    LLVMErrorRef err = LLVMRunPasses(mod, passes, tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    return !be_llvm_error(d, err, "LLVM optimisation failed");
}
