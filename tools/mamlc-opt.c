/* mamlc-opt: run IR passes on a textual IR file and print the result, for
 * FileCheck tests of each pass (IR in, IR out), of the meta-step builder
 * (a model's functions and meta block in, the meta-step out) and of code
 * generation. */
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../backend/gpu.h"
#include "../backend/target.h"
#include "../passes/passes.h"
#include "util.h"

static const char usage[] =
    "usage: mamlc-opt [options] FILE.ir\n"
    "  --pass=NAME          run pass NAME (simplify, cse, transpose, reassociate, dce, grad);\n"
    "                       repeatable, in order\n"
    "  --meta-step[=NAME]   first build the meta-step's functions (or just NAME: loss,\n"
    "                       grad, adapt_step, meta_step, eval_loss, metric, predict)\n"
    "                       from the module's model functions and meta block, as\n"
    "                       mamlc does (mamlc --emit=model-ir writes such a module);\n"
    "                       the passes then run on those\n"
    "  --optimize           run simplify, cse, transpose, reassociate and dce until nothing changes,\n"
    "                       then remat\n"
    "  --emit=ir|llvm       print the IR (default) or the LLVM IR of the result\n"
    "  --emit=nvptx-ir|ptx  print the GPU target's LLVM IR or PTX of the result\n"
    "  --gpu-arch=ARCH      sm_80 (default) or sm_90, for nvptx-ir and ptx\n"
    "  -O0 ... -O3          LLVM optimisation level for --emit=llvm (default 3)\n"
    "  --target-cpu=CPU     generate --emit=llvm code for CPU (default: this machine's);\n"
    "                       tests name it, so that their output is the same on every host\n"
    "  --locations          end each printed op with its source location, loc(\"FILE\":LINE:COL)\n"
    "  --verify-each        verify the IR after every pass\n"
    "  --print-after=NAME   print the IR after every run of pass NAME\n"
    "  --print-after-all    print the IR after every pass\n";

int main(int argc, char **argv) {
    const char *passes[64], *file = NULL, *emit = "ir", *v;
    int npasses = 0;
    bool optimize = false, meta_step = false;
    const char *only = NULL;
    PassOptions po = {.out = stdout};
    BeOptions bo = {.opt_level = 3};
    BeGpuOptions go = {.opt_level = 3};
    IrPrintOptions print = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (tool_option(argc, argv, &i, "--pass", &v)) {
            if (!pass_lookup(v) || npasses == 64) {
                fprintf(stderr, "mamlc-opt: error: unknown pass '%s'\n%s", v, usage);
                return 2;
            }
            passes[npasses++] = v;
        } else if (strcmp(a, "--meta-step") == 0)
            meta_step = true;
        else if (strncmp(a, "--meta-step=", 12) == 0 && a[12]) {
            meta_step = true;
            only = a + 12;
        } else if (strcmp(a, "--optimize") == 0)
            optimize = true;
        else if (tool_option(argc, argv, &i, "--emit", &v) &&
                 (!strcmp(v, "ir") || !strcmp(v, "llvm") || !strcmp(v, "nvptx-ir") || !strcmp(v, "ptx")))
            emit = v;
        else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3])
            bo.opt_level = go.opt_level = a[2] - '0';
        else if (tool_option(argc, argv, &i, "--gpu-arch", &v) && be_gpu_arch_ok(v))
            go.arch = v;
        else if (tool_option(argc, argv, &i, "--target-cpu", &v))
            bo.target_cpu = v;
        else if (strcmp(a, "--verify-each") == 0)
            po.verify_each = true;
        else if (strcmp(a, "--locations") == 0)
            print.locations = true;
        else if (tool_option(argc, argv, &i, "--print-after", &v))
            po.print_after = v;
        else if (strcmp(a, "--print-after-all") == 0)
            po.print_after_all = true;
        else if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if ((a[0] != '-' || !a[1]) && !file)
            file = a;
        else {
            fprintf(stderr, "mamlc-opt: error: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    char why[1024];
    if (bo.target_cpu && !be_target_cpu_check(bo.target_cpu, why, sizeof why)) {
        fprintf(stderr, "mamlc-opt: error: --target-cpu: %s (mamlc --target-cpu=help lists the CPUs)\n", why);
        return 2;
    }
    if (!file) {
        fputs(usage, stderr);
        return 2;
    }
    Diag d;
    diag_init(&d, stderr);
    size_t len;
    char *text = tool_read_file(file, &len, &d);
    IrModule *m = text ? ir_parse(file, text, len, &d) : NULL;
    bool ok = m && ir_verify_module(m, &d);
    if (ok && meta_step) {
        IrModule *step = ir_module_new(m->real);
        ok = meta_build(m, step, only, &d);
        ir_module_free(m);
        m = step;
    }
    for (int f = 0; ok && f < m->nfunc; f++) {
        for (int p = 0; ok && p < npasses; p++)
            ok = pass_run(m->func[f], passes[p], &po, &d, NULL);
        if (ok && optimize)
            ok = pass_optimize(m->func[f], &po, &d);
    }
    if (ok && strcmp(emit, "llvm") == 0)
        ok = be_emit_llvm(stdout, m, &bo, &d);
    else if (ok && strcmp(emit, "nvptx-ir") == 0)
        ok = be_gpu_emit_llvm(stdout, m, &go, &d);
    else if (ok && strcmp(emit, "ptx") == 0) {
        char *ptx = be_gpu_ptx(m, &go, &d);
        ok = ptx && fputs(ptx, stdout) >= 0;
        free(ptx);
    }
    else if (ok)
        ir_print_module_with(stdout, m, &print);
    ir_module_free(m);
    free(text);
    diag_free(&d);
    return ok ? 0 : 1;
}
