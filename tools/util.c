#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* path ("-": standard input) open for reading, after checking that it is a
 * regular file of at most TOOL_MAX_TEXT bytes (standard input may be a pipe,
 * whose length shows only as it is read); NULL after reporting. */
static FILE *open_text(const char *path, bool in, Diag *d) {
    SrcLoc loc = {path, 0, 0};
    /* non-blocking, so that opening a FIFO does not wait for a writer */
    int fd = in ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    FILE *fp = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        diag_error(d, loc, "cannot open '%s': %s", path, strerror(errno));
    else if (!in && !S_ISREG(st.st_mode))
        diag_error(d, loc, "cannot read '%s': %s", path, S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
    else if (S_ISREG(st.st_mode) && st.st_size > TOOL_MAX_TEXT)
        diag_error(d, loc, "cannot read '%s': over %d MiB", path, TOOL_MAX_TEXT >> 20);
    else if ((!in && fcntl(fd, F_SETFL, 0) != 0) || !(fp = fdopen(fd, "rb")))
        diag_error(d, loc, "cannot open '%s': %s", path, strerror(errno));
    if (!fp && fd >= 0)
        close(fd);
    return fp;
}

char *tool_read_file(const char *path, size_t *len, Diag *d) {
    bool in = strcmp(path, "-") == 0;
    FILE *fp = open_text(path, in, d);
    if (!fp)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && n <= TOOL_MAX_TEXT && (r = fread(buf + n, 1, cap - n, fp)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    SrcLoc loc = {path, 0, 0};
    if (!buf || err)
        diag_error(d, loc, "cannot read '%s': %s", path, buf ? strerror(err) : "out of memory");
    else if (n > TOOL_MAX_TEXT)
        diag_error(d, loc, "cannot read '%s': over %d MiB", path, TOOL_MAX_TEXT >> 20);
    if (!buf || err || n > TOOL_MAX_TEXT) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* path's folder: what comes before its last slash ("/" for a name just below
 * the root, "." for a bare name); malloc'd. */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
}

/* path as the resolved path of its folder and its last component; malloc'd,
 * or NULL when the folder does not resolve. */
static char *resolved_name(const char *path) {
    char *dir = folder_of(path), real[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *name = dir && realpath(dir, real) ? malloc(strlen(real) + strlen(base) + 2) : NULL;
    if (name)
        sprintf(name, "%s/%s", real, base);
    free(dir);
    return name;
}

bool tool_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea || eb)
        return ea && eb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ra = resolved_name(a), *rb = resolved_name(b);
    bool same = ra && rb ? strcmp(ra, rb) == 0 : strcmp(a, b) == 0;
    free(ra);
    free(rb);
    return same;
}

bool tool_writable_path(const char *path, bool replaced, char *why, size_t size) {
    char *dir = folder_of(path);
    struct stat st;
    bool ok = false;
    if (!dir)
        snprintf(why, size, "out of memory");
    else if (stat(dir, &st) != 0)
        snprintf(why, size, "folder '%s': %s", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        snprintf(why, size, "'%s' is not a folder", dir);
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(why, size, "it is a folder");
    else if (replaced && stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        snprintf(why, size, "it is not a regular file, and a new file would be renamed over it");
    else
        ok = true;
    free(dir);
    return ok;
}

bool tool_option(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return false;
    if (a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (a[n] == 0 && *i + 1 < argc) {
        *value = argv[++*i];
        return true;
    }
    return false;
}

/* --- SHA-256 (FIPS 180-4) --- */

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

/* One 64-byte block into the state h. */
static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) +
                      sha256_k[i] + w[i];
        uint32_t t2 = (rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        h[i] += v[i];
}

void tool_sha256_hex(const void *data, size_t n, char hex[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *p = data;
    size_t i = 0;
    for (; n - i >= 64; i += 64)
        sha256_block(h, p + i);
    unsigned char last[128] = {0};
    size_t rest = n - i, blocks = rest < 56 ? 1 : 2;
    memcpy(last, p + i, rest);
    last[rest] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (int b = 0; b < 8; b++)
        last[64 * blocks - 1 - b] = (unsigned char)(bits >> 8 * b);
    for (size_t b = 0; b < blocks; b++)
        sha256_block(h, last + 64 * b);
    for (int k = 0; k < 8; k++)
        sprintf(hex + 8 * k, "%08x", h[k]);
}

int tool_edit_distance(const char *a, const char *b, int cap) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 64 || nb > 64)
        return cap;
    int row[65];
    for (size_t j = 0; j <= nb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[nb] < cap ? row[nb] : cap;
}
