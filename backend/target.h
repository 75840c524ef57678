/* Target machines and the optimisation pipeline (backend/target.c), shared
 * by the JIT (jit.c) and the emitters.  No ORC here. */
#ifndef MAMLC_BACKEND_TARGET_H
#define MAMLC_BACKEND_TARGET_H

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/TargetMachine.h>

#include "backend.h"

/* o, or the defaults (host CPU, opt level 3) when o is NULL. */
const BeOptions *be_options(const BeOptions *o);

/* A target machine for the host triple and o's CPU (the host CPU and its
 * features when o->target_cpu is NULL), generating code at o's opt level.
 * Initialises LLVM's native target on first use (thread-safe).  Returns NULL
 * after reporting through d; the caller disposes of the result. */
LLVMTargetMachineRef be_target_machine(const BeOptions *o, LLVMRelocMode reloc,
                                       LLVMCodeModel model, Diag *d);

/* Whether LLVM generates code for this machine's triple on `cpu` (as given
 * to --target-cpu): a CPU it knows by that name, and one that runs the
 * triple's code (i686 is a known CPU that cannot run x86_64 code).  LLVM
 * meets a bad CPU with a warning on stderr at every target machine, then
 * aborts the process, so the check compiles an empty function for cpu in a
 * child process and watches it.  On false, why holds the reason in LLVM's
 * words.  Call it before starting threads (it forks). */
bool be_target_cpu_check(const char *cpu, char *why, size_t size);

/* Print the CPUs (and CPU features) LLVM knows for this machine's triple on
 * standard output, in LLVM's words (as `llc -mcpu=help`). */
void be_target_cpu_help(void);

/* Give mod tm's triple and data layout (and every function tm's CPU and
 * features as "target-cpu" and "target-features"), then run LLVM's default<On>
 * pipeline for o's opt level (none at O0, so the module stays as the code
 * generator built it).  Returns false after reporting through d. */
bool be_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, const BeOptions *o, Diag *d);

/* Report err through d as "what: message" and consume it.  Returns true
 * when err was an error (so: if (be_llvm_error(...)) fail). */
bool be_llvm_error(Diag *d, LLVMErrorRef err, const char *what);

/* Seconds on a monotonic clock. */
double be_now(void);

#endif
