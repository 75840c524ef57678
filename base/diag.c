#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct DiagSource {
    DiagSource *next;
    char *file;
    char *text;
    size_t len;
};

void diag_init(Diag *d, FILE *out) {
    memset(d, 0, sizeof *d);
    d->out = out ? out : stderr;
    d->max_errors = 20;
}

void diag_free(Diag *d) {
    for (DiagSource *s = d->sources, *next; s; s = next) {
        next = s->next;
        free(s->file);
        free(s->text);
        free(s);
    }
    d->sources = NULL;
}

void diag_add_source(Diag *d, const char *file, const char *text, size_t len) {
    DiagSource *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->file = strdup(file);
    s->text = malloc(len + 1);
    if (!s->file || !s->text) {
        free(s->file);
        free(s->text);
        free(s);
        return;
    }
    memcpy(s->text, text, len);
    s->text[len] = 0;
    s->len = len;
    s->next = d->sources;
    d->sources = s;
}

static const DiagSource *find_source(const Diag *d, const char *file) {
    for (const DiagSource *s = d->sources; s; s = s->next)
        if (file && strcmp(s->file, file) == 0)
            return s;
    return NULL;
}

/* The source line at loc with a caret under its column.  Tabs are kept so
 * the caret lines up; other control bytes are shown as '?'. */
static void print_caret(const Diag *d, SrcLoc loc) {
    const DiagSource *s = find_source(d, loc.file);
    if (!s || loc.line <= 0)
        return;
    const char *p = s->text, *end = s->text + s->len;
    for (int line = 1; line < loc.line && p < end; p++)
        if (*p == '\n')
            line++;
    if (p >= end && loc.line > 1)
        return;
    const char *eol = p;
    while (eol < end && *eol != '\n')
        eol++;
    if (eol - p > 200)
        eol = p + 200;
    fputs("  ", d->out);
    for (const char *q = p; q < eol; q++) {
        unsigned char c = (unsigned char)*q;
        fputc(c == '\t' || c >= 0x20 ? c : '?', d->out);
    }
    fputs("\n  ", d->out);
    for (int i = 1; i < loc.col && p + i - 1 < eol; i++)
        fputc(p[i - 1] == '\t' ? '\t' : ' ', d->out);
    fputs("^\n", d->out);
}

static void report(Diag *d, SrcLoc loc, const char *kind, const char *fmt, va_list ap) {
    if (loc.file && loc.line > 0)
        fprintf(d->out, "%s:%d:%d: %s: ", loc.file, loc.line, loc.col > 0 ? loc.col : 1, kind);
    else if (loc.file)
        fprintf(d->out, "%s: %s: ", loc.file, kind);
    else
        fprintf(d->out, "mamlc: %s: ", kind);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    print_caret(d, loc);
}

void diag_error(Diag *d, SrcLoc loc, const char *fmt, ...) {
    d->nerrors++;
    if (d->nerrors > d->max_errors) {
        if (d->nerrors == d->max_errors + 1)
            fprintf(d->out, "mamlc: too many errors; stopping\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    report(d, loc, "error", fmt, ap);
    va_end(ap);
}

void diag_warning(Diag *d, SrcLoc loc, const char *fmt, ...) {
    if (d->nerrors > d->max_errors)
        return;
    va_list ap;
    va_start(ap, fmt);
    report(d, loc, "warning", fmt, ap);
    va_end(ap);
}

void diag_note(Diag *d, SrcLoc loc, const char *fmt, ...) {
    if (d->nerrors > d->max_errors)
        return;
    va_list ap;
    va_start(ap, fmt);
    report(d, loc, "note", fmt, ap);
    va_end(ap);
}
