/* State shared by the scanner (frontend/lexer.l) and the parser
 * (frontend/parser.y) while one file is parsed.  Private to those two. */
#ifndef MAMLC_PARSE_H
#define MAMLC_PARSE_H

#include "ast.h"

/* An open bracket not yet closed, for "to match this '('" notes. */
typedef struct {
    char open;                  /* '(', '[' or '{' */
    SrcLoc loc;
} AstBracket;

typedef struct {
    Arena *arena;               /* where nodes and names go */
    Diag *d;
    const char *file;
    int line, col;              /* position of the next byte to scan */
    SrcLoc prev_end;            /* just past the token before the last one scanned */
    SrcLoc last_end;            /* just past the last token scanned */
    char last_text[32];         /* the last token scanned, cut short, for messages */
    bool last_eof;              /* the last token was the end of input */
    bool last_opened;           /* the last token was an opening bracket */
    const char *ctx;            /* construct being parsed: "dim declaration", ... */
    AstBracket bracket[AST_MAX_DEPTH];
    int nbracket;
    bool too_deep;              /* the nesting error was reported */
    Ast *program;               /* the result */
} AstParser;

/* The location of a token that starts at line:col. */
static inline SrcLoc ast_loc(const AstParser *p, int line, int col) {
    return (SrcLoc){p->file, line, col};
}

#endif
