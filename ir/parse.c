/* Reader for the textual IR that ir/print.c writes.
 *
 *   module = [meta] func*
 *   func   = "func" "@" NAME "(" [arg ("," arg)*] ")" "{" stmt* ret "}"
 *   arg    = VALUE ":" type
 *   stmt   = VALUE "=" OP [operand ("," operand)*] [NUMBER] [attrs] ":" type [loc]
 *   loc    = "loc(" STRING ":" INT ":" INT ")"
 *   attrs  = "{" KEY "=" (NUMBER | "[" [INT ("," INT)*] "]") ("," ...)* "}"
 *   ret    = "return" [VALUE ("," VALUE)*]
 *   type   = ("f32" | "f64" | "i32") "[" [INT ("," INT)*] "]"
 *
 * Attribute keys: value (powc), axes (reductions), axis (argmax, concat),
 * perm (transpose), start (slice), classes (onehot), stride and pad
 * (convolutions; 1 and 0 when left out).
 *
 * The meta block (ir/meta.h) has one entry per key, each optional:
 *   meta   = "meta" "{" (KEY "=" mvalue)* "}"
 *   mvalue = NUMBER | WORD | WORD "(" [[KEY "="] NUMBER ("," ...)*] ")"
 *          | "[" [(INT | NAME) ("," ...)*] "]"
 *
 * VALUE is %NAME; a NAME that is not a number is kept as the value's name.
 * `//` starts a comment; a comment `// --- PHASE ---` starts a phase: the
 * statements after it, up to the next, belong to it.  Declared types are checked against
 * the shape rules; equal nodes are kept apart (no hash-consing). */
#include "ir.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A list of param names in the meta block, and where it starts. */
typedef struct {
    const char **name;
    int n;
    SrcLoc loc;
} NameList;

typedef struct {
    const char *file, *p, *end;
    int line, col;
    Diag *d;
    IrModule *m;
    int phase;                  /* of the statements read now: the last marker's */
    /* the meta block's adapt and per_step lists, resolved against @loss at
       the end */
    NameList adapt, per_step;
    /* names of the current function's values */
    struct { const char *name; ValueId id; } *scope;
    int nscope, scope_cap;
} Parser;

static SrcLoc here(const Parser *ps) { return (SrcLoc){ps->file, ps->line, ps->col}; }

static void advance(Parser *ps) {
    if (*ps->p == '\n') {
        ps->line++;
        ps->col = 1;
    } else
        ps->col++;
    ps->p++;
}

/* A comment `// --- PHASE ---` (at p, ending at end) makes PHASE the phase
 * of the statements after it. */
static void phase_marker(Parser *ps, const char *p, const char *end) {
    size_t n = (size_t)(end - p);
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    if (n > 10 && strncmp(p, "// --- ", 7) == 0 && strncmp(p + n - 4, " ---", 4) == 0) {
        char *name = arena_strndup(&ps->m->arena, p + 7, n - 11);
        ps->phase = ir_phase(ps->m, name);
    }
}

static void skip_space(Parser *ps) {
    while (ps->p < ps->end) {
        if (isspace((unsigned char)*ps->p))
            advance(ps);
        else if (ps->p + 1 < ps->end && ps->p[0] == '/' && ps->p[1] == '/') {
            const char *start = ps->p;
            while (ps->p < ps->end && *ps->p != '\n')
                advance(ps);
            phase_marker(ps, start, ps->p);
        } else
            break;
    }
}

static bool at(Parser *ps, char c) {
    skip_space(ps);
    return ps->p < ps->end && *ps->p == c;
}

static bool fail(Parser *ps, const char *what) {
    skip_space(ps);
    if (ps->p >= ps->end)
        diag_error(ps->d, here(ps), "expected %s, found end of file", what);
    else
        diag_error(ps->d, here(ps), "expected %s", what);
    return false;
}

static bool expect(Parser *ps, char c, const char *what) {
    if (!at(ps, c))
        return fail(ps, what);
    advance(ps);
    return true;
}

static bool is_word(char c) { return isalnum((unsigned char)c) || c == '_' || c == '.'; }

/* A run of word characters into buf; false if there is none. */
static bool word(Parser *ps, char *buf, size_t size, const char *what) {
    skip_space(ps);
    size_t n = 0;
    if (ps->p >= ps->end || !is_word(*ps->p))
        return fail(ps, what);
    while (ps->p < ps->end && is_word(*ps->p)) {
        if (n + 1 < size)
            buf[n++] = *ps->p;
        advance(ps);
    }
    buf[n] = 0;
    return true;
}

static bool keyword(Parser *ps, const char *kw) {
    skip_space(ps);
    size_t n = strlen(kw);
    if ((size_t)(ps->end - ps->p) < n || strncmp(ps->p, kw, n) != 0 ||
        (ps->p + n < ps->end && is_word(ps->p[n])))
        return false;
    for (size_t i = 0; i < n; i++)
        advance(ps);
    return true;
}

static bool number(Parser *ps, double *v) {
    skip_space(ps);
    char buf[64];
    size_t n = 0;
    while (ps->p + n < ps->end && n + 1 < sizeof buf &&
           (is_word(ps->p[n]) || ps->p[n] == '-' || ps->p[n] == '+'))
        n++;
    memcpy(buf, ps->p, n);
    buf[n] = 0;
    char *e;
    errno = 0;
    *v = n ? strtod(buf, &e) : 0;
    if (!n || *e || errno == ERANGE)
        return fail(ps, "a number");
    for (size_t i = 0; i < n; i++)
        advance(ps);
    return true;
}

static bool integer(Parser *ps, int *v, const char *what) {
    SrcLoc loc = here(ps);
    double x;
    if (!number(ps, &x))
        return false;
    if (x != floor(x) || fabs(x) > 1e9) {
        diag_error(ps->d, loc, "expected %s", what);
        return false;
    }
    *v = (int)x;
    return true;
}

/* type = DTYPE "[" [INT ("," INT)*] "]" */
static bool parse_type(Parser *ps, IrType *t) {
    char dt[16];
    SrcLoc loc = here(ps);
    if (!word(ps, dt, sizeof dt, "a type"))
        return false;
    if (strcmp(dt, "f32") == 0) t->dtype = DT_F32;
    else if (strcmp(dt, "f64") == 0) t->dtype = DT_F64;
    else if (strcmp(dt, "i32") == 0) t->dtype = DT_I32;
    else {
        diag_error(ps->d, loc, "unknown element type '%s'", dt);
        return false;
    }
    t->rank = 0;
    if (!expect(ps, '[', "'[' after the element type"))
        return false;
    while (!at(ps, ']')) {
        if (t->rank == IR_MAX_RANK) {
            diag_error(ps->d, here(ps), "rank exceeds %d", IR_MAX_RANK);
            return false;
        }
        if (t->rank && !expect(ps, ',', "',' or ']'"))
            return false;
        if (!integer(ps, &t->dim[t->rank++], "an extent"))
            return false;
    }
    return expect(ps, ']', "']'");
}

/* --- value names --- */

static ValueId lookup(Parser *ps, const char *name) {
    for (int i = ps->nscope - 1; i >= 0; i--)
        if (strcmp(ps->scope[i].name, name) == 0)
            return ps->scope[i].id;
    return IR_NONE;
}

static bool define(Parser *ps, const char *name, ValueId v, SrcLoc loc) {
    if (lookup(ps, name) != IR_NONE) {
        diag_error(ps->d, loc, "value '%%%s' is defined twice", name);
        return false;
    }
    Arena *a = &ps->m->arena;
    ps->scope = arena_grow(a, ps->scope, &ps->scope_cap, ps->nscope + 1, sizeof *ps->scope);
    ps->scope[ps->nscope].name = arena_strdup(a, name);
    ps->scope[ps->nscope++].id = v;
    return true;
}

static bool value_name(Parser *ps, char *buf, size_t size) {
    if (!expect(ps, '%', "a value ('%name')"))
        return false;
    return word(ps, buf, size, "a value name after '%'");
}

static bool operand(Parser *ps, ValueId *v) {
    char name[128];
    SrcLoc loc = here(ps);
    skip_space(ps);
    loc = here(ps);
    if (!value_name(ps, name, sizeof name))
        return false;
    *v = lookup(ps, name);
    if (*v == IR_NONE) {
        diag_error(ps->d, loc, "use of undefined value '%%%s'", name);
        return false;
    }
    return true;
}

/* --- statements --- */

static bool parse_list(Parser *ps, IrNode *n) {
    if (!expect(ps, '[', "'['"))
        return false;
    n->nlist = 0;
    while (!at(ps, ']')) {
        if (n->nlist == IR_MAX_RANK)
            return fail(ps, "']' (at most 6 entries)");
        if (n->nlist && !expect(ps, ',', "',' or ']'"))
            return false;
        if (!integer(ps, &n->list[n->nlist++], "an integer"))
            return false;
    }
    return expect(ps, ']', "']'");
}

static bool parse_attr(Parser *ps, IrNode *n) {
    char key[32];
    SrcLoc loc = here(ps);
    if (!word(ps, key, sizeof key, "an attribute name") || !expect(ps, '=', "'='"))
        return false;
    if (strcmp(key, "axes") == 0 || strcmp(key, "perm") == 0 || strcmp(key, "start") == 0)
        return parse_list(ps, n);
    if (strcmp(key, "value") == 0)
        return number(ps, &n->value);
    if (strcmp(key, "classes") == 0)
        return integer(ps, &n->ival, "a class count");
    if (strcmp(key, "axis") == 0) {
        n->nlist = 1;
        return integer(ps, &n->list[0], "an axis");
    }
    if (strcmp(key, "stride") == 0 || strcmp(key, "pad") == 0) {
        if (ir_op_info[n->op].kind != KIND_CONV) {
            diag_error(ps->d, loc, "attribute '%s' is only for convolutions, not '%s'", key, ir_op_info[n->op].name);
            return false;
        }
        bool stride = key[0] == 's';
        n->nlist = IR_CONV_NATTR;
        return integer(ps, &n->list[stride ? IR_CONV_STRIDE : IR_CONV_PAD], stride ? "a stride" : "a pad");
    }
    diag_error(ps->d, loc, "unknown attribute '%s'", key);
    return false;
}

static bool find_op(const char *name, IrOp *op) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(ir_op_info[i].name, name) == 0 && i != OP_INPUT) {
            *op = (IrOp)i;
            return true;
        }
    return false;
}

/* loc = "loc(" STRING ":" INT ":" INT ")", optional: the op's source
 * location, as `--locations` prints it. */
static bool parse_loc(Parser *ps, SrcLoc *loc) {
    if (!keyword(ps, "loc"))
        return true;
    if (!expect(ps, '(', "'(' after 'loc'") || !expect(ps, '"', "'\"' and a file name"))
        return false;
    const char *start = ps->p;
    while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\n')
        advance(ps);
    char *file = arena_strndup(&ps->m->arena, start, (size_t)(ps->p - start));
    int line, col;
    if (!expect(ps, '"', "'\"' after the file name") || !expect(ps, ':', "':'") ||
        !integer(ps, &line, "a line number") || !expect(ps, ':', "':'") || !integer(ps, &col, "a column") ||
        !expect(ps, ')', "')' after the location"))
        return false;
    *loc = (SrcLoc){file, line, col};
    return true;
}

/* stmt = VALUE "=" OP operands [NUMBER] [attrs] ":" type [loc] */
static bool parse_stmt(Parser *ps, IrFunc *f) {
    char name[128], opname[32];
    skip_space(ps);
    SrcLoc loc = here(ps);
    int phase = ps->phase;      /* markers read ahead belong to the next statement */
    if (!value_name(ps, name, sizeof name) || !expect(ps, '=', "'='"))
        return false;
    skip_space(ps);
    SrcLoc oploc = here(ps);
    IrNode n = {.arg = {IR_NONE, IR_NONE}, .loc = oploc};
    if (!word(ps, opname, sizeof opname, "an op name"))
        return false;
    if (!find_op(opname, &n.op)) {
        diag_error(ps->d, oploc, "unknown op '%s'", opname);
        return false;
    }
    for (int i = 0; i < ir_op_info[n.op].arity; i++)
        if ((i && !expect(ps, ',', "',' and another operand")) || !operand(ps, &n.arg[i]))
            return false;
    if (ir_op_info[n.op].kind == KIND_CONV) {      /* stride 1, pad 0 unless written */
        n.nlist = IR_CONV_NATTR;
        n.list[IR_CONV_STRIDE] = 1;
    }
    if (n.op == OP_CONST && !number(ps, &n.value))
        return false;
    if (at(ps, '{')) {
        advance(ps);
        do {
            if (!parse_attr(ps, &n))
                return false;
        } while (at(ps, ',') && (advance(ps), true));
        if (!expect(ps, '}', "'}' after attributes"))
            return false;
    }
    IrType declared;
    if (!expect(ps, ':', "':' and the result type") || !parse_type(ps, &declared) || !parse_loc(ps, &n.loc))
        return false;
    n.type = declared;
    n.phase = phase;
    ValueId v = ir_append(f, &n, ps->d);
    if (v == IR_NONE)
        return false;
    if (!isdigit((unsigned char)name[0]))
        ir_name(f, v, name);
    if (!ir_type_eq(f->node[v].type, declared)) {
        char a[64], b[64];
        diag_error(ps->d, oploc, "'%s' gives %s, but the declared type is %s", opname,
                   ir_type_str(f->node[v].type, a, sizeof a), ir_type_str(declared, b, sizeof b));
        return false;
    }
    return define(ps, name, v, loc);
}

/* func = "func" "@" NAME "(" args ")" "{" stmt* ret "}" */
static bool parse_func(Parser *ps) {
    char name[128];
    if (!expect(ps, '@', "'@' and the function name") || !word(ps, name, sizeof name, "a function name"))
        return false;
    if (ir_module_find(ps->m, name)) {
        diag_error(ps->d, here(ps), "function '@%s' is defined twice", name);
        return false;
    }
    IrFunc *f = ir_func_new(ps->m, name);
    ps->nscope = 0;
    ps->phase = 0;
    if (!expect(ps, '(', "'('"))
        return false;
    while (!at(ps, ')')) {
        if (f->ninput && !expect(ps, ',', "',' or ')'"))
            return false;
        skip_space(ps);
        SrcLoc loc = here(ps);
        IrType t;
        if (!value_name(ps, name, sizeof name) || !expect(ps, ':', "':' and a type") || !parse_type(ps, &t))
            return false;
        char why[128];
        if (!ir_valid_type(t, why, sizeof why)) {
            diag_error(ps->d, loc, "%s", why);
            return false;
        }
        ValueId v = ir_input(f, name, t, loc);
        if (!define(ps, name, v, loc))
            return false;
    }
    if (!expect(ps, ')', "')'") || !expect(ps, '{', "'{'"))
        return false;
    while (!keyword(ps, "return"))
        if (!parse_stmt(ps, f))
            return false;
    while (at(ps, '%')) {
        ValueId v;
        if (!operand(ps, &v))
            return false;
        ir_output(f, v);
        if (!at(ps, ','))
            break;
        advance(ps);
    }
    return expect(ps, '}', "'}' after the return");
}

/* --- the meta block --- */

typedef bool MetaRule(Parser *ps, MetaConfig *mc);

/* An integer from lo to hi (what names it, for the message). */
static bool meta_int(Parser *ps, long lo, long hi, const char *what, long *v) {
    skip_space(ps);
    SrcLoc loc = here(ps);
    double x;
    if (!number(ps, &x))
        return false;
    if (x != floor(x) || x < (double)lo || x > (double)hi) {
        diag_error(ps->d, loc, "%s must be an integer from %ld to %ld", what, lo, hi);
        return false;
    }
    *v = (long)x;
    return true;
}

static bool meta_positive(Parser *ps, const char *what, double *v) {
    skip_space(ps);
    SrcLoc loc = here(ps);
    if (!number(ps, v))
        return false;
    if (!(*v > 0)) {
        diag_error(ps->d, loc, "%s must be positive", what);
        return false;
    }
    return true;
}

/* "(" KEY "=" NUMBER ("," KEY "=" NUMBER)* ")" with the keys key[0..n) in
 * any order, each at most once; those left out keep their value.  The key
 * "schedule" takes cosine(min_lr = NUMBER) instead, its value min_lr. */
static bool meta_kwargs(Parser *ps, const char *const *key, double *value, int n) {
    if (!expect(ps, '(', "'('"))
        return false;
    bool seen[8] = {0}, any = false;
    while (!at(ps, ')')) {
        char k[32];
        if (any && !expect(ps, ',', "',' or ')'"))
            return false;
        any = true;
        skip_space(ps);
        SrcLoc loc = here(ps);
        if (!word(ps, k, sizeof k, "an argument name") || !expect(ps, '=', "'='"))
            return false;
        int i = 0;
        while (i < n && strcmp(key[i], k) != 0)
            i++;
        if (i == n || seen[i]) {
            diag_error(ps->d, loc, i == n ? "unknown argument '%s'" : "argument '%s' given twice", k);
            return false;
        }
        seen[i] = true;
        if (strcmp(k, "schedule") == 0) {
            static const char *const min_lr[] = {"min_lr"};
            if (!keyword(ps, "cosine"))
                return fail(ps, "cosine(min_lr = M)");
            value[i] = 0;
            if (!meta_kwargs(ps, min_lr, &value[i], 1))
                return false;
        } else if (!number(ps, &value[i]))
            return false;
    }
    return expect(ps, ')', "')'");
}

/* imaml(lambda = L, cg_steps = K): L > 0, K an integer in 1..META_MAX_CG_STEPS */
static bool meta_imaml(Parser *ps, MetaConfig *mc) {
    static const char *const key[] = {"lambda", "cg_steps"};
    double v[2] = {mc->lambda, mc->cg_steps};
    mc->algorithm = ALGO_IMAML;
    skip_space(ps);
    SrcLoc loc = here(ps);
    if (!meta_kwargs(ps, key, v, 2))
        return false;
    if (!(v[0] > 0) || !(v[1] >= 1 && v[1] <= META_MAX_CG_STEPS && v[1] == (int)v[1])) {
        diag_error(ps->d, loc, "imaml needs lambda > 0 and cg_steps an integer from 1 to %d", META_MAX_CG_STEPS);
        return false;
    }
    mc->lambda = v[0];
    mc->cg_steps = (int)v[1];
    return true;
}

/* algorithm = maml | reptile(epsilon = E) | imaml(lambda = L, cg_steps = K) */
static bool meta_algorithm(Parser *ps, MetaConfig *mc) {
    static const char *const key[] = {"epsilon"};
    if (keyword(ps, "maml")) {
        mc->algorithm = ALGO_MAML;
        return true;
    }
    if (keyword(ps, "imaml"))
        return meta_imaml(ps, mc);
    if (!keyword(ps, "reptile"))
        return fail(ps, "maml, reptile(epsilon = E) or imaml(lambda = L, cg_steps = K)");
    mc->algorithm = ALGO_REPTILE;
    skip_space(ps);
    SrcLoc loc = here(ps);
    if (!meta_kwargs(ps, key, &mc->epsilon, 1))
        return false;
    if (!(mc->epsilon > 0)) {
        diag_error(ps->d, loc, "reptile's epsilon must be positive");
        return false;
    }
    return true;
}

static bool meta_inner_steps(Parser *ps, MetaConfig *mc) {
    long v;
    if (!meta_int(ps, 1, META_MAX_INNER_STEPS, "inner_steps", &v))
        return false;
    mc->inner_steps = (int)v;
    return true;
}

/* inner_lr = R | learned(R) | learned_scalar(R) | learned_per_step(R) */
static bool meta_inner_lr(Parser *ps, MetaConfig *mc) {
    mc->inner_lr_kind = keyword(ps, "learned")              ? INNER_LR_LEARNED
                        : keyword(ps, "learned_scalar")     ? INNER_LR_LEARNED_SCALAR
                        : keyword(ps, "learned_per_step")   ? INNER_LR_LEARNED_PER_STEP
                                                            : INNER_LR_FIXED;
    bool call = mc->inner_lr_kind != INNER_LR_FIXED;
    return (!call || expect(ps, '(', "'('")) && meta_positive(ps, "the inner learning rate", &mc->inner_lr) &&
           (!call || expect(ps, ')', "')'"));
}

/* order = second | first | anneal(first_until = N) */
static bool meta_order(Parser *ps, MetaConfig *mc) {
    static const char *const key[] = {"first_until"};
    if (keyword(ps, "second"))
        mc->order = ORDER_SECOND;
    else if (keyword(ps, "first"))
        mc->order = ORDER_FIRST;
    else if (keyword(ps, "anneal")) {
        double n = 0;
        skip_space(ps);
        SrcLoc loc = here(ps);
        if (!meta_kwargs(ps, key, &n, 1))
            return false;
        if (!(n >= 1 && n <= (double)IR_MAX_NUMEL && n == floor(n))) {
            diag_error(ps->d, loc, "anneal needs first_until, an integer from 1 to %ld", (long)IR_MAX_NUMEL);
            return false;
        }
        mc->order = ORDER_ANNEAL;
        mc->first_until = (long)n;
    } else
        return fail(ps, "second, first or anneal(first_until = N)");
    return true;
}

/* multi_step_loss = anneal(N) */
static bool meta_multi_step_loss(Parser *ps, MetaConfig *mc) {
    if (!keyword(ps, "anneal"))
        return fail(ps, "anneal(N)");
    return expect(ps, '(', "'('") && meta_int(ps, 1, (long)IR_MAX_NUMEL, "multi_step_loss's N", &mc->msl_iterations) &&
           expect(ps, ')', "')'");
}

static bool meta_clip_norm(Parser *ps, MetaConfig *mc) { return meta_positive(ps, "clip_norm", &mc->clip_norm); }

/* [NAME, ...]: params of @loss, resolved once it is read */
static bool name_list(Parser *ps, NameList *l) {
    skip_space(ps);
    l->loc = here(ps);
    if (!expect(ps, '[', "'['"))
        return false;
    int cap = 0;
    do {
        char name[128];
        if (!word(ps, name, sizeof name, "a param name"))
            return false;
        l->name = arena_grow(&ps->m->arena, l->name, &cap, l->n + 1, sizeof *l->name);
        l->name[l->n++] = arena_strdup(&ps->m->arena, name);
    } while (at(ps, ',') && (advance(ps), true));
    return expect(ps, ']', "',' or ']'");
}

/* adapt = [NAME, ...] */
static bool meta_adapt(Parser *ps, MetaConfig *mc) { return name_list(ps, &ps->adapt); }

/* eval_mode = transductive | running_stats */
static bool meta_eval_mode(Parser *ps, MetaConfig *mc) {
    if (keyword(ps, "transductive"))
        mc->eval_mode = EVAL_MODE_TRANSDUCTIVE;
    else if (keyword(ps, "running_stats"))
        mc->eval_mode = EVAL_MODE_RUNNING_STATS;
    else
        return fail(ps, "transductive or running_stats");
    return true;
}

/* per_step = [NAME, ...] */
static bool meta_per_step(Parser *ps, MetaConfig *mc) { return name_list(ps, &ps->per_step); }

static bool meta_eval_steps(Parser *ps, MetaConfig *mc) {
    if (!expect(ps, '[', "'['"))
        return false;
    mc->neval_steps = 0;
    do {
        long v;
        if (mc->neval_steps == META_MAX_EVAL_STEPS)
            return fail(ps, "']' (at most 16 step counts)");
        if (!meta_int(ps, mc->neval_steps ? mc->eval_steps[mc->neval_steps - 1] + 1 : 0, 100000,
                      "each of eval_steps (ascending)", &v))
            return false;
        mc->eval_steps[mc->neval_steps++] = (int)v;
    } while (at(ps, ',') && (advance(ps), true));
    return expect(ps, ']', "',' or ']'");
}

static bool meta_meta_batch(Parser *ps, MetaConfig *mc) {
    long v;
    if (!meta_int(ps, 1, META_MAX_BATCH, "meta_batch", &v))
        return false;
    mc->meta_batch = (int)v;
    return true;
}

/* optimizer = adam(lr = .., beta1 = .., beta2 = .., eps = .., weight_decay = ..,
 *                   schedule = cosine(min_lr = ..)) | adamw(the same) | sgd(lr = .., schedule = ..) */
static bool meta_optimizer(Parser *ps, MetaConfig *mc) {
    static const char *const key[] = {"lr", "beta1", "beta2", "eps", "weight_decay", "schedule"};
    static const char *const sgd_key[] = {"lr", "schedule"};
    OptimizerConfig *o = &mc->optimizer;
    double a[6] = {0.001, 0.9, 0.999, 1e-8, 0, NAN}, sgd[2] = {0.001, NAN};
    skip_space(ps);
    SrcLoc loc = here(ps);
    bool adamw = keyword(ps, "adamw");
    if (adamw || keyword(ps, "adam")) {
        if (!meta_kwargs(ps, key, a, 6))
            return false;
        *o = (OptimizerConfig){adamw ? OPT_ADAMW : OPT_ADAM, a[0], a[1], a[2], a[3], a[4], !isnan(a[5]),
                               isnan(a[5]) ? 0 : a[5]};
    } else if (keyword(ps, "sgd")) {
        if (!meta_kwargs(ps, sgd_key, sgd, 2))
            return false;
        *o = (OptimizerConfig){OPT_SGD, sgd[0], 0, 0, 0, 0, !isnan(sgd[1]), isnan(sgd[1]) ? 0 : sgd[1]};
    } else
        return fail(ps, "adam(...), adamw(...) or sgd(lr = L)");
    if (!(o->lr > 0) || (o->kind != OPT_SGD && (!(o->beta1 >= 0 && o->beta1 < 1) ||
                                                 !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0)))) {
        diag_error(ps->d, loc, "optimizer needs lr > 0, 0 <= beta1, beta2 < 1 and eps > 0");
        return false;
    }
    if (!(o->weight_decay >= 0) || !(o->min_lr >= 0)) {
        diag_error(ps->d, loc, "optimizer needs weight_decay >= 0 and min_lr >= 0");
        return false;
    }
    return true;
}

static bool meta_iterations(Parser *ps, MetaConfig *mc) {
    return meta_int(ps, 1, (long)IR_MAX_NUMEL, "iterations", &mc->iterations);
}

static const struct {
    const char *key;
    MetaRule *rule;
} meta_keys[] = {
    {"algorithm", meta_algorithm},   {"inner_steps", meta_inner_steps}, {"inner_lr", meta_inner_lr},
    {"order", meta_order},           {"adapt", meta_adapt},             {"eval_steps", meta_eval_steps},
    {"meta_batch", meta_meta_batch}, {"optimizer", meta_optimizer},     {"iterations", meta_iterations},
    {"multi_step_loss", meta_multi_step_loss}, {"clip_norm", meta_clip_norm},
    {"per_step", meta_per_step},     {"eval_mode", meta_eval_mode},
};
enum { NMETA_KEYS = sizeof meta_keys / sizeof meta_keys[0] };

/* meta = "meta" "{" (KEY "=" mvalue)* "}" (after "meta", which is at loc) */
static bool parse_meta(Parser *ps, SrcLoc loc) {
    MetaConfig mc = ir_meta_defaults();
    mc.loc = loc;
    bool seen[NMETA_KEYS] = {0};
    if (!expect(ps, '{', "'{' after 'meta'"))
        return false;
    while (!at(ps, '}')) {
        char key[32];
        SrcLoc loc = here(ps);
        if (!word(ps, key, sizeof key, "a meta key or '}'"))
            return false;
        int k = 0;
        while (k < NMETA_KEYS && strcmp(meta_keys[k].key, key) != 0)
            k++;
        if (k == NMETA_KEYS || seen[k]) {
            diag_error(ps->d, loc, k == NMETA_KEYS ? "unknown meta key '%s'" : "duplicate meta key '%s'", key);
            return false;
        }
        seen[k] = true;
        if (!expect(ps, '=', "'='") || !meta_keys[k].rule(ps, &mc))
            return false;
    }
    advance(ps);
    ir_module_set_meta(ps->m, &mc);
    return true;
}

/* The names of list l (the meta key `key`) as flags over @loss's params
 * (every argument but the last two, x and y), into *flags. */
static bool resolve_names(Parser *ps, const NameList *l, const char *key, bool **flags) {
    MetaConfig *mc = ps->m->meta;
    const IrFunc *loss = ir_module_find(ps->m, "loss");
    if (!loss || loss->ninput < 2) {
        diag_error(ps->d, l->loc, "'%s' names params of '@loss(params..., x, y)', which is missing", key);
        return false;
    }
    mc->nparam = loss->ninput - 2;
    *flags = arena_alloc(&ps->m->arena, ((size_t)mc->nparam + 1) * sizeof **flags);
    for (int i = 0; i < l->n; i++) {
        int p = 0;
        while (p < mc->nparam && strcmp(loss->node[loss->input[p]].name, l->name[i]) != 0)
            p++;
        if (p == mc->nparam || (*flags)[p]) {
            diag_error(ps->d, l->loc, p == mc->nparam ? "'%s' names '%s', which is not a param of '@loss'"
                                                      : "'%s' lists '%s' twice", key, l->name[i]);
            return false;
        }
        (*flags)[p] = true;
    }
    return true;
}

/* The module's real type: that of the first f32/f64 type written. */
static DType first_real(const char *text, size_t len) {
    for (size_t i = 0; i + 3 < len; i++)
        if (text[i] == 'f' && (strncmp(text + i, "f32[", 4) == 0 || strncmp(text + i, "f64[", 4) == 0))
            return text[i + 1] == '6' ? DT_F64 : DT_F32;
    return DT_F32;
}

IrModule *ir_parse(const char *file, const char *text, size_t len, Diag *d) {
    Parser ps = {.file = file, .p = text, .end = text + len, .line = 1, .col = 1, .d = d};
    ps.m = ir_module_new(first_real(text, len));
    diag_add_source(d, file, text, len);
    skip_space(&ps);
    SrcLoc meta = here(&ps);
    if (keyword(&ps, "meta") && !parse_meta(&ps, meta)) {
        ir_module_free(ps.m);
        return NULL;
    }
    for (;;) {
        skip_space(&ps);
        if (ps.p >= ps.end && (!ps.adapt.n || resolve_names(&ps, &ps.adapt, "adapt", &ps.m->meta->adapt)) &&
            (!ps.per_step.n || resolve_names(&ps, &ps.per_step, "per_step", &ps.m->meta->per_step)))
            return ps.m;
        if (ps.p >= ps.end)
            break;
        if (!keyword(&ps, "func")) {
            fail(&ps, ps.m->nfunc || ps.m->meta ? "'func'" : "'meta' or 'func'");
            break;
        }
        if (!parse_func(&ps))
            break;
    }
    ir_module_free(ps.m);
    return NULL;
}
