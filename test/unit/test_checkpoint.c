/* Checkpoint tests: bitwise round trips, the exact bytes of two small
 * files, every way a file is refused (each leaving the caller's buffers
 * untouched), and atomic saving. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"

static char dir[64];                    /* a fresh folder for this run's files */
static char err[512];

static const char *file(const char *name)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

/* ------------------------------------------------------------------------
 * Models: a layout with random contents */

typedef struct {
    const char *name;
    int rank, dim[4];
} Spec;

typedef struct {
    RtParam param[8];
    RtShape shape[8];
    int dim[8][4];
    RtCheckpoint c;
} Model;

static uint64_t rand_state = 0x9E3779B97F4A7C15u;

static unsigned char rand_byte(void)
{
    rand_state ^= rand_state << 13;
    rand_state ^= rand_state >> 7;
    rand_state ^= rand_state << 17;
    return (unsigned char)(rand_state >> 24);
}

/* A model of the tensors in spec, laid out in order in the flat vector,
 * filled with random bits (NaN payloads included); with nstate reals of
 * state when has_state. */
static void model_new(Model *m, RtReal real, const Spec *spec, int n, bool has_state,
                      size_t nstate)
{
    memset(m, 0, sizeof *m);
    size_t at = 0, esize = real == RT_F32 ? 4 : 8;
    for (int i = 0; i < n; i++) {
        size_t count = 1;
        for (int k = 0; k < spec[i].rank; k++) {
            m->dim[i][k] = spec[i].dim[k];
            count *= (size_t)spec[i].dim[k];
        }
        m->shape[i] = (RtShape){spec[i].rank, m->dim[i]};
        m->param[i] = (RtParam){.name = spec[i].name, .offset = at, .count = count};
        at += count;
    }
    m->c = (RtCheckpoint){.real = real, .nparam = n, .param = m->param, .shape = m->shape,
                          .nreal = at, .params = malloc(at * esize + 1),
                          .has_state = has_state, .nstate = nstate,
                          .state = malloc(nstate * esize + 1), .iteration = 0};
    for (size_t i = 0; i < at * esize; i++)
        ((unsigned char *)m->c.params)[i] = rand_byte();
    for (size_t i = 0; i < nstate * esize; i++)
        ((unsigned char *)m->c.state)[i] = rand_byte();
}

static void model_free(Model *m)
{
    free(m->c.params);
    free(m->c.state);
}

static size_t param_bytes(const Model *m)
{
    return m->c.nreal * (m->c.real == RT_F32 ? 4 : 8);
}

static size_t state_bytes(const Model *m)
{
    return m->c.nstate * (m->c.real == RT_F32 ? 4 : 8);
}

static void fill(Model *m, unsigned char byte)
{
    memset(m->c.params, byte, param_bytes(m));
    memset(m->c.state, byte, state_bytes(m));
    m->c.iteration = -7;
}

static bool all_bytes(const void *p, size_t n, unsigned char byte)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != byte)
            return false;
    return true;
}

static const Spec MLP[] = {
    {"W1", 2, {40, 1}}, {"b1", 1, {40}}, {"W2", 2, {40, 40}}, {"b2", 1, {40}},
    {"W3", 2, {1, 40}}, {"b3", 1, {1}},
};

/* ------------------------------------------------------------------------
 * Files */

static bool write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* The whole of path in *p (to free), its length in *n. */
static bool read_bytes(const char *path, unsigned char **p, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    *p = malloc((size_t)size + 1);
    *n = (size_t)size;
    bool ok = *p && fread(*p, 1, *n, f) == *n;
    fclose(f);
    return ok;
}

/* A safetensors file with the given header (hlen bytes, not padded) and data. */
static void write_raw(const char *path, const char *header, size_t hlen, const void *data,
                      size_t dlen)
{
    unsigned char *buf = malloc(8 + hlen + dlen + 1);
    for (int k = 0; k < 8; k++)
        buf[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
    memcpy(buf + 8, header, hlen);
    if (dlen)
        memcpy(buf + 8 + hlen, data, dlen);
    CHECK(write_bytes(path, buf, 8 + hlen + dlen), "cannot write %s", path);
    free(buf);
}

/* Names in dir other than `keep` (NULL-terminated): leftovers. */
static int stray_files(const char *const *keep)
{
    DIR *d = opendir(dir);
    int stray = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        bool known = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
        for (int i = 0; keep[i] && !known; i++)
            known = strcmp(e->d_name, keep[i]) == 0;
        if (!known) {
            fprintf(stderr, "stray file %s/%s\n", dir, e->d_name);
            stray++;
        }
    }
    if (d)
        closedir(d);
    return stray;
}

/* Loading path into m must fail with a message naming the file and holding
 * want, and write nothing to m's buffers. */
static void refuse_at(int line, const char *path, Model *m, const char *want)
{
    fill(m, 0xA5);
    err[0] = '\0';
    bool ok = rt_checkpoint_load(path, &m->c, err, sizeof err);
    CHECK(!ok, "line %d: %s was loaded (wanted an error with \"%s\")", line, path, want);
    CHECK(strstr(err, path) && strstr(err, want), "line %d: message \"%s\" lacks \"%s\"", line,
          err, want);
    CHECK(all_bytes(m->c.params, param_bytes(m), 0xA5) &&
          all_bytes(m->c.state, state_bytes(m), 0xA5) && m->c.iteration == -7,
          "line %d: a refused load wrote to the buffers", line);
}
#define refuse(path, m, want) refuse_at(__LINE__, path, m, want)

/* ------------------------------------------------------------------------
 * Round trips */

static void test_round_trip(RtReal real, bool has_state)
{
    const char *path = file("rt.safetensors");
    Model a, b;
    model_new(&a, real, MLP, 6, has_state, has_state ? 2 * 1761 : 0);
    model_new(&b, real, MLP, 6, has_state, has_state ? 2 * 1761 : 0);
    a.c.iteration = 123456789;
    a.c.model = b.c.model = "fnv1a64:0123456789abcdef";
    bool ok = rt_checkpoint_save(path, &a.c, err, sizeof err);
    CHECK(ok, "save: %s", err);
    fill(&b, 0);
    ok = rt_checkpoint_load(path, &b.c, err, sizeof err);
    CHECK(ok, "load: %s", err);
    CHECK(memcmp(a.c.params, b.c.params, param_bytes(&a)) == 0, "params differ (%s)",
          real == RT_F32 ? "F32" : "F64");
    if (has_state) {
        CHECK(memcmp(a.c.state, b.c.state, state_bytes(&a)) == 0, "state differs");
        CHECK(b.c.iteration == 123456789, "iteration %ld", b.c.iteration);
    } else
        CHECK(b.c.iteration == -7, "iteration was set without state");

    /* A file with state loads without asking for it; then state is untouched. */
    if (has_state) {
        fill(&b, 0);
        b.c.has_state = false;
        ok = rt_checkpoint_load(path, &b.c, err, sizeof err);
        CHECK(ok, "load without state: %s", err);
        CHECK(memcmp(a.c.params, b.c.params, param_bytes(&a)) == 0, "params differ");
        CHECK(all_bytes(b.c.state, state_bytes(&b), 0) && b.c.iteration == -7,
              "state read though not asked for");
    }
    /* The fingerprint is checked only when both sides have one. */
    b.c.model = NULL;
    CHECK(rt_checkpoint_load(path, &b.c, err, sizeof err), "load without fingerprint: %s", err);
    CHECK(stray_files((const char *[]){"rt.safetensors", NULL}) == 0, "files left behind");
    model_free(&a);
    model_free(&b);
    unlink(path);
}

/* An empty model, and one with a zero-sized tensor, round trip too. */
static void test_round_trip_edges(void)
{
    const char *path = file("edge.safetensors");
    static const Spec spec[] = {{"empty", 2, {0, 3}}, {"s", 0, {0}}, {"v", 1, {3}}};
    Model a, b;
    model_new(&a, RT_F64, spec, 0, true, 0);
    CHECK(rt_checkpoint_save(path, &a.c, err, sizeof err), "save of no tensors: %s", err);
    model_new(&b, RT_F64, spec, 0, true, 0);
    CHECK(rt_checkpoint_load(path, &b.c, err, sizeof err), "load of no tensors: %s", err);
    CHECK(b.c.iteration == 0, "iteration %ld", b.c.iteration);
    model_free(&a);
    model_free(&b);

    model_new(&a, RT_F32, spec, 3, false, 0);
    model_new(&b, RT_F32, spec, 3, false, 0);
    CHECK(rt_checkpoint_save(path, &a.c, err, sizeof err), "save: %s", err);
    fill(&b, 0);
    CHECK(rt_checkpoint_load(path, &b.c, err, sizeof err), "load: %s", err);
    CHECK(memcmp(a.c.params, b.c.params, param_bytes(&a)) == 0, "params differ");
    model_free(&a);
    model_free(&b);
    unlink(path);
}

/* ------------------------------------------------------------------------
 * The exact bytes of small files, built by hand from the format's
 * description: tensors sorted by name, compact JSON, spaces to a multiple
 * of 8, little-endian data. */

static const char GOLDEN1_HEADER[] =
    "{\"__metadata__\":{\"format\":\"mamlc-checkpoint-1\",\"model\":\"m1\"},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[4,12]}}      ";

static const Spec GOLDEN1[] = {{"w", 2, {2, 1}}, {"b", 1, {1}}};

/* w = [[1], [2]] and b = [0.5], as F32, with fingerprint "m1". */
static void golden1_model(Model *m)
{
    static const float values[] = {1.0f, 2.0f, 0.5f};
    model_new(m, RT_F32, GOLDEN1, 2, false, 0);
    memcpy(m->c.params, values, sizeof values);
    m->c.model = "m1";
}

static void test_golden(void)
{
    const char *path = file("golden.safetensors");
    unsigned char want[8 + 176 + 12] = {0xB0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(sizeof GOLDEN1_HEADER - 1 == 176, "header is %zu bytes", sizeof GOLDEN1_HEADER - 1);
    memcpy(want + 8, GOLDEN1_HEADER, 176);
    memcpy(want + 8 + 176, "\x00\x00\x00\x3f" "\x00\x00\x80\x3f" "\x00\x00\x00\x40", 12);
    Model m;
    golden1_model(&m);
    CHECK(rt_checkpoint_save(path, &m.c, err, sizeof err), "save: %s", err);
    unsigned char *got = NULL;
    size_t n = 0;
    CHECK(read_bytes(path, &got, &n), "cannot read %s", path);
    CHECK(n == sizeof want && memcmp(got, want, n) == 0, "golden 1: %zu bytes differ from the "
          "%zu expected", n, sizeof want);
    free(got);
    fill(&m, 0);
    CHECK(rt_checkpoint_load(path, &m.c, err, sizeof err), "load: %s", err);
    CHECK(memcmp(m.c.params, (float[]){1.0f, 2.0f, 0.5f}, 12) == 0, "golden 1 values");
    model_free(&m);

    /* F64, a scalar (shape []), state and iteration. */
    static const char header2[] =
        "{\"__metadata__\":{\"format\":\"mamlc-checkpoint-1\",\"iteration\":\"7\"},"
        "\"__state__\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
        "\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[16,24]}}    ";
    unsigned char want2[8 + 184 + 24] = {0xB8, 0, 0, 0, 0, 0, 0, 0};
    CHECK(sizeof header2 - 1 == 184, "header is %zu bytes", sizeof header2 - 1);
    memcpy(want2 + 8, header2, 184);
    memcpy(want2 + 8 + 184, "\0\0\0\0\0\0\xf0\x3f" "\0\0\0\0\0\0\0\xc0" "\0\0\0\0\0\0\xd0\x3f",
           24);
    static const Spec scalar[] = {{"a", 0, {0}}};
    model_new(&m, RT_F64, scalar, 1, true, 2);
    memcpy(m.c.params, (double[]){0.25}, 8);
    memcpy(m.c.state, (double[]){1.0, -2.0}, 16);
    m.c.iteration = 7;
    CHECK(rt_checkpoint_save(path, &m.c, err, sizeof err), "save: %s", err);
    CHECK(read_bytes(path, &got, &n), "cannot read %s", path);
    CHECK(n == sizeof want2 && memcmp(got, want2, n) == 0, "golden 2 differs");
    free(got);
    model_free(&m);

    /* Names are escaped as JSON strings. */
    static const Spec odd[] = {{"a\"b\\c\n\x01\xc3\xa9", 1, {1}}};
    model_new(&m, RT_F32, odd, 1, false, 0);
    CHECK(rt_checkpoint_save(path, &m.c, err, sizeof err), "save: %s", err);
    CHECK(read_bytes(path, &got, &n), "cannot read %s", path);
    CHECK(n > 8 && strstr((char *)got + 8, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\":"),
          "escaped name");
    free(got);
    Model back;
    model_new(&back, RT_F32, odd, 1, false, 0);
    CHECK(rt_checkpoint_load(path, &back.c, err, sizeof err), "load of odd name: %s", err);
    CHECK(memcmp(back.c.params, m.c.params, 4) == 0, "odd name values");
    model_free(&back);
    model_free(&m);
    unlink(path);
}

/* Files from other writers: any order of tensors, whitespace, escapes in
 * keys, metadata of their own, no mamlc metadata at all. */
static void test_foreign(void)
{
    const char *path = file("foreign.safetensors");
    static const char h[] =
        " { \"\\u0077\" : {\"data_offsets\": [0, 8], \"shape\": [2, 1], \"dtype\": \"F32\"},\n"
        "\t\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},\r\n"
        "\"__metadata__\": {\"format\": \"mamlc-checkpoint-1\", \"note\": \"\\ud83d\\ude00\"}}";
    write_raw(path, h, sizeof h - 1, "\x00\x00\x80\x3f" "\x00\x00\x00\x40" "\x00\x00\x00\x3f",
              12);
    Model m;
    golden1_model(&m);
    fill(&m, 0);
    CHECK(rt_checkpoint_load(path, &m.c, err, sizeof err), "foreign: %s", err);
    CHECK(memcmp(m.c.params, (float[]){1.0f, 2.0f, 0.5f}, 12) == 0, "foreign values");
    model_free(&m);
    unlink(path);
}

/* ------------------------------------------------------------------------
 * Refusals */

static void test_truncated(void)
{
    const char *full = file("full.safetensors"), *cut = file("cut.safetensors");
    Model m;
    golden1_model(&m);
    CHECK(rt_checkpoint_save(full, &m.c, err, sizeof err), "save: %s", err);
    unsigned char *bytes = NULL;
    size_t n = 0;
    CHECK(read_bytes(full, &bytes, &n), "cannot read %s", full);
    for (size_t len = 0; len < n; len++) {
        CHECK(write_bytes(cut, bytes, len), "cannot write %s", cut);
        refuse(cut, &m, "truncated");
    }
    CHECK(write_bytes(cut, bytes, n - 7), "cannot write %s", cut);
    refuse(cut, &m, "truncated: expected 12 bytes of data, found 5");
    CHECK(write_bytes(cut, bytes, 100), "cannot write %s", cut);
    refuse(cut, &m, "truncated: header length 176, but 92 bytes follow it");

    /* Bytes after the data are refused as well. */
    unsigned char *longer = malloc(n + 4);
    memcpy(longer, bytes, n);
    memset(longer + n, 0, 4);
    CHECK(write_bytes(cut, longer, n + 4), "cannot write %s", cut);
    refuse(cut, &m, "16 bytes of data, but its tensors hold 12");

    /* Any change to the header length is caught. */
    for (int k = 0; k < 8; k++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(longer, bytes, n);
            longer[k] ^= (unsigned char)(1u << bit);
            CHECK(write_bytes(cut, longer, n), "cannot write %s", cut);
            refuse(cut, &m, "");
        }
    memcpy(longer, bytes, n);
    longer[7] = 0xFF;
    CHECK(write_bytes(cut, longer, n), "cannot write %s", cut);
    refuse(cut, &m, "not a checkpoint: header length");
    free(longer);
    free(bytes);
    model_free(&m);
    unlink(full);
    unlink(cut);
}

/* Headers that are not (strict) JSON, each refused with a message naming it. */
static void test_bad_json(void)
{
    static const struct {
        const char *header;
        size_t len;             /* 0: strlen(header) */
        const char *want;
    } cases[] = {
        {"", 0, "expected a value"},
        {"        ", 0, "expected a value"},
        {"{", 0, "expected a string key"},
        {"}", 0, "expected an object"},
        {"[]", 0, "not a JSON object"},
        {"\"w\"", 0, "not a JSON object"},
        {"{\"a\":1,}", 0, "expected a string key"},
        {"{\"a\" 1}", 0, "expected ':'"},
        {"{'a':1}", 0, "expected a string key"},
        {"{\"a\":tru}", 0, "expected an object, array, string or non-negative integer"},
        {"{\"a\":true}", 0, "non-negative integer"},
        {"{\"a\":null}", 0, "non-negative integer"},
        {"{\"a\":-1}", 0, "non-negative integer"},
        {"{\"a\":1.5}", 0, "expected an integer"},
        {"{\"a\":1e3}", 0, "expected an integer"},
        {"{\"a\":01}", 0, "leading zero"},
        {"{\"a\":18446744073709551616}", 0, "integer too large"},
        {"{\"a\":\"\\x\"}", 0, "unknown escape"},
        {"{\"a\":\"\\u12\"}", 0, "4 hex digits"},
        {"{\"a\":\"\\u12g4\"}", 0, "4 hex digits"},
        {"{\"a\":\"\\ud800\"}", 0, "lone surrogate"},
        {"{\"a\":\"\\ud800\\u0041\"}", 0, "lone surrogate"},
        {"{\"a\":\"\\udc00x\"}", 0, "lone surrogate"},
        {"{\"a\":\"\\u0000\"}", 0, "\\u0000"},
        {"{\"a\":\"\xff\"}", 0, "invalid UTF-8"},
        {"{\"a\":\"\xc0\xaf\"}", 0, "invalid UTF-8"},
        {"{\"a\":\"\xed\xa0\x80\"}", 0, "invalid UTF-8"},
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, "invalid UTF-8"},
        {"{\"a\":\"\xe2\x82\"}", 0, "invalid UTF-8"},
        {"{\"a\":\"line\nbreak\"}", 0, "control character"},
        {"{\"a\":\"abc", 0, "string not terminated"},
        {"{\"a\":\"abc\\", 0, "string not terminated"},
        {"{\"a\":1}x", 0, "unexpected bytes after"},
        {"{\"a\":1}\0", 9, "unexpected bytes after"},
        {"{\"a\":1}{}", 0, "unexpected bytes after"},
        {"{\"a\":[1 2]}", 0, "expected ',' or ']'"},
        {"{\"w\":{},\"w\":{}}", 0, "duplicate key \"w\""},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "is not a string"},
        {"{\"__metadata__\":[]}", 0, "__metadata__ is not an object"},
        {"{\"__metadata__\":{\"format\":\"pt\"}}", 0, "format \"pt\" is not mamlc-checkpoint-1"},
        {"{\"w\":1}", 0, "tensor w is not an object"},
        {"{\"w\":{\"shape\":[2,1],\"data_offsets\":[0,8]}}", 0, "tensor w has no \"dtype\""},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, "tensor w has no \"shape\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1]}}", 0, "has no \"data_offsets\""},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8],\"x\":1}}", 0,
         "unknown field \"x\""},
        {"{\"w\":{\"dtype\":1,\"shape\":[2,1],\"data_offsets\":[0,8]}}", 0, "not a string"},
        {"{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[0,4]}}", 0,
         "tensor w holds BF16; a mamlc checkpoint holds F32 or F64"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,8]}}", 0, "not an array"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 0,
         "non-integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
         0, "too large"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8,8]}}", 0,
         "not two integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0]}}", 0,
         "not two integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[\"0\",8]}}", 0,
         "not two integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[8,0]}}", 0,
         "run backwards"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,12]}}", 0,
         "hold 12 bytes, but F32 [2, 1] needs 8"},
    };
    const char *path = file("bad.safetensors");
    Model m;
    golden1_model(&m);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].header);
        write_raw(path, cases[i].header, len, NULL, 0);
        refuse(path, &m, cases[i].want);
    }

    /* Nesting deeper than the limit, and at it. */
    char deep[512];
    int d = 0;
    d += snprintf(deep + d, sizeof deep - (size_t)d, "{\"a\":");
    for (int k = 0; k < 100; k++)
        deep[d++] = '[';
    for (int k = 0; k < 100; k++)
        deep[d++] = ']';
    deep[d++] = '}';
    write_raw(path, deep, (size_t)d, NULL, 0);
    refuse(path, &m, "nested more than");
    d = snprintf(deep, sizeof deep, "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],"
                                    "\"q\":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}}");
    write_raw(path, deep, (size_t)d, NULL, 0);
    refuse(path, &m, "unknown field \"q\"");       /* parsed: 16 levels are allowed */

    /* A long name is cut short in messages; a control byte is shown as '?'. */
    char longname[400];
    d = snprintf(longname, sizeof longname, "{\"%0300d\\u0007\":1}", 0);
    write_raw(path, longname, (size_t)d, NULL, 0);
    refuse(path, &m, "...");
    d = snprintf(longname, sizeof longname, "{\"x\\ny\":{\"dtype\":\"F32\",\"shape\":[1],"
                                            "\"data_offsets\":[0,4]}}");
    write_raw(path, longname, (size_t)d, "\0\0\0\0", 4);
    refuse(path, &m, "x?y");
    model_free(&m);
    unlink(path);
}

/* data_offsets that do not tile the data. */
static void test_offsets(void)
{
    const char *path = file("offsets.safetensors");
    static const char data[16] = {0};
    Model m;
    golden1_model(&m);
    static const char overlap[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[2,10]}}";
    write_raw(path, overlap, sizeof overlap - 1, data, 10);
    refuse(path, &m, "the data of w [2, 10] overlaps that of b [0, 4]");
    static const char same[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]}}";
    write_raw(path, same, sizeof same - 1, data, 4);
    refuse(path, &m, "overlaps");
    static const char gap[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[8,16]}}";
    write_raw(path, gap, sizeof gap - 1, data, 16);
    refuse(path, &m, "4 bytes of data before w [8, 16] belong to no tensor");
    static const char start[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[8,16]}}";
    write_raw(path, start, sizeof start - 1, data, 16);
    refuse(path, &m, "4 bytes of data before b [4, 8]");
    static const char past[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[4,12]}}";
    write_raw(path, past, sizeof past - 1, data, 8);
    refuse(path, &m, "truncated: expected 12 bytes of data, found 8");
    static const char far[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,1],"
        "\"data_offsets\":[18446744073709551607,18446744073709551615]}}";
    write_raw(path, far, sizeof far - 1, data, 12);
    refuse(path, &m, "belong to no tensor");
    write_raw(path, past, sizeof past - 1, data, 12);        /* and the valid one loads */
    CHECK(rt_checkpoint_load(path, &m.c, err, sizeof err), "valid offsets: %s", err);
    model_free(&m);
    unlink(path);
}

/* Files that are well-formed but not this model's. */
static void test_mismatch(void)
{
    const char *path = file("other.safetensors");
    Model saved, want;

    model_new(&saved, RT_F64, MLP, 6, false, 0);
    model_new(&want, RT_F32, MLP, 6, false, 0);
    CHECK(rt_checkpoint_save(path, &saved.c, err, sizeof err), "save: %s", err);
    refuse(path, &want, "the checkpoint holds F64 (W1) but the model is F32");
    model_free(&saved);
    model_free(&want);

    static const Spec wide[] = {{"W1", 2, {40, 2}}, {"b1", 1, {40}}};
    static const Spec narrow[] = {{"W1", 2, {40, 1}}, {"b1", 1, {40}}};
    static const Spec flat[] = {{"W1", 1, {40}}, {"b1", 1, {40}}};
    model_new(&saved, RT_F32, wide, 2, false, 0);
    model_new(&want, RT_F32, narrow, 2, false, 0);
    CHECK(rt_checkpoint_save(path, &saved.c, err, sizeof err), "save: %s", err);
    refuse(path, &want, "W1 has shape [40, 2] in the checkpoint, [40, 1] in the model");
    model_free(&want);
    model_new(&want, RT_F32, flat, 2, false, 0);
    refuse(path, &want, "W1 has shape [40, 2] in the checkpoint, [40] in the model");
    model_free(&saved);
    model_free(&want);

    model_new(&saved, RT_F32, MLP, 4, false, 0);          /* W1 b1 W2 b2 */
    model_new(&want, RT_F32, MLP, 6, false, 0);
    CHECK(rt_checkpoint_save(path, &saved.c, err, sizeof err), "save: %s", err);
    refuse(path, &want, "tensors missing from the checkpoint: W3, b3");
    model_free(&want);
    model_new(&want, RT_F32, MLP, 2, false, 0);
    refuse(path, &want, "tensors in the checkpoint but not in the model: W2, b2");
    model_free(&want);
    static const Spec mixed[] = {{"W1", 2, {40, 1}}, {"b1", 1, {40}}, {"c", 1, {1}}};
    model_new(&want, RT_F32, mixed, 3, false, 0);
    refuse(path, &want, "tensors missing from the checkpoint: c; tensors in the checkpoint but "
                        "not in the model: W2, b2");
    model_free(&want);

    /* Fingerprints, format, state. */
    saved.c.model = "fp-a";
    CHECK(rt_checkpoint_save(path, &saved.c, err, sizeof err), "save: %s", err);
    model_new(&want, RT_F32, MLP, 4, true, 8);
    want.c.model = "fp-b";
    refuse(path, &want, "saved from a different model (fingerprint fp-a; this model's is fp-b)");
    want.c.model = "fp-a";
    refuse(path, &want, "holds no optimiser state");
    want.c.has_state = false;
    CHECK(rt_checkpoint_load(path, &want.c, err, sizeof err), "load: %s", err);
    model_free(&saved);

    model_new(&saved, RT_F32, MLP, 4, true, 6);
    CHECK(rt_checkpoint_save(path, &saved.c, err, sizeof err), "save: %s", err);
    want.c.has_state = true;
    want.c.model = NULL;
    refuse(path, &want, "the optimiser state has shape [6] in the checkpoint, [8] for this "
                        "model's optimiser");
    model_free(&saved);
    model_free(&want);

    /* State without an iteration, or with a malformed one. */
    static const Spec one[] = {{"b", 1, {1}}};
    model_new(&want, RT_F32, one, 1, true, 1);
    static const char noiter[] =
        "{\"__state__\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_raw(path, noiter, sizeof noiter - 1, "\0\0\0\0\0\0\0\0", 8);
    refuse(path, &want, "holds optimiser state but no iteration");
    static const char *iters[] = {"-1", "01", "", "1x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof iters / sizeof iters[0]; i++) {
        char h[256];
        int n = snprintf(h, sizeof h, "{\"__metadata__\":{\"iteration\":\"%s\"},"
                         "\"__state__\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                         iters[i]);
        write_raw(path, h, (size_t)n, "\0\0\0\0\0\0\0\0", 8);
        refuse(path, &want, "is not a count");
    }
    static const char wrongstate[] =
        "{\"__metadata__\":{\"iteration\":\"3\"},"
        "\"__state__\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[4,12]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_raw(path, wrongstate, sizeof wrongstate - 1, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    refuse(path, &want, "holds F64 (__state__) but the model is F32");
    want.c.has_state = false;                   /* an unwanted state is not checked */
    CHECK(rt_checkpoint_load(path, &want.c, err, sizeof err), "load: %s", err);
    model_free(&want);

    /* Not a file at all. */
    Model m;
    golden1_model(&m);
    refuse(file("absent.safetensors"), &m, "cannot open");
    refuse(dir, &m, "not a regular file");
    const char *fifo = file("fifo");
    CHECK(mkfifo(fifo, 0644) == 0, "mkfifo");
    refuse(fifo, &m, "not a regular file");             /* without waiting for a writer */
    unlink(fifo);
    model_free(&m);
    unlink(path);
}

/* Layouts the caller gets wrong are refused before anything is written. */
static void test_bad_layout(void)
{
    const char *path = file("layout.safetensors");
    Model m;
    static const Spec dup[] = {{"w", 1, {2}}, {"w", 1, {1}}};
    model_new(&m, RT_F32, dup, 2, false, 0);
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) &&
          strstr(err, "two tensors are named w"), "duplicate names: %s", err);
    model_free(&m);
    static const Spec res[] = {{"__state__", 1, {2}}};
    model_new(&m, RT_F32, res, 1, false, 0);
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) && strstr(err, "invalid name"),
          "reserved name: %s", err);
    model_free(&m);
    golden1_model(&m);
    m.param[1].count = 2;
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) && strstr(err, "does not hold"),
          "count against shape: %s", err);
    m.param[1].count = 1;
    m.param[1].offset = 3;
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) && strstr(err, "lies outside"),
          "slice outside: %s", err);
    m.param[1].offset = 2;
    m.c.has_state = true;
    m.c.iteration = -1;
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) && strstr(err, "iteration -1"),
          "negative iteration: %s", err);
    m.c.has_state = false;
    m.c.model = "\xff";
    CHECK(!rt_checkpoint_save(path, &m.c, err, sizeof err) && strstr(err, "not UTF-8"),
          "fingerprint not UTF-8: %s", err);
    model_free(&m);
    CHECK(access(path, F_OK) != 0, "a refused save wrote a file");
    CHECK(stray_files((const char *[]){NULL}) == 0, "files left behind");
}

/* ------------------------------------------------------------------------
 * Atomic saving */

/* Save b over path (which holds a) in a child process that cannot write
 * to dir: as root, by becoming nobody first. */
static bool save_unwritable(const char *path, const Model *b)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && setuid(65534) != 0)
            _exit(3);
        char e[512];
        bool ok = rt_checkpoint_save(path, &b->c, e, sizeof e);
        _exit(ok ? 1 : strstr(e, path) && strstr(e, "cannot create") ? 0 : 2);
    }
    int status;
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
}

static void test_atomic(void)
{
    const char *path = file("ck.safetensors");
    const char *const keep[] = {"ck.safetensors", NULL};
    Model a, b;
    model_new(&a, RT_F32, MLP, 6, true, 2 * 1761);
    model_new(&b, RT_F32, MLP, 6, true, 2 * 1761);
    a.c.iteration = 10;
    b.c.iteration = 20;
    CHECK(rt_checkpoint_save(path, &a.c, err, sizeof err), "save: %s", err);
    unsigned char *before = NULL, *after = NULL;
    size_t nbefore = 0, nafter = 0;
    CHECK(read_bytes(path, &before, &nbefore), "cannot read %s", path);

    /* An unwritable folder: the save fails, the old file stays whole. */
    CHECK(chmod(dir, 0555) == 0, "chmod");
    CHECK(save_unwritable(path, &b), "saving into an unwritable folder did not fail cleanly");
    CHECK(chmod(dir, 0755) == 0, "chmod");
    CHECK(read_bytes(path, &after, &nafter), "cannot read %s", path);
    CHECK(nafter == nbefore && memcmp(before, after, nbefore) == 0, "the old file changed");
    free(after);
    CHECK(stray_files(keep) == 0, "files left behind");

    /* A write that fails part way (the file size limit): the same. */
    struct rlimit old, small;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit");
    small = old;
    small.rlim_cur = 1000;
    void (*handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0, "setrlimit");
    bool ok = rt_checkpoint_save(path, &b.c, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, handler);
    CHECK(!ok && strstr(err, path) && strstr(err, "cannot write"), "a failed write: %s", err);
    CHECK(read_bytes(path, &after, &nafter), "cannot read %s", path);
    CHECK(nafter == nbefore && memcmp(before, after, nbefore) == 0, "the old file changed");
    free(after);
    CHECK(stray_files(keep) == 0, "files left behind");
    fill(&b, 0);
    CHECK(rt_checkpoint_load(path, &b.c, err, sizeof err) && b.c.iteration == 10 &&
          memcmp(a.c.params, b.c.params, param_bytes(&a)) == 0, "the old checkpoint: %s", err);

    /* Over a folder, and into a missing one: refused, nothing left. */
    const char *sub = file("sub");
    CHECK(mkdir(sub, 0755) == 0, "mkdir");
    CHECK(!rt_checkpoint_save(sub, &a.c, err, sizeof err) && strstr(err, "cannot write"),
          "saving over a folder: %s", err);
    CHECK(stray_files((const char *[]){"ck.safetensors", "sub", NULL}) == 0, "files left behind");
    rmdir(sub);
    CHECK(!rt_checkpoint_save(file("none/ck.safetensors"), &a.c, err, sizeof err) &&
          strstr(err, "cannot create"), "saving into a missing folder: %s", err);

    /* Saving over a file replaces it and keeps its mode. */
    CHECK(chmod(path, 0600) == 0, "chmod");
    b.c.iteration = 20;
    CHECK(rt_checkpoint_save(path, &b.c, err, sizeof err), "save: %s", err);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode %o", st.st_mode & 0777);
    fill(&a, 0);
    CHECK(rt_checkpoint_load(path, &a.c, err, sizeof err) && a.c.iteration == 20,
          "the new checkpoint: %s", err);
    CHECK(stray_files(keep) == 0, "files left behind");
    free(before);
    model_free(&a);
    model_free(&b);
    unlink(path);
}

/* This host's name as runtime/replace.c puts it into temporary names. */
static void host_name(char out[65])
{
    if (gethostname(out, 65) != 0 || !out[0])
        strcpy(out, "localhost");
    out[64] = 0;
    for (char *c = out; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '_' || *c == '-'))
            *c = '_';
}

static void touch(const char *path)
{
    CHECK(write_bytes(path, (const unsigned char *)"x", 1), "cannot write %s", path);
}

/* A save killed part way leaves its temporary file, named with the host
 * and the process; the next save removes it, and keeps the temporary files
 * of running processes, of other hosts, of other files, and of the old
 * form without a host. */
static void test_stale_temporaries(void)
{
    char path[256], host[65], other[] = "some-other-host", name[6][160];
    snprintf(path, sizeof path, "%s", file("ck.safetensors"));
    host_name(host);
    if (strcmp(host, other) == 0)
        other[0] = 'S';
    Model a;
    model_new(&a, RT_F32, MLP, 6, true, 2 * 1761);
    a.c.iteration = 10;

    /* a child dies on SIGXFSZ at its first write past 1000 bytes */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit small = {1000, 1000}, none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        setrlimit(RLIMIT_FSIZE, &small);
        signal(SIGXFSZ, SIG_DFL);
        rt_checkpoint_save(path, &a.c, err, sizeof err);
        _exit(0);
    }
    int status;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ,
          "the child was not stopped by SIGXFSZ");
    snprintf(name[0], sizeof name[0], "ck.safetensors.tmp-%s-%ld-0", host, (long)pid);
    CHECK(access(file(name[0]), F_OK) == 0, "the killed save left no %s", name[0]);
    CHECK(stray_files((const char *[]){name[0], NULL}) == 0, "other files left behind");

    /* beside it, temporaries that are not stale, or not this file's */
    snprintf(name[1], sizeof name[1], "ck.safetensors.tmp-%s-%ld-0", host, (long)getppid());
    snprintf(name[2], sizeof name[2], "ck.safetensors.tmp-%s-%ld-0", other, (long)pid);
    snprintf(name[3], sizeof name[3], "other.safetensors.tmp-%s-%ld-0", host, (long)pid);
    snprintf(name[4], sizeof name[4], "ck.safetensors.tmp-%ld-0", (long)pid);
    snprintf(name[5], sizeof name[5], "ck.safetensors.tmp-%s-%ld-0-x", host, (long)pid);
    for (int i = 1; i < 6; i++)
        touch(file(name[i]));
    CHECK(rt_checkpoint_save(path, &a.c, err, sizeof err), "save: %s", err);
    CHECK(access(file(name[0]), F_OK) != 0, "the dead process's %s is still there", name[0]);
    const char *keep[] = {"ck.safetensors", name[1], name[2], name[3], name[4], name[5], NULL};
    CHECK(stray_files(keep) == 0, "files left behind");
    for (int i = 1; i < 6; i++)
        CHECK(access(file(name[i]), F_OK) == 0, "%s was removed", name[i]);
    for (int i = 0; keep[i]; i++)
        unlink(file(keep[i]));
    model_free(&a);
}

/* ------------------------------------------------------------------------
 * Fingerprints */

static void test_fingerprint(void)
{
    Model m;
    golden1_model(&m);
    char fp[RT_FINGERPRINT_SIZE], fp2[RT_FINGERPRINT_SIZE];
    /* FNV-1a of "F32\nw[2,1]\nb[1]", computed independently in Python. */
    rt_checkpoint_fingerprint(&m.c, NULL, fp);
    CHECK(strcmp(fp, "fnv1a64:7b795b57571a24df") == 0, "fingerprint %s", fp);
    rt_checkpoint_fingerprint(&m.c, "extra", fp2);
    CHECK(strcmp(fp2, "fnv1a64:ceeb3185a5cf5d83") == 0, "fingerprint with extra %s", fp2);
    m.dim[0][0] = 1, m.dim[0][1] = 2;
    rt_checkpoint_fingerprint(&m.c, NULL, fp2);
    CHECK(strcmp(fp, fp2) != 0, "a reshaped model has the same fingerprint");
    m.c.real = RT_F64;
    rt_checkpoint_fingerprint(&m.c, NULL, fp);
    CHECK(strcmp(fp, fp2) != 0, "an F64 model has the same fingerprint");
    model_free(&m);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/mamlc-ckpt-XXXXXX");
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip(RT_F32, false);
    test_round_trip(RT_F32, true);
    test_round_trip(RT_F64, false);
    test_round_trip(RT_F64, true);
    test_round_trip_edges();
    test_golden();
    test_foreign();
    test_truncated();
    test_bad_json();
    test_offsets();
    test_mismatch();
    test_bad_layout();
    test_atomic();
    test_stale_temporaries();
    test_fingerprint();
    CHECK(stray_files((const char *[]){NULL}) == 0, "files left behind");
    rmdir(dir);
    return check_summary();
}
