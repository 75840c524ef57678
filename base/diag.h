/* Diagnostics: every error of the compiler goes through here, in the form
 *   file:line:col: error: message
 *     source line
 *     ^
 * Library code reports and returns a status; only main() decides to exit. */
#ifndef MAMLC_DIAG_H
#define MAMLC_DIAG_H

#include <stdio.h>

typedef struct {
    const char *file;   /* path as given by the user; NULL for no location */
    int line, col;      /* 1-based; 0 when unknown */
} SrcLoc;

typedef struct DiagSource DiagSource;

typedef struct {
    FILE *out;          /* where messages go (stderr by default) */
    int nerrors;
    int max_errors;     /* stop printing after this many (0: 20) */
    DiagSource *sources;/* registered file texts, for the caret line */
} Diag;

/* A Diag writing to `out`. */
void diag_init(Diag *d, FILE *out);
void diag_free(Diag *d);

/* Remember the text of `file` so errors in it can show the source line.
 * The text is copied. */
void diag_add_source(Diag *d, const char *file, const char *text, size_t len);

/* Report an error at `loc` (printf-style); counts it in d->nerrors. */
void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A warning at `loc` ("warning: ..."), printed like an error with its
 * source line and caret, but not counted: it never fails a compile. */
void diag_warning(Diag *d, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, but a note attached to the previous error ("note: ..."). */
void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
