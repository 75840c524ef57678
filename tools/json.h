/* A small reader of JSON values, for the lines of an experiment log
 * (mamlc run --log, read by mamlc plot), and the writing of JSON strings
 * and numbers. */
#ifndef MAMLC_TOOLS_JSON_H
#define MAMLC_TOOLS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonKind;

typedef struct JsonValue JsonValue;
struct JsonValue {
    JsonKind kind;
    double number;              /* NUMBER */
    char *string;               /* STRING: its text (UTF-8, NUL-terminated) */
    int n;                      /* ARRAY, OBJECT: items or members */
    JsonValue *item;            /* ARRAY, OBJECT: n values */
    char **key;                 /* OBJECT: their n keys */
};

enum { JSON_MAX_DEPTH = 64 };

/* The one JSON value of text[0..len) (whitespace around it allowed).  NULL
 * when it is not one, with a message in err and the byte offset of the
 * trouble in *at.  Nesting is bounded by JSON_MAX_DEPTH.  Free with
 * json_free. */
JsonValue *json_parse(const char *text, size_t len, char *err, size_t errsize, size_t *at);
void json_free(JsonValue *v);

/* The member `key` of object v, or NULL (also when v is NULL or no object). */
const JsonValue *json_get(const JsonValue *v, const char *key);
/* Member key's number, or NAN where it is absent, null or no number. */
double json_number(const JsonValue *v, const char *key);

/* s as a JSON string literal, quotes included. */
void json_put_string(FILE *f, const char *s);
/* x as a JSON number with every digit of a double, or null when it is not
 * finite (JSON has no NaN or infinity). */
void json_put_number(FILE *f, double x);

#endif
