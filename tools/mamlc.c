/* mamlc: the command-line driver.  The whole pipeline reads top to bottom in
 * compile(): load the model, build its functions, optimise them, compile
 * them with LLVM.  `mamlc run` and `mamlc eval` go on in tools/run.c, `-o`
 * in tools/library.c. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../backend/backend.h"
#include "../backend/target.h"
#include "../passes/passes.h"
#include "gpu.h"
#include "library.h"
#include "plot.h"
#include "run.h"
#include "util.h"

/* The help: a synopsis, then each command's options (mamlc CMD --help
 * prints the synopsis line and the options of CMD). */
static const char synopsis[] =
    "usage: mamlc [options] FILE.mdl          compile (with --emit: print a stage)\n"
    "       mamlc FILE.mdl -o LIB.so          build a shared library with a C ABI\n"
    "       mamlc run FILE.mdl [options]      JIT-compile and meta-train\n"
    "       mamlc eval FILE.mdl --load CKPT   evaluate a checkpoint on held-out tasks\n"
    "       mamlc plot LOG.jsonl -o OUT.svg   draw the learning curves of a run's --log\n"
    "       mamlc plot --fit CKPT FILE.mdl -o OUT.svg\n"
    "                                         draw a sinusoid model's fit before and\n"
    "                                         after adaptation\n"
    "       mpirun -np P mamlc-mpi run ...    meta-train over P processes (docs/distributed.md)\n";

static const char compile_help[] =
    "Compile options:\n"
    "  --emit=STAGE         print a stage: ast, model-ir (the model's functions and\n"
    "                       meta block, mamlc-opt --meta-step's input), ir (the\n"
    "                       loss), grad-ir (the inner gradient), meta-ir (the\n"
    "                       meta-step), llvm (LLVM IR), ptx (the GPU target's\n"
    "                       PTX), nvptx-ir (its LLVM IR; docs/gpu.md),\n"
    "                       header (the C header of -o's library), json (its\n"
    "                       mamlc_model_json())\n"
    "  --locations          with an IR stage: end each op with the source location\n"
    "                       it comes from, loc(\"FILE\":LINE:COL) (a gradient op: that\n"
    "                       of the op it differentiates)\n"
    "  --summary            with an IR stage: one line per phase of each function\n"
    "                       (inner step 1: forward, ..., query loss, meta-gradient\n"
    "                       through inner step 1, ...) with its ops, FLOPs and bytes\n"
    "  -o LIB.so            write a self-contained shared library (docs/abi.md)\n"
    "  --header PATH        where -o writes the library's header (default LIB.h)\n"
    "  --dtype=f32|f64      the real type (default f32)\n"
    "  -D NAME=VALUE        override `dim NAME`\n"
    "  --meta KEY=VALUE     override a key of the meta block (--meta inner_steps=5)\n"
    "  -O0 ... -O3          LLVM optimisation level (default 3)\n"
    "  --target-cpu=CPU     generate code for CPU (default: this machine's);\n"
    "                       --target-cpu=help lists the CPUs\n"
    "  --device=cpu|cuda    where the meta-step runs: -o embeds the GPU kernels in\n"
    "                       the library, run trains on the GPU (default cpu)\n"
    "  --gpu-arch=ARCH      sm_80 or sm_90: the GPU of ptx and --device cuda\n"
    "                       (default sm_80, which runs on Hopper too)\n"
    "  --stats              compile, then print the parameter count, FLOPs and arena\n"
    "                       bytes of the meta-step (and how close its arena is to\n"
    "                       the peak of live buffers) and the time of each stage\n"
    "  --verify-each        verify the IR after every pass\n"
    "  --print-after=PASS   print the IR after every run of PASS (simplify, cse,\n"
    "                       transpose, reassociate, dce, remat)\n"
    "  --print-after-all    print the IR after every pass\n";

static const char run_help[] =
    "Run options:\n"
    "  --iters N            meta-training iterations (default: the model's `iterations`)\n"
    "  --seed S             random seed (default 1); the same seed gives the same run\n"
    "  --eval-every N       evaluate every N iterations (default 10000; 0: at the end)\n"
    "  --eval-tasks N       held-out tasks per evaluation (default 1000)\n"
    "  --report FILE.json   write the final figures, every evaluation and the\n"
    "                       configuration as JSON\n"
    "  --log FILE.jsonl     write the experiment log, one JSON object a line: the\n"
    "                       configuration, the training loss and steps/s, every\n"
    "                       evaluation (docs/logs.md; mamlc plot draws it)\n"
    "  --log-every N        a training line every N iterations (default 100)\n"
    "  --quiet              no progress line\n"
    "  --expect-improvement fail (exit 1) unless the held-out loss after the last\n"
    "                       eval step count is lower after training than before\n"
    "  --data PATH          the task's data (omniglot: the meta-training split)\n"
    "  --eval-data PATH     evaluate on this data instead (the held-out split)\n"
    "  --tasks FILE         meta-train on the tasks of FILE.safetensors (any task kind;\n"
    "                       docs/language.md), drawn at random from the seed\n"
    "  --eval-tasks-file FILE\n"
    "                       evaluate on each task of this task file instead\n"
    "  --eval-split CSV     images: evaluate on this split's classes (of --eval-data,\n"
    "                       or else of the training data)\n"
    "  --save CKPT          write the parameters at the end (safetensors, atomically)\n"
    "  --save-state         with --save: also the optimiser state and iteration\n"
    "  --resume CKPT        continue from a checkpoint saved with --save-state\n"
    "                       (--save CKPT too, to keep what is trained)\n"
    "  --checkpoint-every N with --save: also save every N iterations, with the\n"
    "                       optimiser state (as --save-state) to resume from\n"
    "  --threads N          threads sharing each meta-batch's tasks (default 1);\n"
    "                       every N trains the same bits\n";

static const char eval_help[] =
    "Eval options:\n"
    "  --load CKPT          the checkpoint to evaluate (required)\n"
    "  --seed S             random seed of the held-out tasks (default 1)\n"
    "  --eval-tasks N       held-out tasks (default 1000)\n"
    "  --report FILE.json   write the figures and the configuration as JSON\n"
    "  --data PATH, --eval-data PATH, --eval-split CSV\n"
    "                       as for run\n"
    "  --tasks FILE         evaluate on each task of FILE.safetensors\n"
    "  --omniglot-runs all_runs.zip\n"
    "                       the official 20-way one-shot runs (a 20-way 1-shot model)\n"
    "  --eval-mode M        batch norm's statistics: transductive, running_stats or\n"
    "                       both (a model whose meta block gives eval_mode; also run)\n";

static const char plot_help[] =
    "Plot options:\n"
    "  -o OUT.svg           the picture to write (required)\n"
    "  --fit CKPT           draw the fit of the model FILE.mdl with the parameters of\n"
    "                       CKPT on held-out tasks (a task sinusoid and `def net`):\n"
    "                       ground truth, support points, and the prediction after\n"
    "                       each of the meta block's eval_steps inner steps\n"
    "  --eval-tasks N       with --fit: that many tasks, one panel each (default 3)\n"
    "  --seed S             with --fit: the seed of the held-out tasks (default 1,\n"
    "                       those mamlc run and mamlc eval evaluate on)\n";

static const char shared_help[] =
    "\nThe compile options --dtype, -D, --meta, -O0...-O3 and --target-cpu apply as\n"
    "well, and must be those the model was trained with (mamlc --help lists them).\n";

typedef enum { MODE_COMPILE, MODE_RUN, MODE_EVAL, MODE_PLOT } Mode;

static const char *const mode_name[] = {"mamlc FILE.mdl", "mamlc run", "mamlc eval", "mamlc plot"};

/* Prints the help of mode (of everything for a compile). */
static void print_help(Mode mode) {
    static const char *const help[] = {NULL, run_help, eval_help, plot_help};
    if (mode == MODE_COMPILE) {
        printf("%s\n%s\n%s\n%s\n%s\n  --help, --version\n", synopsis, compile_help, run_help, eval_help, plot_help);
        return;
    }
    const char *syn[] = {NULL, "usage: mamlc run FILE.mdl [options]\n",
                         "usage: mamlc eval FILE.mdl --load CKPT [options]\n",
                         "usage: mamlc plot LOG.jsonl -o OUT.svg\n"
                         "       mamlc plot --fit CKPT FILE.mdl -o OUT.svg [options]\n"};
    printf("%s\n%s%s", syn[mode], help[mode], shared_help);
}

/* An option: its name, whether it takes a value, and the modes it goes with. */
typedef struct {
    const char *name;
    bool value;
    unsigned modes;             /* 1 << Mode */
} OptionSpec;

enum { C = 1 << MODE_COMPILE, R = 1 << MODE_RUN, E = 1 << MODE_EVAL, P = 1 << MODE_PLOT, ALL = C | R | E | P };

static const OptionSpec options[] = {
    {"--help", false, ALL}, {"-h", false, ALL}, {"--version", false, ALL},
    {"--emit", true, C}, {"--locations", false, C}, {"--summary", false, C}, {"-o", true, C | P},
    {"--header", true, C}, {"--dtype", true, ALL}, {"-D", true, ALL}, {"--meta", true, ALL},
    {"-O0", false, ALL}, {"-O1", false, ALL}, {"-O2", false, ALL}, {"-O3", false, ALL},
    {"--target-cpu", true, ALL}, {"--device", true, C | R}, {"--gpu-arch", true, C | R}, {"--stats", false, C}, {"--verify-each", false, ALL},
    {"--print-after", true, ALL}, {"--print-after-all", false, ALL},
    {"--save", true, R}, {"--save-state", false, R}, {"--resume", true, R}, {"--checkpoint-every", true, R},
    {"--threads", true, R}, {"--load", true, E}, {"--omniglot-runs", true, E}, {"--data", true, R | E},
    {"--eval-data", true, R | E}, {"--tasks", true, R | E}, {"--eval-tasks-file", true, R},
    {"--eval-split", true, R | E}, {"--iters", true, R}, {"--seed", true, R | E | P}, {"--eval-every", true, R},
    {"--eval-tasks", true, R | E | P}, {"--report", true, R | E}, {"--quiet", false, R},
    {"--expect-improvement", false, R}, {"--log", true, R}, {"--log-every", true, R}, {"--fit", true, P},
    {"--eval-mode", true, R | E},
};
enum { NOPTIONS = sizeof options / sizeof *options };

static const char *const commands[] = {"run", "eval", "plot"};

typedef struct {
    const char *file, *emit, *print_after, *output, *header;
    char *default_header;       /* -o's header where --header is not given */
    Mode mode;
    bool run, eval, plot, verify_each, print_after_all, stats, summary;
    const char *picture;        /* plot: -o */
    bool seed_given, log_every_given;
    IrPrintOptions print;
    ModelOptions model;
    DimOverride defines[64];
    const char *meta[64];
    BeOptions be;
    BeGpuOptions gpu;           /* --gpu-arch */
    bool cuda;                  /* --device cuda */
    RunOptions r;               /* run and eval */
} Options;

/* A usage error: one line, and where the help is; exit status 2. */
static int usage_error(Mode mode, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(Mode mode, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mamlc: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nmamlc: '%s --help' lists the %s\n", mode == MODE_COMPILE ? "mamlc" : mode_name[mode],
            mode == MODE_COMPILE ? "commands and options" : "options");
    va_end(ap);
    return 2;
}

/* The candidate closest to `word` by edit distance, if it is close enough
 * to be a slip (or word is the start of exactly one), else NULL. */
static const char *closest(const char *word, const char *const *candidates, int n) {
    const char *best = NULL, *prefixed = NULL;
    int best_distance = 3, nprefixed = 0;
    size_t len = strlen(word);
    for (int k = 0; k < n; k++) {
        if (len > 2 && strncmp(candidates[k], word, len) == 0) {
            prefixed = candidates[k];
            nprefixed++;
        }
        int dist = tool_edit_distance(word, candidates[k], best_distance);
        if (dist < best_distance && (size_t)dist * 3 <= len) {
            best = candidates[k];
            best_distance = dist;
        }
    }
    return nprefixed == 1 ? prefixed : best;
}

/* The spec of option argument a ("--name", "--name=value", "-DNAME=V"), or NULL. */
static const OptionSpec *find_option(const char *a) {
    size_t n = strncmp(a, "-D", 2) == 0 ? 2 : strcspn(a, "=");
    for (int k = 0; k < NOPTIONS; k++)
        if (strlen(options[k].name) == n && strncmp(options[k].name, a, n) == 0)
            return &options[k];
    return NULL;
}

/* The usage error for an option argument a that mode does not take. */
static int option_error(Mode mode, const char *a, const OptionSpec *spec) {
    size_t n = strcspn(a, "=");
    if (spec) {
        char whose[96] = "";
        int nmodes = 0, total = 0;
        for (int m = 0; m < 4; m++)
            total += (spec->modes >> m) & 1;
        for (int m = 0; m < 4; m++)
            if (spec->modes & 1u << m)
                snprintf(whose + strlen(whose), sizeof whose - strlen(whose), "%s%s",
                         nmodes++ == 0 ? "" : nmodes == total ? " and " : ", ", mode_name[m]);
        return usage_error(mode, "%s is an option of %s, not of %s", spec->name, whose, mode_name[mode]);
    }
    const char *names[NOPTIONS];
    int nnames = 0;
    for (int k = 0; k < NOPTIONS; k++)
        if (options[k].modes & 1u << mode && strncmp(options[k].name, "-O", 2) != 0)
            names[nnames++] = options[k].name;
    char *name = strndup(a, n);
    const char *near = name ? closest(name, names, nnames) : NULL;
    int status = near ? usage_error(mode, "unknown option '%s' (did you mean '%s'?)", name, near)
                      : usage_error(mode, "unknown option '%s'", name ? name : a);
    free(name);
    return status;
}

/* Whether argument a is meant as a command: a word that is not a file. */
static bool looks_like_command(const char *a) {
    return a[0] != '-' && !strpbrk(a, "./") && access(a, F_OK) != 0;
}

/* mamlc WORD ...: an unknown command, with the command it may be. */
static int command_error(const char *word) {
    static const char *const synonyms[][2] = {{"train", "run"}, {"fit", "run"}, {"evaluate", "eval"},
                                              {"test", "eval"}, {"draw", "plot"}, {"graph", "plot"}};
    const char *near = closest(word, commands, 3);
    for (size_t k = 0; !near && k < sizeof synonyms / sizeof *synonyms; k++)
        if (strcmp(word, synonyms[k][0]) == 0)
            near = synonyms[k][1];
    if (near)
        return usage_error(MODE_COMPILE, "unknown command '%s' (did you mean 'mamlc %s'?); the commands are run, eval "
                                         "and plot", word, near);
    return usage_error(MODE_COMPILE, "unknown command '%s'; the commands are run, eval and plot (a model file "
                                     "ends in .mdl)", word);
}

static bool parse_long(const char *s, long lo, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo)
        return false;
    *out = v;
    return true;
}

static bool parse_define(Options *o, const char *s) {
    const char *eq = strchr(s, '=');
    long v;
    if (!eq || eq == s || o->model.ndefines == 64 || !parse_long(eq + 1, 1, &v) || v > IR_MAX_DIM)
        return false;
    DimOverride *d = &o->defines[o->model.ndefines++];
    d->name = strndup(s, (size_t)(eq - s));
    d->value = (int)v;
    return d->name != NULL;
}

static const char *const stages[] = {"ast", "model-ir", "ir", "grad-ir", "meta-ir", "llvm", "header", "json",
                                     "ptx", "nvptx-ir"};

/* Returns -1 when the arguments are fine, else the exit status. */
static int parse_args(int argc, char **argv, Options *o) {
    int i = 1;
    for (int m = MODE_RUN; argc > 1 && m <= MODE_PLOT; m++)
        if (strcmp(argv[1], commands[m - MODE_RUN]) == 0) {
            o->mode = (Mode)m;
            i = 2;
        }
    if (i == 1 && argc > 1 && looks_like_command(argv[1]))
        return command_error(argv[1]);
    o->run = o->mode == MODE_RUN;
    o->eval = o->mode == MODE_EVAL;
    o->plot = o->mode == MODE_PLOT;
    bool trains = o->run, runs = o->run || o->eval;
    for (; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (a[0] == '-' && a[1]) {  /* an option: known, of this command, with its value */
            const OptionSpec *spec = find_option(a);
            if (!spec || !(spec->modes & 1u << o->mode))
                return option_error(o->mode, a, spec);
            bool attached = strchr(a, '=') || (spec->name[1] == 'D' && a[2]);
            if (spec->value && !attached && i + 1 == argc)
                return usage_error(o->mode, "%s needs a value", spec->name);
            if (!spec->value && strchr(a, '='))
                return usage_error(o->mode, "%s takes no value", spec->name);
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(o->mode);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("mamlc %s (LLVM 19)\n", MAMLC_VERSION);
            return 0;
        } else if (tool_option(argc, argv, &i, "--emit", &v)) {
            o->emit = NULL;
            for (size_t k = 0; k < sizeof stages / sizeof *stages; k++)
                if (strcmp(v, stages[k]) == 0)
                    o->emit = stages[k];
            if (!o->emit)
                return usage_error(o->mode, "unknown stage '%s' for --emit", v);
        } else if (o->plot && tool_option(argc, argv, &i, "-o", &v)) {
            o->picture = v;
        } else if (o->plot && tool_option(argc, argv, &i, "--fit", &v)) {
            o->r.load = v;
        } else if (!runs && tool_option(argc, argv, &i, "-o", &v)) {
            o->output = v;
        } else if (!runs && tool_option(argc, argv, &i, "--header", &v)) {
            o->header = v;
        } else if (tool_option(argc, argv, &i, "--dtype", &v)) {
            if (strcmp(v, "f32") && strcmp(v, "f64"))
                return usage_error(o->mode, "--dtype takes f32 or f64, not '%s'", v);
            o->model.real = v[1] == '6' ? DT_F64 : DT_F32;
        } else if (strncmp(a, "-D", 2) == 0) {
            v = a[2] ? a + 2 : i + 1 < argc ? argv[++i] : "";
            if (!parse_define(o, v))
                return usage_error(o->mode, "-D needs NAME=VALUE with 1 <= VALUE <= 16777216, not '%s'", v);
        } else if (tool_option(argc, argv, &i, "--meta", &v)) {
            if (!strchr(v, '=') || o->model.nmeta == 64)
                return usage_error(o->mode, "--meta needs KEY=VALUE, not '%s'", v);
            o->meta[o->model.nmeta++] = v;
        } else if (a[0] == '-' && a[1] == 'O' && a[2] >= '0' && a[2] <= '3' && !a[3]) {
            o->be.opt_level = o->gpu.opt_level = a[2] - '0';
        } else if (tool_option(argc, argv, &i, "--target-cpu", &v)) {
            o->be.target_cpu = v;
        } else if (tool_option(argc, argv, &i, "--device", &v)) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                return usage_error(o->mode, "--device takes cpu or cuda, not '%s'", v);
            o->cuda = v[1] == 'u';
        } else if (tool_option(argc, argv, &i, "--gpu-arch", &v)) {
            if (!be_gpu_arch_ok(v))
                return usage_error(o->mode, "--gpu-arch takes sm_80 or sm_90, not '%s'", v);
            o->gpu.arch = v;
        } else if (strcmp(a, "--stats") == 0) {
            o->stats = true;
        } else if (strcmp(a, "--verify-each") == 0) {
            o->verify_each = true;
        } else if (strcmp(a, "--locations") == 0) {
            o->print.locations = true;
        } else if (strcmp(a, "--summary") == 0) {
            o->summary = true;
        } else if (tool_option(argc, argv, &i, "--print-after", &v)) {
            if (!pass_lookup(v))
                return usage_error(o->mode, "unknown pass '%s'", v);
            o->print_after = v;
        } else if (strcmp(a, "--print-after-all") == 0) {
            o->print_after_all = true;
        } else if (trains && tool_option(argc, argv, &i, "--save", &v)) {
            o->r.save = v;
        } else if (trains && strcmp(a, "--save-state") == 0) {
            o->r.save_state = true;
        } else if (trains && tool_option(argc, argv, &i, "--resume", &v)) {
            o->r.resume = v;
        } else if (trains && tool_option(argc, argv, &i, "--checkpoint-every", &v)) {
            if (!parse_long(v, 1, &o->r.checkpoint_every))
                return usage_error(o->mode, "--checkpoint-every needs a positive integer, not '%s'", v);
        } else if (trains && tool_option(argc, argv, &i, "--threads", &v)) {
            if (!parse_long(v, 1, &n) || n > 256)
                return usage_error(o->mode, "--threads needs an integer from 1 to 256, not '%s'", v);
            o->r.threads = (int)n;
        } else if (runs && tool_option(argc, argv, &i, "--eval-mode", &v)) {
            o->r.eval_both = strcmp(v, "both") == 0;
            o->r.eval_mode = strcmp(v, "transductive") == 0    ? EVAL_MODE_TRANSDUCTIVE
                             : strcmp(v, "running_stats") == 0 ? EVAL_MODE_RUNNING_STATS : EVAL_MODE_NONE;
            if (!o->r.eval_both && o->r.eval_mode == EVAL_MODE_NONE)
                return usage_error(o->mode, "--eval-mode needs transductive, running_stats or both, not '%s'", v);
        } else if (o->eval && tool_option(argc, argv, &i, "--load", &v)) {
            o->r.load = v;
        } else if (o->eval && tool_option(argc, argv, &i, "--omniglot-runs", &v)) {
            o->r.omniglot_runs = v;
        } else if (runs && tool_option(argc, argv, &i, "--data", &v)) {
            o->r.data = v;
        } else if (runs && tool_option(argc, argv, &i, "--eval-data", &v)) {
            o->r.eval_data = v;
        } else if (runs && tool_option(argc, argv, &i, "--tasks", &v)) {
            o->r.tasks = v;
        } else if (trains && tool_option(argc, argv, &i, "--eval-tasks-file", &v)) {
            o->r.eval_tasks_file = v;
        } else if (runs && tool_option(argc, argv, &i, "--eval-split", &v)) {
            o->r.eval_split = v;
        } else if (trains && tool_option(argc, argv, &i, "--iters", &v)) {
            if (!parse_long(v, 1, &o->r.iters))
                return usage_error(o->mode, "--iters needs a positive integer, not '%s'", v);
        } else if (trains && tool_option(argc, argv, &i, "--log", &v)) {
            o->r.log = v;
        } else if (trains && tool_option(argc, argv, &i, "--log-every", &v)) {
            if (!parse_long(v, 1, &o->r.log_every))
                return usage_error(o->mode, "--log-every needs a positive integer, not '%s'", v);
            o->log_every_given = true;
        } else if ((runs || o->plot) && tool_option(argc, argv, &i, "--seed", &v)) {
            if (!parse_long(v, 0, &n))
                return usage_error(o->mode, "--seed needs a non-negative integer, not '%s'", v);
            o->r.seed = (uint64_t)n;
            o->seed_given = true;
        } else if (trains && tool_option(argc, argv, &i, "--eval-every", &v)) {
            if (!parse_long(v, 0, &o->r.eval_every))
                return usage_error(o->mode, "--eval-every needs a non-negative integer, not '%s'", v);
        } else if ((runs || o->plot) && tool_option(argc, argv, &i, "--eval-tasks", &v)) {
            if (!parse_long(v, 1, &o->r.eval_tasks) || o->r.eval_tasks > 1000000)
                return usage_error(o->mode, "--eval-tasks needs an integer from 1 to 1000000, not '%s'", v);
            o->r.eval_tasks_given = true;
        } else if (runs && tool_option(argc, argv, &i, "--report", &v)) {
            o->r.report = v;
        } else if (trains && strcmp(a, "--quiet") == 0) {
            o->r.quiet = true;
        } else if (trains && strcmp(a, "--expect-improvement") == 0) {
            o->r.expect_improvement = true;
        } else if ((a[0] != '-' || !a[1]) && !o->file) {
            o->file = a;
        } else if (o->file) {
            return usage_error(o->mode, "a second input file '%s' (the first is '%s')", a, o->file);
        } else {
            return option_error(o->mode, a, find_option(a));
        }
    }
    if (o->be.target_cpu && strcmp(o->be.target_cpu, "help") == 0) {
        be_target_cpu_help();
        return 0;
    }
    char why[1024];
    if (o->be.target_cpu && !be_target_cpu_check(o->be.target_cpu, why, sizeof why))
        return usage_error(o->mode, "--target-cpu: %s (mamlc --target-cpu=help lists the CPUs)", why);
    if (!o->file && o->plot)
        return usage_error(o->mode, "%s", o->r.load ? "plot --fit CKPT needs the model: mamlc plot --fit CKPT FILE.mdl -o OUT.svg"
                                                    : "plot needs a log: mamlc plot LOG.jsonl -o OUT.svg");
    if (!o->file)
        return usage_error(o->mode, "%s", "no input file");
    if (o->plot && !o->picture)
        return usage_error(o->mode, "%s", "plot needs -o OUT.svg, the picture to write");
    if (o->plot && !o->r.load && (o->r.eval_tasks_given || o->seed_given || o->model.real != DT_F32 ||
                                  o->model.ndefines || o->model.nmeta || o->be.target_cpu))
        return usage_error(o->mode, "%s", "--eval-tasks, --seed and the compile options go with plot --fit");
    if (o->log_every_given && !o->r.log)
        return usage_error(o->mode, "%s", "--log-every goes with --log");
    if (runs && o->emit)
        return usage_error(o->mode, "%s", "--emit goes with neither 'run' nor 'eval'");
    if (o->stats && (runs || o->emit))
        return usage_error(o->mode, "%s", "--stats goes with neither 'run', 'eval' nor --emit");
    if (o->eval && !o->r.load)
        return usage_error(o->mode, "%s", "'eval' needs --load CKPT");
    if (o->r.eval_tasks_file && !o->r.tasks)
        return usage_error(o->mode, "%s", "--eval-tasks-file goes with --tasks");
    if (o->r.tasks && (o->r.data || o->r.eval_data || o->r.omniglot_runs))
        return usage_error(o->mode, "%s", "--tasks goes with neither --data, --eval-data nor --omniglot-runs");
    if (o->r.save_state && !o->r.save)
        return usage_error(o->mode, "%s", "--save-state goes with --save");
    if (o->r.checkpoint_every && !o->r.save)
        return usage_error(o->mode, "%s", "--checkpoint-every goes with --save");
    if (o->output && o->emit)
        return usage_error(o->mode, "%s", "-o does not go with --emit");
    if (o->cuda && !o->output && !o->run)
        return usage_error(o->mode, "%s", "--device cuda goes with -o or 'run'");
    bool ir_stage = o->emit && (!strcmp(o->emit, "model-ir") || strstr(o->emit, "ir")) && strcmp(o->emit, "nvptx-ir");
    if (o->print.locations && !ir_stage)
        return usage_error(o->mode, "%s", "--locations goes with an IR stage (--emit=model-ir, ir, grad-ir or meta-ir)");
    if (o->summary && !ir_stage)
        return usage_error(o->mode, "%s", "--summary goes with an IR stage (--emit=model-ir, ir, grad-ir or meta-ir)");
    if (o->header && !o->output)
        return usage_error(o->mode, "%s", "--header goes with -o");
    if (o->output && !o->header && !(o->header = o->default_header = lib_header_path(o->output))) {
        fprintf(stderr, "mamlc: error: out of memory\n");
        return 1;
    }
    o->model.defines = o->defines;
    o->model.meta = o->meta;
    o->r.train = o->run;
    o->r.fit = o->plot ? o->picture : NULL;
    o->r.argc = argc;
    o->r.argv = argv;
    return -1;
}

typedef struct {
    const char *option, *path;
    bool replaced;              /* written to a new file renamed over path */
} NamedPath;

/* Every file written must be writable where it is and none may overwrite
 * an input or another output, so that a bad path fails before any work
 * rather than after training, or after replacing the model.  --save may
 * equal --resume: that is how a run continues in place.  Returns -1 when
 * the paths are fine, else the exit status. */
static int check_paths(const Options *o, Diag *d) {
    const RunOptions *r = &o->r;
    const NamedPath in[] = {
        {o->plot && !r->load ? "the log" : "the model file", o->file, false}, {"--data", r->data, false}, {"--eval-data", r->eval_data, false},
        {"--eval-split", r->eval_split, false},
        {"--resume", r->resume, false}, {o->plot ? "--fit" : "--load", r->load, false}, {"--omniglot-runs", r->omniglot_runs, false},
        {"--tasks", r->tasks, false}, {"--eval-tasks-file", r->eval_tasks_file, false}};
    const NamedPath out[] = {
        {"-o", o->output, false}, {o->default_header ? "the header of -o" : "--header", o->header, false},
        {"--save", r->save, true}, {"--report", r->report, true}, {"--log", r->log, false},
        {"-o", o->picture, true}};
    const int nin = sizeof in / sizeof *in, nout = sizeof out / sizeof *out;
    for (int i = 0; i < nout; i++) {
        const NamedPath *w = &out[i];
        char why[PATH_MAX + 64];
        if (!w->path)
            continue;
        if (!tool_writable_path(w->path, w->replaced, why, sizeof why)) {
            diag_error(d, (SrcLoc){w->path, 0, 0}, "cannot write %s here: %s", w->option, why);
            return 1;
        }
        for (int k = 0; k < i; k++)
            if (out[k].path && tool_same_file(w->path, out[k].path))
                return usage_error(o->mode, "%s '%s' and %s '%s' are the same file", out[k].option, out[k].path,
                                   w->option, w->path);
        for (int k = 0; k < nin; k++)
            if (in[k].path && !(w->path == r->save && in[k].path == r->resume) && tool_same_file(w->path, in[k].path))
                return usage_error(o->mode, "%s '%s' would overwrite %s '%s'", w->option, w->path, in[k].option, in[k].path);
    }
    return -1;
}

/* The function a stage prints, or NULL for all of them. */
static const char *stage_func(const char *emit) {
    if (!emit || strcmp(emit, "llvm") == 0)
        return NULL;
    if (strcmp(emit, "ptx") == 0 || strcmp(emit, "nvptx-ir") == 0)
        return "meta_step";
    if (strcmp(emit, "ir") == 0)
        return "loss";
    return strcmp(emit, "grad-ir") == 0 ? "grad" : "meta_step";
}

/* Seconds on a monotonic clock. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    double frontend, build, passes;     /* seconds */
} StageTimes;

/* Build and optimise the model's functions (just `only`, if not NULL). */
static IrModule *build(const Model *md, const Options *o, const char *only, StageTimes *t, Diag *d) {
    PassOptions po = {.verify_each = o->verify_each, .print_after_all = o->print_after_all,
                      .print_after = o->print_after, .out = stdout};
    double start = now();
    IrModule *model = model_lower_module(md, d), *m = ir_module_new(md->real);
    bool ok = model && meta_build(model, m, only, d);
    ir_module_free(model);
    t->build = now() - start;
    start = now();
    bool optimize = !o->emit || strcmp(o->emit, "ir") != 0;
    for (int i = 0; ok && i < m->nfunc; i++) {
        ok = !o->verify_each || ir_verify_func(m->func[i], d);
        if (ok && optimize)
            ok = pass_optimize(m->func[i], &po, d);
    }
    t->passes = now() - start;
    if (!ok) {
        ir_module_free(m);
        return NULL;
    }
    return m;
}

/* --- compile and emit --- */

/* An IR stage: the module's text, or with --summary each function's phases. */
static void print_ir(const Options *o, const IrModule *m) {
    if (!o->summary) {
        ir_print_module_with(stdout, m, &o->print);
        return;
    }
    for (int i = 0; i < m->nfunc; i++) {
        printf("@%s: %d nodes\n", m->func[i]->name, m->func[i]->nnode);
        ir_print_summary(stdout, m->func[i]);
    }
}

/* mamlc --stats: what one meta-step costs, and what compiling it cost. */
static void print_stats(const Model *md, IrModule *m, const BeJit *j, const StageTimes *t) {
    IrFunc *step = ir_module_find(m, "meta_step");
    int64_t reals = 0, flops = ir_flops(step);
    for (int i = 0; i < md->ntensor; i++)
        reals += ir_numel(md->param[i].type);
    const BeTimes *bt = be_jit_times(j);
    printf("model          %s (%s)\n", md->file, ir_dtype_name(md->real));
    printf("parameters     %lld reals in %d tensors\n", (long long)reals, md->ntensor);
    printf("meta-step      %.6g MFLOP per task, %.6g MFLOP per meta-batch of %d\n", flops / 1e6,
           flops * (double)md->meta.meta_batch / 1e6, md->meta.meta_batch);
    size_t arena, live;
    be_arena_sizes(step, &arena, &live);
    printf("arena          %zu bytes (meta_step)", arena);
    for (int i = 0; i < m->nfunc; i++)
        if (m->func[i] != step)
            printf(", %zu (%s)", be_arena_bytes(m->func[i]), m->func[i]->name);
    printf("\nlive peak      %zu bytes (meta_step): its arena is %.2fx the most its buffers hold at once",
           live, live ? (double)arena / (double)live : 1.0);
    IrFunc *first = ir_module_find(m, "meta_step_first");
    if (first)      /* order = anneal: the step of the iterations below first_until */
        printf("\nfirst order    %.6g MFLOP per task, arena %zu bytes (meta_step_first, iterations below %ld)",
               ir_flops(first) / 1e6, be_arena_bytes(first), md->meta.first_until);
    printf("\ncompile time   frontend %.1f ms, build %.1f ms, IR passes %.1f ms, LLVM codegen %.1f ms,\n"
           "               LLVM optimise %.1f ms, machine code %.1f ms\n",
           1e3 * t->frontend, 1e3 * t->build, 1e3 * t->passes, 1e3 * bt->codegen_s, 1e3 * bt->optimize_s,
           1e3 * bt->jit_s);
}

/* mamlc FILE.mdl: what was checked, in one line. */
static void print_checked(const Model *md, IrModule *m) {
    int64_t reals = 0;
    for (int i = 0; i < md->ntensor; i++)
        reals += ir_numel(md->param[i].type);
    IrFunc *step = ir_module_find(m, "meta_step");
    printf("%s: ok: %d params (%lld reals), task %s, meta-step compiled (%d ops)\n", md->file, md->ntensor,
           (long long)reals, md->task.kind, step ? step->nnode : 0);
}

/* plot --fit draws what it knows the truth of: a task sinusoid, through the
 * model's `def net`.  False after reporting why not. */
static bool fit_drawable(const Model *md, Diag *d) {
    if (strcmp(md->task.kind, "sinusoid") != 0) {
        diag_error(d, md->task.loc, "plot --fit draws tasks whose ground truth it knows, a task 'sinusoid' "
                   "(1-D regression); this task is '%s'", md->task.kind);
        return false;
    }
    if (!model_has_func(md, "net")) {
        diag_error(d, (SrcLoc){md->file, 0, 0}, "plot --fit draws the model's predictions, and needs its "
                   "`def net(x)`");
        return false;
    }
    return true;
}

static int compile(const Options *o, Diag *d) {
    int paths = check_paths(o, d);
    if (paths >= 0)
        return paths;
    if (o->plot && !o->r.load)
        return plot_curves(o->file, o->picture, d) ? 0 : 1;
    StageTimes t = {0};
    double start = now();
    size_t len;
    RunOptions r = o->r;
    char *text = tool_read_file(o->file, &len, d);
    if (text)
        tool_sha256_hex(text, len, r.model_sha256);
    Model *md = text ? model_load_text(o->file, text, len, &o->model, d) : NULL;
    free(text);
    t.frontend = now() - start;
    if (!md)
        return 1;
    const char *data = o->r.data ? "--data" : o->r.eval_data ? "--eval-data" : NULL;
    if (data && !run_reads_data(md)) {
        int status = usage_error(o->mode, "%s: the task '%s' of %s reads no data", data, md->task.kind, md->file);
        model_free(md);
        return status;
    }
    if (o->plot && !fit_drawable(md, d)) {
        model_free(md);
        return 1;
    }
    int status = 0;
    if (o->emit && (!strcmp(o->emit, "ast") || !strcmp(o->emit, "header") || !strcmp(o->emit, "json") ||
                    !strcmp(o->emit, "model-ir"))) {
        if (o->emit[0] == 'm') {
            IrModule *model = model_lower_module(md, d);
            IrModule *family = model && md->task.family ? model_lower_family(md, d) : NULL;
            if (model)
                print_ir(o, model);
            if (family)
                print_ir(o, family);    /* which the meta-step builder ignores */
            status = model && (family || !md->task.family) ? 0 : 1;
            ir_module_free(model);
            ir_module_free(family);
        } else if (o->emit[0] == 'a')
            model_dump_ast(stdout, md);
        else if (o->emit[0] == 'h')
            lib_write_header(stdout, md);
        else {
            char *json = lib_model_json(md);
            printf("%s\n", json);
            free(json);
        }
        model_free(md);
        return status;
    }
    bool runs = o->run || o->eval || o->plot;
    IrModule *m = build(md, o, runs ? NULL : stage_func(o->emit), &t, d);
    if (!m)
        status = 1;
    else if (runs && o->cuda)
        status = gpu_run_model(md, m, &o->gpu, &r, d);
    else if (runs)
        status = run_model(md, m, &o->be, &r, d);
    else if (o->emit && strcmp(o->emit, "llvm") == 0)
        status = be_emit_llvm(stdout, m, &o->be, d) ? 0 : 1;
    else if (o->emit && (strcmp(o->emit, "ptx") == 0 || strcmp(o->emit, "nvptx-ir") == 0))
        status = gpu_emit(stdout, m, o->emit[0] == 'p', &o->gpu, d) ? 0 : 1;
    else if (o->output && o->cuda)
        status = gpu_lib_build(md, m, o->output, o->header, &o->be, &o->gpu, d) ? 0 : 1;
    else if (o->emit)
        print_ir(o, m);
    else if (o->output)
        status = lib_build(md, m, o->output, o->header, &o->be, NULL, d) ? 0 : 1;
    else {
        BeJit *j = be_jit_compile(m, &o->be, d);
        status = j ? 0 : 1;
        if (j && o->stats)
            print_stats(md, m, j, &t);
        else if (j)
            print_checked(md, m);
        be_jit_free(j);
    }
    ir_module_free(m);
    model_free(md);
    return status;
}

int mamlc_main(int argc, char **argv, const RunCluster *cluster) {
    Options o = {.be = {.opt_level = 3}, .gpu = {.opt_level = 3},
                 .r = {.seed = 1, .eval_every = 10000, .eval_tasks = 1000, .threads = 1, .log_every = 100,
                       .cluster = cluster}};
    int status = parse_args(argc, argv, &o);
    if (status < 0) {
        Diag d;
        diag_init(&d, stderr);
        status = compile(&o, &d);
        diag_free(&d);
    }
    for (int i = 0; i < o.model.ndefines; i++)
        free((char *)o.defines[i].name);
    free(o.default_header);
    return status;
}

/* mamlc-mpi (tools/mpi.c) has its own main around mamlc_main. */
#ifndef MAMLC_MPI
int main(int argc, char **argv) { return mamlc_main(argc, argv, NULL); }
#endif
