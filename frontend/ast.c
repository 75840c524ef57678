/* AST nodes, lists, the tree printer (mamlc --emit=ast) and a small string
 * map used by the checker and the lowering. */
#include "ast.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

Ast *ast_new(Arena *a, AstKind kind, SrcLoc loc) {
    Ast *n = arena_alloc(a, sizeof *n);
    n->kind = kind;
    n->loc = loc;
    n->depth = 1;
    return n;
}

void ast_list_push(Arena *a, AstList *l, Ast *n) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        Ast **item = arena_alloc(a, (size_t)cap * sizeof *item);
        if (l->n)
            memcpy(item, l->item, (size_t)l->n * sizeof *item);
        l->item = item;
        l->cap = cap;
    }
    l->item[l->n++] = n;
}

const char *ast_binop_name(AstBinOp op) {
    static const char *const name[] = {
        [BIN_ADD] = "+", [BIN_SUB] = "-", [BIN_MUL] = "*", [BIN_DIV] = "/",
        [BIN_MATMUL] = "@", [BIN_POW] = "^", [BIN_EQ] = "==",
    };
    return name[op];
}

/* --- printer --- */

static void line_start(FILE *out, int indent) {
    for (int i = 0; i < indent; i++)
        fputs("  ", out);
}

static void line_end(FILE *out, SrcLoc loc) { fprintf(out, " <%d:%d>\n", loc.line, loc.col); }

static void dump_list(FILE *out, const AstList *l, int indent) {
    for (int i = 0; i < l->n; i++)
        ast_dump(out, l->item[i], indent);
}

/* The part of a line after the node's kind name. */
static void dump_details(FILE *out, const Ast *n) {
    switch (n->kind) {
    case AST_NUM: fprintf(out, " %s", n->num.text); break;
    case AST_STR: fprintf(out, " \"%s\"", n->str.value); break;
    case AST_NAME: fprintf(out, " %s", n->name.id); break;
    case AST_CALL: fprintf(out, " %s", n->call.callee); break;
    case AST_KWARG: fprintf(out, " %s", n->kwarg.key); break;
    case AST_BINARY: fprintf(out, " %s", ast_binop_name(n->binary.op)); break;
    case AST_ASSIGN: fprintf(out, " %s", n->assign.name); break;
    case AST_DIM: fprintf(out, " %s", n->dim.name); break;
    case AST_PARAM: fprintf(out, " %s", n->param.name); break;
    case AST_SHAPE:
        if (n->shape.dtype)
            fprintf(out, " %s", n->shape.dtype);
        break;
    case AST_DEF:
        fprintf(out, " %s(", n->def.name);
        for (int i = 0; i < n->def.arg.n; i++)
            fprintf(out, "%s%s", i ? ", " : "", n->def.arg.item[i]->name.id);
        fputc(')', out);
        break;
    case AST_TASK: fprintf(out, " %s", n->task.kind); break;
    case AST_FIELD: fprintf(out, " %s %s", n->field.set, n->field.name); break;
    default: break;
    }
}

static void dump_children(FILE *out, const Ast *n, int indent) {
    switch (n->kind) {
    case AST_LIST: dump_list(out, &n->list.item, indent); break;
    case AST_CALL: dump_list(out, &n->call.arg, indent); break;
    case AST_KWARG: ast_dump(out, n->kwarg.value, indent); break;
    case AST_NEG: ast_dump(out, n->neg.operand, indent); break;
    case AST_BINARY:
        ast_dump(out, n->binary.lhs, indent);
        ast_dump(out, n->binary.rhs, indent);
        break;
    case AST_ASSIGN: ast_dump(out, n->assign.value, indent); break;
    case AST_RETURN: ast_dump(out, n->ret.value, indent); break;
    case AST_DIM: ast_dump(out, n->dim.value, indent); break;
    case AST_PARAM:
        ast_dump(out, n->param.shape, indent);
        ast_dump(out, n->param.init, indent);
        break;
    case AST_SHAPE: dump_list(out, &n->shape.extent, indent); break;
    case AST_DEF: dump_list(out, &n->def.body, indent); break;
    case AST_TASK:
        dump_list(out, &n->task.arg, indent);
        dump_list(out, &n->task.body, indent);
        dump_list(out, &n->task.field, indent);
        break;
    case AST_FIELD: ast_dump(out, n->field.type, indent); break;
    case AST_META: dump_list(out, &n->meta.entry, indent); break;
    case AST_PROGRAM: dump_list(out, &n->program.decl, indent); break;
    default: break;
    }
}

void ast_dump(FILE *out, const Ast *n, int indent) {
    static const char *const kind[] = {
        [AST_NUM] = "Num", [AST_STR] = "Str", [AST_NAME] = "Name", [AST_LIST] = "List",
        [AST_CALL] = "Call", [AST_KWARG] = "KwArg", [AST_NEG] = "Neg", [AST_BINARY] = "Binary",
        [AST_ASSIGN] = "Assign", [AST_RETURN] = "Return", [AST_DIM] = "Dim",
        [AST_PARAM] = "Param", [AST_SHAPE] = "Shape", [AST_DEF] = "Def", [AST_TASK] = "Task",
        [AST_FIELD] = "Field", [AST_META] = "Meta", [AST_PROGRAM] = "Model",
    };
    line_start(out, indent);
    fputs(kind[n->kind], out);
    dump_details(out, n);
    if (n->kind == AST_PROGRAM)
        fputc('\n', out);
    else
        line_end(out, n->loc);
    dump_children(out, n, indent + 1);
}

/* --- string map --- */

static uint32_t hash_str(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "mamlc: out of memory\n");
        abort();
    }
    return p;
}

/* The slot holding key, or the empty slot where it would go. */
static int map_slot(const AstMap *m, const char *key) {
    uint32_t mask = (uint32_t)m->cap - 1, i = hash_str(key) & mask;
    while (m->key[i] && strcmp(m->key[i], key) != 0)
        i = (i + 1) & mask;
    return (int)i;
}

static void map_grow(AstMap *m) {
    AstMap big = {.cap = m->cap ? 2 * m->cap : 16};
    big.key = xcalloc((size_t)big.cap, sizeof *big.key);
    big.val = xcalloc((size_t)big.cap, sizeof *big.val);
    for (int i = 0; i < m->cap; i++)
        if (m->key[i]) {
            int s = map_slot(&big, m->key[i]);
            big.key[s] = m->key[i];
            big.val[s] = m->val[i];
            big.n++;
        }
    ast_map_free(m);
    *m = big;
}

void ast_map_put(AstMap *m, const char *key, int val) {
    if (2 * (m->n + 1) > m->cap)
        map_grow(m);
    int s = map_slot(m, key);
    if (!m->key[s]) {
        m->key[s] = key;
        m->n++;
    }
    m->val[s] = val;
}

int *ast_map_get(const AstMap *m, const char *key) {
    if (!m->cap)
        return NULL;
    int s = map_slot(m, key);
    return m->key[s] ? &m->val[s] : NULL;
}

void ast_map_free(AstMap *m) {
    free(m->key);
    free(m->val);
    *m = (AstMap){0};
}
