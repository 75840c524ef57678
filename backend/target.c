/* Target machines and LLVM's optimisation pipeline. */
#include "target.h"

#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* In the child of be_target_cpu_check: build a function that returns for
 * cpu and exit 0, or die as LLVM does with a CPU it cannot use. */
static void probe_cpu(const char *cpu)
{
    pthread_once(&native_once, init_native);
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    if (!native_ok || LLVMGetTargetFromTriple(triple, &target, &msg))
        _exit(1);
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, "", LLVMCodeGenLevelNone,
                                                      LLVMRelocDefault, LLVMCodeModelDefault);
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("probe", ctx);
    LLVMTypeRef type = LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, LLVMAddFunction(mod, "probe", type), ""));
    LLVMBuildRetVoid(b);
    LLVMMemoryBufferRef obj;
    _exit(tm && !LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &obj) ? 0 : 1);
}

bool be_target_cpu_check(const char *cpu, char *why, size_t size)
{
    int fds[2], status = 0;
    fflush(NULL);
    bool piped = pipe(fds) == 0;
    pid_t pid = piped ? fork() : -1;
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        probe_cpu(cpu);
    }
    if (pid < 0) {
        int e = errno;
        if (piped) {
            close(fds[0]);
            close(fds[1]);
        }
        snprintf(why, size, "cannot check the CPU '%s' in a new process: %s", cpu, strerror(e));
        return false;
    }
    close(fds[1]);
    /* keep the first words the child says, and drain the rest */
    char said[512], rest[512];
    size_t n = 0;
    for (;;) {
        bool room = n < sizeof said - 1;
        ssize_t r = read(fds[0], room ? said + n : rest, room ? sizeof said - 1 - n : sizeof rest);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
        if (r > 0 && room)
            n += (size_t)r;
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    bool ok = n == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
        /* LLVM's first line, less its "LLVM ERROR: " and "(ignoring processor)" */
        said[n] = 0;
        char *text = strncmp(said, "LLVM ERROR: ", 12) == 0 ? said + 12 : said, *end = strchr(text, '\n');
        if (end)
            *end = 0;
        if ((end = strstr(text, " (ignoring processor)")))
            *end = 0;
        char *triple = LLVMGetDefaultTargetTriple();
        snprintf(why, size, "LLVM cannot generate %s code for the CPU '%s': %s", triple, cpu,
                 *text ? text : WIFSIGNALED(status) ? "it stopped on a signal" : "it failed");
        LLVMDisposeMessage(triple);
    }
    return ok;
}

void be_target_cpu_help(void)
{
    pthread_once(&native_once, init_native);
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    if (native_ok && !LLVMGetTargetFromTriple(triple, &target, &msg)) {
        /* LLVM lists them on stderr as it makes the target machine */
        fflush(NULL);
        int saved = dup(STDERR_FILENO);
        dup2(STDOUT_FILENO, STDERR_FILENO);
        LLVMDisposeTargetMachine(LLVMCreateTargetMachine(target, triple, "help", "", LLVMCodeGenLevelNone,
                                                         LLVMRelocDefault, LLVMCodeModelDefault));
        dup2(saved, STDERR_FILENO);
        close(saved);
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
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
