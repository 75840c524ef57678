/* The syntax tree of a .mdl file.
 *
 * frontend/parser.y builds it into an arena; nothing in it is freed on its
 * own.  One struct per kind in a tagged union.  Every node carries a source
 * location: declarations point at their name, operators at the operator,
 * calls at the callee, everything else at its first token. */
#ifndef MAMLC_AST_H
#define MAMLC_AST_H

#include <stdbool.h>
#include <stdio.h>

#include "../base/arena.h"
#include "../base/diag.h"

/* Deepest expression the parser accepts, counting brackets and operators. */
#define AST_MAX_DEPTH 1000

typedef enum {
    /* expressions */
    AST_NUM,        /* 10, 0.5, 1e-3 */
    AST_STR,        /* "text" (task arguments only) */
    AST_NAME,       /* x */
    AST_LIST,       /* [a, b, ...] */
    AST_CALL,       /* f(a, k = b) */
    AST_KWARG,      /* k = b, in calls, task arguments and the meta block */
    AST_NEG,        /* -a */
    AST_BINARY,     /* a + b, a @ b, a ^ b, a == b, ... */
    /* statements */
    AST_ASSIGN,     /* name = e; */
    AST_RETURN,     /* return e; */
    /* declarations and their parts */
    AST_DIM,        /* dim N = e; */
    AST_PARAM,      /* param W : [..] = init; */
    AST_SHAPE,      /* [d1, ..., dn] or i32[d1, ..., dn] */
    AST_DEF,        /* def f(a, b) { ... } */
    AST_TASK,       /* task kind(args) { lines; fields } */
    AST_FIELD,      /* support x : [K, 1] */
    AST_META,       /* meta { key = value; ... } */
    AST_PROGRAM,    /* the whole file */
} AstKind;

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV, BIN_MATMUL, BIN_POW, BIN_EQ } AstBinOp;

typedef struct Ast Ast;

/* A growable array of nodes in the tree's arena. */
typedef struct {
    Ast **item;
    int n, cap;
} AstList;

struct Ast {
    AstKind kind;
    SrcLoc loc;
    int depth;                  /* nesting depth of an expression; 1 for a leaf */
    union {
        struct {
            double value;
            bool is_int;        /* written without '.' or exponent */
            const char *text;   /* as written */
        } num;
        struct { const char *value; } str;          /* without the quotes */
        struct { const char *id; } name;
        struct { AstList item; } list;
        struct {
            const char *callee;
            AstList arg;        /* expressions and AST_KWARGs, as written */
        } call;
        struct { const char *key; Ast *value; } kwarg;
        struct { Ast *operand; } neg;
        struct { AstBinOp op; Ast *lhs, *rhs; } binary;
        struct { const char *name; Ast *value; } assign;
        struct { Ast *value; } ret;
        struct { const char *name; Ast *value; } dim;
        struct {
            const char *name;
            Ast *shape;         /* AST_SHAPE */
            Ast *init;          /* a name (he) or a call (normal(0.01)) */
            Ast *option;        /* the name after the init (per_step), or NULL */
        } param;
        struct {
            const char *dtype;  /* element type written before '[', or NULL: real */
            AstList extent;     /* dim expressions */
        } shape;
        struct {
            const char *name;
            AstList arg;        /* AST_NAMEs */
            AstList body;       /* AST_ASSIGNs, then one AST_RETURN */
        } def;
        struct {
            const char *kind;   /* sinusoid, external, ... */
            AstList arg;        /* AST_KWARGs */
            AstList body;       /* AST_ASSIGNs: a task family's lines */
            AstList field;      /* AST_FIELDs */
        } task;
        struct {
            const char *set;    /* "support" or "query", as written (checked later) */
            SrcLoc set_loc;
            const char *name;   /* x or y */
            Ast *type;          /* AST_SHAPE */
        } field;
        struct { AstList entry; } meta;             /* AST_KWARGs */
        struct { AstList decl; } program;
    };
};

/* A zeroed node of `kind` at loc, depth 1. */
Ast *ast_new(Arena *a, AstKind kind, SrcLoc loc);
/* Append n to l, growing it in the arena. */
void ast_list_push(Arena *a, AstList *l, Ast *n);
/* "+", "-", "*", "/", "@", "^" or "==". */
const char *ast_binop_name(AstBinOp op);

/* Parse `text` (len bytes, NULs allowed) of `file`.  Returns the AST_PROGRAM
 * in arena a, or NULL after reporting every error through d. */
Ast *ast_parse(Arena *a, const char *file, const char *text, size_t len, Diag *d);

/* Print n and its children, one node per line, indented two spaces a level:
 *   Binary + <18:32>
 * (kind, details, <line:col>). */
void ast_dump(FILE *out, const Ast *n, int indent);

/* A string-to-int hash map; keys are borrowed, not copied.  Zero-initialise
 * to start, ast_map_free to release. */
typedef struct {
    const char **key;
    int *val;
    int n, cap;
} AstMap;

/* Insert key or replace its value. */
void ast_map_put(AstMap *m, const char *key, int val);
/* The value of key, or NULL. */
int *ast_map_get(const AstMap *m, const char *key);
void ast_map_free(AstMap *m);

#endif
