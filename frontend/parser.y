/* The .mdl parser: tokens to the AST of frontend/ast.h.
 *
 * A pure LALR(1) parser over the reentrant scanner of frontend/lexer.l.  The
 * grammar is written above each rule.  Values (meta entries, task arguments,
 * initialisers) share the expression grammar; frontend/model.c decides what
 * each place accepts.  A syntax error names what was expected and ends the
 * parse; nothing is printed except through Diag. */
%code top {
#include <limits.h>
#include <stdlib.h>
#include <string.h>
}

%code requires {
#include "parse.h"
}

%code {
#include "lexer.h"

static void ast_yyerror(AST_YYLTYPE *loc, void *scanner, AstParser *p, const char *msg);
static SrcLoc at(AstParser *p, AST_YYLTYPE l);
static Ast *node(AstParser *p, AstKind kind, AST_YYLTYPE l);
static Ast *nest(AstParser *p, Ast *n, const Ast *child);
static void push(AstParser *p, AstList *l, Ast *n);
static Ast *binary(AstParser *p, AstBinOp op, Ast *lhs, Ast *rhs, AST_YYLTYPE l);
static Ast *kwarg(AstParser *p, const char *key, Ast *value, AST_YYLTYPE l);
static Ast *ret(AstParser *p, Ast *value, AST_YYLTYPE l);
}

%define api.prefix {ast_yy}
%define api.token.prefix {TOK_}
%define api.pure full
%define parse.error custom
%define parse.lac full
%locations
%param {void *scanner}
%parse-param {AstParser *p}
%expect 0

%union {
    Ast *node;
    AstList list;
    const char *id;
}

%token <id> IDENT "name"
%token <node> NUMBER "number" STRING "string"
%token DIM "dim" PARAM "param" DEF "def" RETURN "return" TASK "task" META "meta"
%token LPAREN "(" RPAREN ")" LBRACK "[" RBRACK "]" LBRACE "{" RBRACE "}"
%token COMMA "," SEMI ";" COLON ":" ASSIGN "=" EQEQ "=="
%token PLUS "+" MINUS "-" STAR "*" SLASH "/" AT "@" CARET "^"

%type <node> decl dim_decl param_decl param_option def_decl task_decl task_lines meta_decl shape type field
%type <node> stmt return expr sum product unary power primary arg kwarg
%type <list> decls names names_opt body stmts field_list kwargs kwargs_opt entries task_args
%type <list> exprs exprs_opt args args_opt

%%

/* program = decl* */
program
    : decls                     { p->program->program.decl = $1; }
    ;

decls
    : %empty                    { $$ = (AstList){0}; }
    | decls decl                { $$ = $1; push(p, &$$, $2); }
    ;

/* decl = dim_decl | param_decl | def_decl | task_decl | meta_decl */
decl
    : dim_decl | param_decl | def_decl | task_decl | meta_decl
    ;

/* dim_decl = "dim" NAME "=" expr ";" */
dim_decl
    : "dim" { p->ctx = "dim declaration"; } IDENT "=" expr ";" {
          $$ = node(p, AST_DIM, @3);
          $$->dim.name = $3;
          $$->dim.value = $5;
      }
    ;

/* param_decl = "param" NAME ":" type "=" expr [NAME] ";"   (NAME: per_step) */
param_decl
    : "param" { p->ctx = "param declaration"; } IDENT ":" type "=" expr param_option ";" {
          $$ = node(p, AST_PARAM, @3);
          $$->param.name = $3;
          $$->param.shape = $5;
          $$->param.init = $7;
          $$->param.option = $8;
      }
    ;

param_option
    : %empty                    { $$ = NULL; }
    | IDENT                     { $$ = node(p, AST_NAME, @1); $$->name.id = $1; }
    ;

/* shape = "[" [expr ("," expr)*] "]" */
shape
    : "[" exprs_opt "]"         { $$ = node(p, AST_SHAPE, @1); $$->shape.extent = $2; }
    ;

/* def_decl = "def" NAME "(" [NAME ("," NAME)*] ")" body */
def_decl
    : "def" IDENT { p->ctx = arena_printf(p->arena, "definition of '%s'", $2); }
      "(" names_opt ")" body {
          $$ = node(p, AST_DEF, @2);
          $$->def.name = $2;
          $$->def.arg = $5;
          $$->def.body = $7;
      }
    ;

names_opt
    : %empty                    { $$ = (AstList){0}; }
    | names
    ;

names
    : IDENT                     { $$ = (AstList){0}; push(p, &$$, node(p, AST_NAME, @1)); $$.item[0]->name.id = $1; }
    | names "," IDENT           { $$ = $1; Ast *n = node(p, AST_NAME, @3); n->name.id = $3; push(p, &$$, n); }
    ;

/* body = "{" stmt* return "}" | "=" expr ";" */
body
    : "{" stmts return "}"      { $$ = $2; push(p, &$$, $3); }
    | "=" expr ";"              { $$ = (AstList){0}; push(p, &$$, ret(p, $2, @2)); }
    ;

stmts
    : %empty                    { $$ = (AstList){0}; }
    | stmts stmt                { $$ = $1; push(p, &$$, $2); }
    ;

/* stmt = NAME "=" expr ";" */
stmt
    : IDENT "=" { p->ctx = "assignment"; } expr ";" {
          $$ = node(p, AST_ASSIGN, @1);
          $$->assign.name = $1;
          $$->assign.value = $4;
      }
    ;

/* return = "return" expr ";" */
return
    : "return" { p->ctx = "return statement"; } expr ";"  { $$ = ret(p, $3, @1); }
    ;

/* task_decl = "task" NAME ["(" [kwarg ("," kwarg)*] ")"] "{" task_line* "}"
 * task_line = stmt                            a line of a task family: x = ..., y = ...
 *           | NAME field ("," field)* ";"     NAME: support or query
 * (frontend/model.c checks that a family's lines come before its fields) */
task_decl
    : "task" { p->ctx = "task declaration"; } IDENT task_args "{" task_lines "}" {
          $$ = $6;
          $$->loc = at(p, @3);
          $$->task.kind = $3;
          $$->task.arg = $4;
      }
    ;

task_args
    : %empty                    { $$ = (AstList){0}; }
    | "(" kwargs_opt ")"        { $$ = $2; }
    ;

task_lines
    : %empty                    { $$ = node(p, AST_TASK, @$); }
    | task_lines stmt           { $$ = $1; push(p, &$$->task.body, $2); }
    | task_lines IDENT { p->ctx = "task fields"; } field_list ";" {
          $$ = $1;
          for (int i = 0; i < $4.n; i++) {
              $4.item[i]->field.set = $2;
              $4.item[i]->field.set_loc = at(p, @2);
              push(p, &$$->task.field, $4.item[i]);
          }
      }
    ;

field_list
    : field                     { $$ = (AstList){0}; push(p, &$$, $1); }
    | field_list "," field      { $$ = $1; push(p, &$$, $3); }
    ;

/* field = NAME ":" type */
field
    : IDENT ":" type {
          $$ = node(p, AST_FIELD, @1);
          $$->field.name = $1;
          $$->field.type = $3;
      }
    ;

/* type = [NAME] shape           e.g. [K, 1] or i32[K] */
type
    : shape
    | IDENT shape               { $$ = $2; $$->shape.dtype = $1; $$->loc = at(p, @1); }
    ;

/* meta_decl = "meta" "{" (NAME "=" expr ";")* "}" */
meta_decl
    : "meta" { p->ctx = "meta block"; } "{" entries "}" {
          $$ = node(p, AST_META, @1);
          $$->meta.entry = $4;
      }
    ;

entries
    : %empty                    { $$ = (AstList){0}; }
    | entries IDENT "=" { p->ctx = arena_printf(p->arena, "meta entry '%s'", $2); } expr ";" {
          $$ = $1;
          push(p, &$$, kwarg(p, $2, $5, @2));
      }
    ;

kwargs_opt
    : %empty                    { $$ = (AstList){0}; }
    | kwargs
    ;

kwargs
    : kwarg                     { $$ = (AstList){0}; push(p, &$$, $1); }
    | kwargs "," kwarg          { $$ = $1; push(p, &$$, $3); }
    ;

/* kwarg = NAME "=" expr */
kwarg
    : IDENT "=" expr            { $$ = kwarg(p, $1, $3, @1); }
    ;

/* expr = sum ["==" sum] */
expr
    : sum
    | sum "==" sum              { $$ = binary(p, BIN_EQ, $1, $3, @2); }
    ;

/* sum = product (("+" | "-") product)* */
sum
    : product
    | sum "+" product           { $$ = binary(p, BIN_ADD, $1, $3, @2); }
    | sum "-" product           { $$ = binary(p, BIN_SUB, $1, $3, @2); }
    ;

/* product = unary (("*" | "/" | "@") unary)* */
product
    : unary
    | product "*" unary         { $$ = binary(p, BIN_MUL, $1, $3, @2); }
    | product "/" unary         { $$ = binary(p, BIN_DIV, $1, $3, @2); }
    | product "@" unary         { $$ = binary(p, BIN_MATMUL, $1, $3, @2); }
    ;

/* unary = "-" unary | power */
unary
    : "-" unary                 { $$ = nest(p, node(p, AST_NEG, @1), $2); $$->neg.operand = $2; }
    | power
    ;

/* power = primary ["^" unary]          (right-associative: a^b^c = a^(b^c)) */
power
    : primary
    | primary "^" unary         { $$ = binary(p, BIN_POW, $1, $3, @2); }
    ;

/* primary = NUMBER | STRING | NAME | NAME "(" [arg ("," arg)*] ")"
 *         | "(" expr ")" | "[" [expr ("," expr)*] "]" */
primary
    : NUMBER
    | STRING
    | IDENT                     { $$ = node(p, AST_NAME, @1); $$->name.id = $1; }
    | IDENT "(" args_opt ")" {
          $$ = node(p, AST_CALL, @1);
          $$->call.callee = $1;
          $$->call.arg = $3;
          for (int i = 0; i < $3.n; i++)
              nest(p, $$, $3.item[i]);
      }
    | "(" expr ")"              { $$ = $2; }
    | "[" exprs_opt "]" {
          $$ = node(p, AST_LIST, @1);
          $$->list.item = $2;
          for (int i = 0; i < $2.n; i++)
              nest(p, $$, $2.item[i]);
      }
    ;

args_opt
    : %empty                    { $$ = (AstList){0}; }
    | args
    ;

args
    : arg                       { $$ = (AstList){0}; push(p, &$$, $1); }
    | args "," arg              { $$ = $1; push(p, &$$, $3); }
    ;

/* arg = expr | NAME "=" expr */
arg
    : expr
    | kwarg
    ;

exprs_opt
    : %empty                    { $$ = (AstList){0}; }
    | exprs
    ;

exprs
    : expr                      { $$ = (AstList){0}; push(p, &$$, $1); }
    | exprs "," expr            { $$ = $1; push(p, &$$, $3); }
    ;

%%

static SrcLoc at(AstParser *p, AST_YYLTYPE l) { return ast_loc(p, l.first_line, l.first_column); }

static Ast *node(AstParser *p, AstKind kind, AST_YYLTYPE l) { return ast_new(p->arena, kind, at(p, l)); }

/* n holds child: n is at least one level deeper.  Past AST_MAX_DEPTH the
 * first such node is reported (later ones quietly), so that no later phase
 * recurses deeper than that. */
static Ast *nest(AstParser *p, Ast *n, const Ast *child) {
    if (child->depth >= n->depth)
        n->depth = child->depth + 1;
    if (n->depth > AST_MAX_DEPTH) {
        n->depth = AST_MAX_DEPTH + 1;
        if (!p->too_deep)
            diag_error(p->d, n->loc, "expression nested too deeply (more than %d levels)", AST_MAX_DEPTH);
        p->too_deep = true;
    }
    return n;
}

static void push(AstParser *p, AstList *l, Ast *n) { ast_list_push(p->arena, l, n); }

static Ast *binary(AstParser *p, AstBinOp op, Ast *lhs, Ast *rhs, AST_YYLTYPE l) {
    Ast *n = node(p, AST_BINARY, l);
    n->binary.op = op;
    n->binary.lhs = lhs;
    n->binary.rhs = rhs;
    nest(p, n, lhs);
    return nest(p, n, rhs);
}

static Ast *kwarg(AstParser *p, const char *key, Ast *value, AST_YYLTYPE l) {
    Ast *n = node(p, AST_KWARG, l);
    n->kwarg.key = key;
    n->kwarg.value = value;
    return nest(p, n, value);
}

static Ast *ret(AstParser *p, Ast *value, AST_YYLTYPE l) {
    Ast *n = node(p, AST_RETURN, l);
    n->ret.value = value;
    return n;
}

/* --- syntax errors --- */

/* How a token is named in "expected ..." lists. */
static const char *token_desc(yysymbol_kind_t s, char *buf, size_t size) {
    switch (s) {
    case YYSYMBOL_IDENT: return "a name";
    case YYSYMBOL_NUMBER: return "a number";
    case YYSYMBOL_STRING: return "a string";
    case YYSYMBOL_YYEOF: return "end of file";
    default: break;
    }
    snprintf(buf, size, "'%s'", yysymbol_name(s));
    return buf;
}

static bool expects(const yysymbol_kind_t *exp, int n, yysymbol_kind_t s) {
    for (int i = 0; i < n; i++)
        if (exp[i] == s)
            return true;
    return false;
}

/* "'a', 'b' or 'c'" into buf; false when there are too many to list. */
static bool list_expected(const yysymbol_kind_t *exp, int n, char *buf, size_t size) {
    yysymbol_kind_t keep[YYNTOKENS];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (exp[i] != YYSYMBOL_YYEOF || n == 1)
            keep[k++] = exp[i];
    if (k == 0 || k > 5)
        return false;
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < k && used < size; i++) {
        char tmp[32];
        const char *sep = i == 0 ? "" : i == k - 1 ? " or " : ", ";
        used += (size_t)snprintf(buf + used, size - used, "%s%s", sep, token_desc(keep[i], tmp, sizeof tmp));
    }
    return true;
}

/* The innermost bracket still open before the unexpected token. */
static const AstBracket *open_bracket(const AstParser *p) {
    int top = p->nbracket - 1 - (p->last_opened ? 1 : 0);
    return top >= 0 ? &p->bracket[top] : NULL;
}

static yysymbol_kind_t closer_of(const AstBracket *b) {
    return b->open == '(' ? YYSYMBOL_RPAREN : b->open == '[' ? YYSYMBOL_RBRACK : YYSYMBOL_RBRACE;
}

/* Messages say what was expected (parse.lac makes that list exact):
 *   expected ';' after param declaration       (at the end of the previous token)
 *   expected an expression, found ';'
 *   expected ',' or ')', found 'x'             (+ a note at the open bracket)
 *   expected 'dim', 'param', 'def', 'task' or 'meta', found '}' */
static int yyreport_syntax_error(const yypcontext_t *ctx, void *scanner, AstParser *p) {
    yysymbol_kind_t exp[YYNTOKENS];
    int n = yypcontext_expected_tokens(ctx, exp, YYNTOKENS);
    if (n < 0)
        return n;
    SrcLoc loc = p->last_eof ? p->prev_end : at(p, *yypcontext_location(ctx));
    const AstBracket *b = open_bracket(p);
    char found[48], list[256];
    if (p->last_eof)
        snprintf(found, sizeof found, "end of file");
    else if (yypcontext_token(ctx) == YYSYMBOL_STRING)
        snprintf(found, sizeof found, "a string");
    else
        snprintf(found, sizeof found, "'%s'", p->last_text);
    if (expects(exp, n, YYSYMBOL_SEMI)) {
        diag_error(p->d, p->prev_end, "expected ';' after %s", p->ctx);
    } else if (expects(exp, n, YYSYMBOL_NUMBER) && expects(exp, n, YYSYMBOL_IDENT)) {
        diag_error(p->d, loc, "expected an expression, found %s", found);
    } else if (list_expected(exp, n, list, sizeof list)) {
        diag_error(p->d, loc, "expected %s, found %s", list, found);
    } else if (b && expects(exp, n, closer_of(b))) {
        char close = b->open == '(' ? ')' : b->open == '[' ? ']' : '}';
        diag_error(p->d, loc, "expected %s'%c', found %s", expects(exp, n, YYSYMBOL_COMMA) ? "',' or " : "",
                   close, found);
    } else {
        diag_error(p->d, loc, "unexpected %s", found);
    }
    if (b && expects(exp, n, closer_of(b)))
        diag_note(p->d, b->loc, "to match this '%c'", b->open);
    return 0;
}

/* Bison calls this only when its stack is full ("memory exhausted"), which
 * takes input nested beyond what the depth checks above allow. */
static void ast_yyerror(AST_YYLTYPE *loc, void *scanner, AstParser *p, const char *msg) {
    diag_error(p->d, at(p, *loc), "input nested too deeply for the parser (%s)", msg);
}

Ast *ast_parse(Arena *a, const char *file, const char *text, size_t len, Diag *d) {
    if (len > INT_MAX - 2) {
        diag_error(d, (SrcLoc){file, 0, 0}, "file is too large (%zu bytes)", len);
        return NULL;
    }
    AstParser *p = calloc(1, sizeof *p);
    yyscan_t scanner;
    if (!p || ast_yylex_init_extra(p, &scanner)) {
        free(p);
        diag_error(d, (SrcLoc){file, 0, 0}, "out of memory");
        return NULL;
    }
    p->arena = a;
    p->d = d;
    p->file = file;
    p->line = p->col = 1;
    p->ctx = "declaration";
    p->program = ast_new(a, AST_PROGRAM, (SrcLoc){file, 1, 1});
    int errors = d->nerrors;
    YY_BUFFER_STATE buf = ast_yy_scan_bytes(text, (int)len, scanner);
    int rc = ast_yyparse(scanner, p);
    ast_yy_delete_buffer(buf, scanner);
    ast_yylex_destroy(scanner);
    Ast *prog = p->program;
    free(p);
    if (rc == 0 && d->nerrors == errors && prog->program.decl.n == 0)
        diag_error(d, prog->loc, "empty model: expected dim, param, def, task or meta");
    return rc == 0 && d->nerrors == errors ? prog : NULL;
}
