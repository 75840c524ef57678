/* JSON (RFC 8259): value = object | array | string | number | true | false | null. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errsize;
    bool failed;
} Reader;

static bool fail(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(Reader *r, const char *fmt, ...) {
    if (!r->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errsize, fmt, ap);
        va_end(ap);
        r->failed = true;
    }
    return false;
}

static int peek(const Reader *r) { return r->pos < r->len ? (unsigned char)r->s[r->pos] : -1; }

static void skip_space(Reader *r) {
    while (peek(r) == ' ' || peek(r) == '\t' || peek(r) == '\n' || peek(r) == '\r')
        r->pos++;
}

static bool literal(Reader *r, const char *word) {
    size_t n = strlen(word);
    if (r->len - r->pos < n || memcmp(r->s + r->pos, word, n) != 0)
        return fail(r, "expected a JSON value");
    r->pos += n;
    return true;
}

/* number = "-"? ("0" | [1-9][0-9]*) ("." [0-9]+)? ([eE] [+-]? [0-9]+)? */
static bool number(Reader *r, double *out) {
    size_t start = r->pos;
    int c;
    if (peek(r) == '-')
        r->pos++;
    if (peek(r) == '0')
        r->pos++;
    else if (peek(r) >= '1' && peek(r) <= '9')
        while ((c = peek(r)) >= '0' && c <= '9')
            r->pos++;
    else
        return fail(r, "expected a JSON value");
    for (int part = 0; part < 2; part++) {
        c = peek(r);
        if (part == 0 ? c != '.' : c != 'e' && c != 'E')
            continue;
        r->pos++;
        if (part == 1 && (peek(r) == '+' || peek(r) == '-'))
            r->pos++;
        if (!((c = peek(r)) >= '0' && c <= '9'))
            return fail(r, "a digit must follow '%c' in a number", part ? 'e' : '.');
        while ((c = peek(r)) >= '0' && c <= '9')
            r->pos++;
    }
    char buf[64];
    size_t n = r->pos - start;
    if (n >= sizeof buf)
        return fail(r, "a number of over %zu characters", sizeof buf - 1);
    memcpy(buf, r->s + start, n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return true;
}

static int hex(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool hex4(Reader *r, unsigned *out) {
    *out = 0;
    for (int i = 0; i < 4; i++, r->pos++) {
        int h = hex(peek(r));
        if (h < 0)
            return fail(r, "\\u needs four hex digits");
        *out = *out << 4 | (unsigned)h;
    }
    return true;
}

static size_t put_utf8(char *d, unsigned cp) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | cp >> 6);
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | cp >> 12);
        d[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | cp >> 18);
    d[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    d[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* string = '"' (char | escape)* '"'; decoded text into a new buffer (never
 * longer than the literal). */
static char *string(Reader *r) {
    r->pos++;   /* the opening quote */
    size_t start = r->pos;
    while (peek(r) >= 0 && peek(r) != '"')
        r->pos += peek(r) == '\\' && r->pos + 1 < r->len ? 2 : 1;
    if (peek(r) != '"') {
        fail(r, "a string is not closed");
        return NULL;
    }
    size_t end = r->pos;
    char *out = malloc(end - start + 1), *d = out;
    if (!out) {
        fail(r, "out of memory");
        return NULL;
    }
    for (r->pos = start; r->pos < end;) {
        unsigned char c = (unsigned char)r->s[r->pos++];
        if (c < 0x20) {
            r->pos--;
            fail(r, "a control character in a string");
            break;
        }
        if (c != '\\') {
            *d++ = (char)c;
            continue;
        }
        const char *esc = peek(r) > 0 ? strchr("\"\\/bfnrtu", peek(r)) : NULL;
        if (!esc) {
            fail(r, "unknown escape in a string");
            break;
        }
        c = (unsigned char)r->s[r->pos++];
        if (c != 'u') {
            *d++ = "\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrtu"];
            continue;
        }
        unsigned cp, lo;
        if (!hex4(r, &cp))
            break;
        if (cp >= 0xD800 && cp < 0xDC00) {     /* a surrogate pair */
            if (!(r->pos + 1 < end && r->s[r->pos] == '\\' && r->s[r->pos + 1] == 'u')) {
                fail(r, "a lone surrogate in a string");
                break;
            }
            r->pos += 2;
            if (!hex4(r, &lo))
                break;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                fail(r, "a lone surrogate in a string");
                break;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail(r, "a lone surrogate in a string");
            break;
        }
        if (cp == 0) {
            fail(r, "a NUL character in a string");
            break;
        }
        d += put_utf8(d, cp);
    }
    if (r->failed) {
        free(out);
        return NULL;
    }
    *d = 0;
    r->pos = end + 1;
    return out;
}

static bool value(Reader *r, JsonValue *v, int depth);

/* object = "{" (string ":" value ("," string ":" value)*)? "}"
 * array  = "[" (value ("," value)*)? "]" */
static bool container(Reader *r, JsonValue *v, int depth) {
    bool object = peek(r) == '{';
    char close = object ? '}' : ']';
    v->kind = object ? JSON_OBJECT : JSON_ARRAY;
    if (depth >= JSON_MAX_DEPTH)
        return fail(r, "nested over %d deep", JSON_MAX_DEPTH);
    r->pos++;
    skip_space(r);
    if (peek(r) == close) {
        r->pos++;
        return true;
    }
    for (int cap = 0;;) {
        if (v->n == cap) {
            cap = cap ? 2 * cap : 8;
            JsonValue *item = realloc(v->item, (size_t)cap * sizeof *item);
            char **key = object ? realloc(v->key, (size_t)cap * sizeof *key) : NULL;
            if (item)
                v->item = item;
            if (key)
                v->key = key;
            if (!item || (object && !key))
                return fail(r, "out of memory");
        }
        skip_space(r);
        if (object) {
            if (peek(r) != '"')
                return fail(r, "expected a member name (a string)");
            if (!(v->key[v->n] = string(r)))
                return false;
            skip_space(r);
            if (peek(r) != ':') {
                free(v->key[v->n]);
                return fail(r, "expected ':' after a member name");
            }
            r->pos++;
        }
        v->item[v->n] = (JsonValue){0};
        bool ok = value(r, &v->item[v->n], depth + 1);
        v->n++;
        if (!ok)
            return false;
        skip_space(r);
        if (peek(r) == close) {
            r->pos++;
            return true;
        }
        if (peek(r) != ',')
            return fail(r, "expected ',' or '%c'", close);
        r->pos++;
    }
}

static bool value(Reader *r, JsonValue *v, int depth) {
    skip_space(r);
    switch (peek(r)) {
    case '{':
    case '[':
        return container(r, v, depth);
    case '"':
        v->kind = JSON_STRING;
        return (v->string = string(r)) != NULL;
    case 't':
        v->kind = JSON_TRUE;
        return literal(r, "true");
    case 'f':
        v->kind = JSON_FALSE;
        return literal(r, "false");
    case 'n':
        v->kind = JSON_NULL;
        return literal(r, "null");
    case -1:
        return fail(r, "expected a JSON value, found the end");
    default:
        v->kind = JSON_NUMBER;
        return number(r, &v->number);
    }
}

static void free_inside(JsonValue *v) {
    for (int i = 0; i < v->n; i++) {
        free_inside(&v->item[i]);
        if (v->key)
            free(v->key[i]);
    }
    free(v->item);
    free(v->key);
    free(v->string);
}

void json_free(JsonValue *v) {
    if (v)
        free_inside(v);
    free(v);
}

JsonValue *json_parse(const char *text, size_t len, char *err, size_t errsize, size_t *at) {
    Reader r = {text, len, 0, err, errsize, false};
    JsonValue *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, errsize, "out of memory");
        *at = 0;
        return NULL;
    }
    if (value(&r, v, 0)) {
        skip_space(&r);
        if (r.pos < len)
            fail(&r, "more after the JSON value");
    }
    if (r.failed) {
        *at = r.pos;
        json_free(v);
        return NULL;
    }
    return v;
}

const JsonValue *json_get(const JsonValue *v, const char *key) {
    for (int i = 0; v && v->kind == JSON_OBJECT && i < v->n; i++)
        if (strcmp(v->key[i], key) == 0)
            return &v->item[i];
    return NULL;
}

double json_number(const JsonValue *v, const char *key) {
    const JsonValue *m = json_get(v, key);
    return m && m->kind == JSON_NUMBER ? m->number : NAN;
}

void json_put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

void json_put_number(FILE *f, double x) {
    if (isfinite(x))
        fprintf(f, "%.17g", x);
    else
        fputs("null", f);
}
