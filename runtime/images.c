/* Image data sets (runtime/images.h): listing classes from folders or a
 * split CSV, decoding PNG and JPEG, exact area-averaging resize to uint8,
 * and drawing tasks.
 *
 * Every image is decoded to 8-bit RGB, converted to grey if asked, resized
 * and stored channel-major as bytes, so the data set holds n C S S bytes.
 * A task converts bytes to reals through a 256-entry table per channel,
 * which folds scaling and normalisation into one exact lookup. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>            /* after stdio.h, which it needs */
#include <jerror.h>

#include "dataset.h"
#include "images.h"

#define MAX_PIXELS ((size_t)1 << 26)            /* width * height of one image */
#define MAX_CSV_BYTES ((size_t)1 << 30)         /* one split file */

struct RtImages {
    char *name;                 /* for messages: path, or "CSV (path)" */
    int size, channels;
    int rot;                    /* classes per folder or label: 4 with rotations, else 1 */
    int nclass;                 /* classes before rotation */
    int min_images;             /* fewest images of a class */
    int *first;                 /* [nclass + 1]: class c owns images first[c]..first[c+1]-1 */
    unsigned char *pix;         /* first[nclass] images of channels * size * size bytes */
    char **class_name;          /* [nclass * rot] */
    float lut32[3][256];        /* the real of byte b in channel c */
    double lut64[3][256];
};

/* One image to load: its file and its class key (folder or label). */
typedef struct {
    const RtFile *file;
    const char *key;
    size_t keylen;
} Item;

static char *format(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, a, b);
    return s;
}

/* ------------------------------------------------------------------------
 * Decoding */

/* True, with a message, when a w x h image is empty or too large. */
static bool too_large(unsigned w, unsigned h, const char *where, char *err, size_t errsize)
{
    if (w > 0 && h > 0 && (size_t)w * h <= MAX_PIXELS)
        return false;
    rt_errorf(err, errsize, "%s: an image of %ux%u pixels is empty or too large", where, w, h);
    return true;
}

/* PNG of any bit depth or colour type to 8-bit RGB, transparency composited
 * on white. */
static unsigned char *decode_png(const unsigned char *data, size_t len, int *w, int *h,
                                 const char *where, char *err, size_t errsize)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    unsigned char *rgb = NULL;
    if (!png_image_begin_read_from_memory(&img, data, len)) {
        rt_errorf(err, errsize, "%s: cannot decode PNG: %s", where, img.message);
    } else if (!too_large(img.width, img.height, where, err, errsize)) {
        img.format = PNG_FORMAT_RGB;
        png_color white = {255, 255, 255};
        if (!(rgb = malloc(PNG_IMAGE_SIZE(img))))
            rt_errorf(err, errsize, "%s: out of memory", where);
        else if (!png_image_finish_read(&img, &white, rgb, 0, NULL)) {
            rt_errorf(err, errsize, "%s: cannot decode PNG: %s", where, img.message);
            free(rgb);
            rgb = NULL;
        }
        *w = (int)img.width;
        *h = (int)img.height;
    }
    png_image_free(&img);
    return rgb;
}

/* libjpeg reports errors through error_exit, which must not return: it
 * jumps back to decode_jpeg with the message.  A truncated file, which
 * libjpeg would pad with grey after a warning, is an error too; other
 * warnings (e.g. extraneous bytes before a marker) are not printed. */
typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} JpegError;

static void jpeg_fail(j_common_ptr c)
{
    JpegError *e = (JpegError *)c->err;
    c->err->format_message(c, e->message);
    longjmp(e->jump, 1);
}

static void jpeg_note(j_common_ptr c, int level)
{
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF)
        jpeg_fail(c);
}

/* Baseline or progressive JPEG, grey or colour, to 8-bit RGB with
 * libjpeg-turbo's defaults (ISLOW DCT, fancy upsampling), as Pillow
 * decodes. */
static unsigned char *decode_jpeg(const unsigned char *data, size_t len, int *w, int *h,
                                  const char *where, char *err, size_t errsize)
{
    struct jpeg_decompress_struct cinfo;
    JpegError e;
    unsigned char *volatile rgb = NULL;
    cinfo.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_fail;
    e.mgr.emit_message = jpeg_note;
    if (setjmp(e.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        rt_errorf(err, errsize, "%s: cannot decode JPEG: %s", where, e.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        rt_errorf(err, errsize, "%s: cannot decode JPEG: CMYK images are not supported", where);
        return NULL;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    if (too_large(cinfo.output_width, cinfo.output_height, where, err, errsize)) {
        jpeg_destroy_decompress(&cinfo);
        return NULL;
    }
    size_t stride = (size_t)cinfo.output_width * 3;
    if (!(rgb = malloc(stride * cinfo.output_height))) {
        jpeg_destroy_decompress(&cinfo);
        rt_errorf(err, errsize, "%s: out of memory", where);
        return NULL;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = rgb + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    *w = (int)cinfo.output_width;
    *h = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    return rgb;
}

/* Resize an 8-bit w x h image of ch interleaved channels to n x n,
 * channel-major, by exact area averaging (runtime/dataset.h): each output
 * byte is the mean over its footprint, rounded half up.  Each input row is
 * resized horizontally once, when the vertical walk reaches it.  False when
 * memory cannot be had. */
static bool resize(const unsigned char *in, int w, int h, int ch, int n, unsigned char *out)
{
    int span = rt_area_span(w, n);
    size_t taps = (size_t)h + (size_t)n, win = (size_t)n * (size_t)span, row_len = (size_t)ch * (size_t)n;
    RtAreaTap *vtap = malloc(taps * sizeof *vtap + (win + 2 * row_len) * sizeof(int64_t) +
                             (size_t)n * sizeof(int));
    if (!vtap)
        return false;
    int64_t *weight = (int64_t *)(vtap + taps), *row = weight + win, *acc = row + row_len;
    int *first = (int *)(acc + row_len);
    int nv = rt_area_taps(h, n, vtap);
    rt_area_window(w, n, span, first, weight);
    int64_t area = (int64_t)w * h;
    size_t plane = (size_t)n * (size_t)n;
    memset(acc, 0, row_len * sizeof *acc);
    for (int k = 0; k < nv; k++) {
        if (k == 0 || vtap[k].in != vtap[k - 1].in) {
            const unsigned char *y = in + (size_t)vtap[k].in * (size_t)w * (size_t)ch;
            for (int c = 0; c < ch; c++)
                for (int j = 0; j < n; j++) {
                    const int64_t *wj = weight + (size_t)j * (size_t)span;
                    const unsigned char *p = y + (size_t)first[j] * (size_t)ch + (size_t)c;
                    int64_t sum = 0;
                    for (int t = 0; t < span; t++)
                        sum += wj[t] * p[(size_t)t * (size_t)ch];
                    row[(size_t)c * (size_t)n + (size_t)j] = sum;
                }
        }
        for (size_t j = 0; j < row_len; j++)
            acc[j] += vtap[k].weight * row[j];
        int i = vtap[k].out;
        if (k + 1 == nv || vtap[k + 1].out != i)
            for (size_t j = 0; j < row_len; j++) {
                size_t c = j / (size_t)n;
                out[c * plane + (size_t)i * (size_t)n + j % (size_t)n] =
                    (unsigned char)((2 * acc[j] + area) / (2 * area));
                acc[j] = 0;
            }
    }
    free(vtap);
    return true;
}

/* Read, decode (by the file's first bytes), convert and resize item e of s
 * into out. */
static bool load_image(const RtFiles *s, const RtFile *e, int channels, int n,
                       unsigned char *out, char *err, size_t errsize)
{
    char *where = format(s->zip ? "%s: %s" : "%s/%s", s->path, e->name);
    if (!where)
        return rt_errorf(err, errsize, "%s: out of memory", s->path);
    unsigned char *data;
    size_t len;
    bool ok = rt_files_read(s, e, &data, &len, err, errsize);
    unsigned char *rgb = NULL;
    int w = 0, h = 0;
    if (ok && len >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0)
        rgb = decode_png(data, len, &w, &h, where, err, errsize);
    else if (ok && len >= 3 && memcmp(data, "\xff\xd8\xff", 3) == 0)
        rgb = decode_jpeg(data, len, &w, &h, where, err, errsize);
    else if (ok)
        rt_errorf(err, errsize, "%s: cannot decode: neither PNG nor JPEG data", where);
    ok = rgb != NULL;
    if (ok && channels == 1) {
        /* grey as Pillow's convert("L"): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 */
        size_t px = (size_t)w * (size_t)h;
        for (size_t i = 0; i < px; i++)
            rgb[i] = (unsigned char)((19595u * rgb[3 * i] + 38470u * rgb[3 * i + 1] +
                                      7471u * rgb[3 * i + 2] + 32768u) >> 16);
    }
    if (ok && !(ok = resize(rgb, w, h, channels, n, out)))
        rt_errorf(err, errsize, "%s: out of memory", where);
    free(rgb);
    free(data);
    free(where);
    return ok;
}

/* ------------------------------------------------------------------------
 * Listing: class folders, or a split CSV */

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    if (n < k)
        return false;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)name[n - k + i]) != suffix[i])
            return false;
    return true;
}

static bool is_image_name(const char *name)
{
    return has_suffix(name, ".png") || has_suffix(name, ".jpg") || has_suffix(name, ".jpeg");
}

/* A zip entry that would name a file outside the folder it is extracted
 * to: an absolute path ("/x", "\x", "C:x") or a ".." component. */
static bool unsafe_entry(const char *name)
{
    if (name[0] == '/' || name[0] == '\\' || (isalpha((unsigned char)name[0]) && name[1] == ':'))
        return true;
    for (const char *c = name; *c;) {
        size_t len = strcspn(c, "/\\");
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return true;
        c += len + (c[len] != '\0');
    }
    return false;
}

static int depth_of(const char *name)
{
    int d = 0;
    for (const char *c = name; *c; c++)
        d += *c == '/';
    return d;
}

/* The images of the folders 1 to 3 levels below the root, in
 * rt_file_compare order, keyed by folder. */
static bool list_folders(RtFiles *s, Item *item, size_t *n, char *err, size_t errsize)
{
    if (s->n > 1)
        qsort(s->file, s->n, sizeof *s->file, rt_file_compare);
    *n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *name = s->file[i].name;
        int depth = depth_of(name);
        if (!is_image_name(name) || depth == 0)
            continue;
        if (depth > RT_IMAGES_MAX_DEPTH)
            return rt_errorf(err, errsize,
                             "%s%s%s: an image %d folders below %s; classes are the folders 1 to "
                             "%d levels below it", s->path, s->zip ? ": " : "/", name, depth, s->path,
                             RT_IMAGES_MAX_DEPTH);
        item[(*n)++] = (Item){&s->file[i], name, rt_dir_len(name)};
    }
    return true;
}

static char *read_text(const char *path, size_t *len, char *err, size_t errsize)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        rt_errorf(err, errsize, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    if (fstat(fileno(f), &st) != 0)
        rt_errorf(err, errsize, "%s: cannot read: %s", path, strerror(errno));
    else if (st.st_size < 0 || (uintmax_t)st.st_size > MAX_CSV_BYTES)
        rt_errorf(err, errsize, "%s: larger than %zu bytes", path, MAX_CSV_BYTES);
    else if (!(text = malloc((size_t)st.st_size + 1)))
        rt_errorf(err, errsize, "%s: out of memory", path);
    else if (fread(text, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        rt_errorf(err, errsize, "%s: read error", path);
        free(text);
        text = NULL;
    } else {
        text[st.st_size] = '\0';
        *len = (size_t)st.st_size;
    }
    fclose(f);
    return text;
}

static int compare_name(const void *a, const void *b)
{
    return strcmp((*(const RtFile *const *)a)->name, (*(const RtFile *const *)b)->name);
}

static int compare_item(const void *pa, const void *pb)
{
    const Item *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    return c ? c : strcmp(a->file->name, b->file->name);
}

/* The file of s named `name` or "images/name", or NULL. */
static const RtFile *find_file(const RtFile *const *byname, size_t n, const char *name,
                               char *scratch)
{
    RtFile key = {.name = (char *)name};
    const RtFile *pk = &key, *const *hit = bsearch(&pk, byname, n, sizeof *byname, compare_name);
    if (hit)
        return *hit;
    strcpy(scratch, "images/");
    strcat(scratch, name);
    key.name = scratch;
    hit = bsearch(&pk, byname, n, sizeof *byname, compare_name);
    return hit ? *hit : NULL;
}

/* Split one CSV line (NUL-terminated, "\r" removed) at its comma. */
static bool split_line(char *line, char **file, char **label)
{
    char *comma = strchr(line, ',');
    if (!comma || comma == line || !comma[1] || strchr(comma + 1, ','))
        return false;
    *comma = '\0';
    *file = line;
    *label = comma + 1;
    return true;
}

/* The images the split CSV `csv` (its text, modified in place) names,
 * keyed by label and sorted by label, then file name. */
static bool list_split(const RtFiles *s, const char *csvpath, char *csv, Item *item, size_t *n,
                       char *err, size_t errsize)
{
    const RtFile **byname = malloc((s->n ? s->n : 1) * sizeof *byname);
    bool *used = calloc(s->n ? s->n : 1, sizeof *used);
    char *scratch = malloc(strlen(csv) + 8);
    bool ok = byname && used && scratch;
    if (!ok)
        rt_errorf(err, errsize, "%s: out of memory", csvpath);
    for (size_t i = 0; ok && i < s->n; i++)
        byname[i] = &s->file[i];
    if (ok && s->n > 1)
        qsort(byname, s->n, sizeof *byname, compare_name);
    if (ok && strncmp(csv, "\xef\xbb\xbf", 3) == 0)
        csv += 3;                               /* a UTF-8 byte order mark */
    *n = 0;
    bool header = false;
    int lineno = 0;
    for (char *line = csv, *next; ok && line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len == 0)
            continue;
        char *file, *label;
        if (!header) {
            header = true;
            if (strcmp(line, "filename,label") != 0)
                ok = rt_errorf(err, errsize, "%s:%d: expected the header \"filename,label\"", csvpath,
                               lineno);
            continue;
        }
        const RtFile *f = NULL;
        if (!split_line(line, &file, &label))
            ok = rt_errorf(err, errsize, "%s:%d: expected FILENAME,LABEL", csvpath, lineno);
        else if (!(f = find_file(byname, s->n, file, scratch)))
            ok = rt_errorf(err, errsize, "%s:%d: %s is in neither %s nor %s/images", csvpath, lineno,
                           file, s->path, s->path);
        else if (used[f - s->file])
            ok = rt_errorf(err, errsize, "%s:%d: %s is listed twice", csvpath, lineno, file);
        else {
            used[f - s->file] = true;
            item[(*n)++] = (Item){f, label, strlen(label)};
        }
    }
    if (ok && !header)
        ok = rt_errorf(err, errsize, "%s: empty; expected the header \"filename,label\"", csvpath);
    if (ok && *n > 1)
        qsort(item, *n, sizeof *item, compare_item);
    free(byname);
    free(used);
    free(scratch);
    return ok;
}

/* ------------------------------------------------------------------------
 * Loading */

/* Bytes of memory this process may still take: MemAvailable, or less under
 * a cgroup limit; SIZE_MAX when neither can be read. */
static size_t available_memory(void)
{
    size_t avail = SIZE_MAX;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1 && kb < SIZE_MAX / 1024)
                avail = (size_t)kb * 1024;
        fclose(f);
    } else {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0 && (size_t)pages < SIZE_MAX / (size_t)page)
            avail = (size_t)pages * (size_t)page;
    }
    unsigned long long max = 0, cur = 0;
    FILE *m = fopen("/sys/fs/cgroup/memory.max", "r"), *c = fopen("/sys/fs/cgroup/memory.current", "r");
    if (m && c && fscanf(m, "%llu", &max) == 1 && fscanf(c, "%llu", &cur) == 1 && max >= cur &&
        max - cur < avail)
        avail = (size_t)(max - cur);
    if (m)
        fclose(m);
    if (c)
        fclose(c);
    return avail;
}

static bool same_key(const Item *a, const Item *b)
{
    return a->keylen == b->keylen && memcmp(a->key, b->key, a->keylen) == 0;
}

/* Group the sorted items into im's classes. */
static bool group_classes(RtImages *im, const Item *item, size_t n, char *err, size_t errsize)
{
    static const char *const suffix[4] = {"", "@90", "@180", "@270"};
    int nclass = 0;
    for (size_t i = 0; i < n; i++)
        nclass += i == 0 || !same_key(&item[i - 1], &item[i]);
    im->first = malloc(((size_t)nclass + 1) * sizeof *im->first);
    im->class_name = calloc((size_t)nclass * (size_t)im->rot + 1, sizeof *im->class_name);
    if (!im->first || !im->class_name)
        return rt_errorf(err, errsize, "%s: out of memory", im->name);
    im->nclass = nclass;
    im->min_images = INT_MAX;
    for (size_t i = 0, c = 0; i < n; i++) {
        if (i > 0 && same_key(&item[i - 1], &item[i]))
            continue;
        im->first[c] = (int)i;
        for (int r = 0; r < im->rot; r++) {
            char *name = malloc(item[i].keylen + 6);
            if (!name)
                return rt_errorf(err, errsize, "%s: out of memory", im->name);
            memcpy(name, item[i].key, item[i].keylen);
            strcpy(name + item[i].keylen, suffix[r]);
            im->class_name[c * (size_t)im->rot + (size_t)r] = name;
        }
        c++;
    }
    im->first[nclass] = (int)n;
    for (int c = 0; c < nclass; c++)
        if (im->first[c + 1] - im->first[c] < im->min_images)
            im->min_images = im->first[c + 1] - im->first[c];
    return true;
}

static bool check_spec(const char *path, const RtImagesSpec *sp, char *err, size_t errsize)
{
    if (sp->size < 1 || sp->size > RT_IMAGES_MAX_SIZE)
        return rt_errorf(err, errsize, "%s: image size %d is outside 1..%d", path, sp->size,
                         RT_IMAGES_MAX_SIZE);
    if (sp->channels != 1 && sp->channels != 3)
        return rt_errorf(err, errsize, "%s: channels must be 1 or 3, not %d", path, sp->channels);
    if (sp->nnorm != 0 && sp->nnorm != sp->channels)
        return rt_errorf(err, errsize, "%s: mean and std need one value per channel (%d), not %d",
                         path, sp->channels, sp->nnorm);
    for (int c = 0; c < sp->nnorm; c++)
        if (!(sp->std[c] > 0))
            return rt_errorf(err, errsize, "%s: std must be positive, not %g", path, sp->std[c]);
    return true;
}

static void make_tables(RtImages *im, const RtImagesSpec *sp)
{
    for (int c = 0; c < im->channels; c++)
        for (int b = 0; b < 256; b++) {
            double v = b / 255.0;
            if (sp->nnorm)
                v = (v - sp->mean[c]) / sp->std[c];
            im->lut64[c][b] = v;
            im->lut32[c][b] = (float)v;
        }
}

/* The zip's entries all stay inside it; else a message naming the first
 * that does not. */
static bool check_entries(const RtFiles *s, char *err, size_t errsize)
{
    for (size_t i = 0; s->zip && i < s->n; i++)
        if (unsafe_entry(s->file[i].name))
            return rt_errorf(err, errsize,
                             "%s: entry %s: an absolute path or a '..' component is refused",
                             s->path, s->file[i].name);
    return true;
}

/* Whether n images of `image` bytes each fit in the memory available. */
static bool check_memory(const RtImages *im, size_t n, size_t image, char *err, size_t errsize)
{
    size_t avail = available_memory();
    if (image == 0 || n <= avail / image)
        return true;
    return rt_errorf(err, errsize,
                     "%s: %zu images of %dx%dx%d need %.1f GB, more than the %.1f GB of memory "
                     "available; give a smaller size or fewer images", im->name, n, im->channels,
                     im->size, im->size, (double)n * (double)image / 1e9, (double)avail / 1e9);
}

RtImages *rt_images_open(const char *path, const RtImagesSpec *sp, char *err, size_t errsize)
{
    if (!check_spec(path, sp, err, errsize))
        return NULL;
    RtImages *im = calloc(1, sizeof *im);
    if (!im || !(im->name = sp->split ? format("%s (%s)", sp->split, path) : rt_dup_string(path))) {
        free(im);
        rt_errorf(err, errsize, "%s: out of memory", path);
        return NULL;
    }
    im->size = sp->size;
    im->channels = sp->channels;
    im->rot = sp->rotations ? 4 : 1;
    make_tables(im, sp);
    RtFiles s;
    if (!rt_files_open(&s, path, err, errsize)) {
        rt_images_close(im);
        return NULL;
    }
    size_t n = 0, csvlen = 0;
    char *csv = sp->split ? read_text(sp->split, &csvlen, err, errsize) : NULL;
    Item *item = malloc((s.n ? s.n : 1) * sizeof *item);
    bool ok = (!sp->split || csv) && check_entries(&s, err, errsize);
    if (ok && !item)
        ok = rt_errorf(err, errsize, "%s: out of memory", path);
    if (ok)
        ok = csv ? list_split(&s, sp->split, csv, item, &n, err, errsize)
                 : list_folders(&s, item, &n, err, errsize);
    if (ok && n == 0)
        ok = rt_errorf(err, errsize,
                       csv ? "%s: no images listed" : "%s: no PNG or JPEG images in folders 1 to 3 "
                                                      "levels below it", im->name);
    else if (ok && n > INT_MAX / 4)
        ok = rt_errorf(err, errsize, "%s: %zu images are too many", im->name, n);
    size_t image = (size_t)sp->channels * (size_t)sp->size * (size_t)sp->size;
    ok = ok && check_memory(im, n, image, err, errsize) && group_classes(im, item, n, err, errsize);
    if (ok && !(im->pix = malloc(n * image)))
        ok = rt_errorf(err, errsize, "%s: out of memory for %zu images", im->name, n);
    for (size_t i = 0; ok && i < n; i++)
        ok = load_image(&s, item[i].file, sp->channels, sp->size, im->pix + i * image, err, errsize);
    free(item);
    free(csv);
    rt_files_close(&s);
    if (!ok) {
        rt_images_close(im);
        return NULL;
    }
    return im;
}

void rt_images_close(RtImages *im)
{
    if (!im)
        return;
    if (im->class_name)
        for (int c = 0; c < im->nclass * im->rot; c++)
            free(im->class_name[c]);
    free(im->class_name);
    free(im->first);
    free(im->pix);
    free(im->name);
    free(im);
}

const char *rt_images_name(const RtImages *im)
{
    return im->name;
}

int rt_images_classes(const RtImages *im)
{
    return im->nclass * im->rot;
}

int rt_images_count(const RtImages *im)
{
    return im->first[im->nclass];
}

size_t rt_images_bytes(const RtImages *im)
{
    return (size_t)rt_images_count(im) * (size_t)im->channels * (size_t)im->size * (size_t)im->size;
}

int rt_images_size(const RtImages *im)
{
    return im->size;
}

int rt_images_channels(const RtImages *im)
{
    return im->channels;
}

int rt_images_per_class(const RtImages *im, int cls)
{
    int c = cls / im->rot;
    return im->first[c + 1] - im->first[c];
}

const char *rt_images_class_name(const RtImages *im, int cls)
{
    return im->class_name[cls];
}

/* ------------------------------------------------------------------------
 * Tasks */

/* Image i of class cls to reals [at, ...) of out: each channel plane
 * rotated counter-clockwise by 90 (cls % rot) degrees (rt_rot90). */
static void put_image(const void *data, int cls, int i, RtReal real, void *out, size_t at)
{
    const RtImages *im = data;
    ptrdiff_t m = im->size;
    RtRot90 q = rt_rot90(m, cls % im->rot);
    size_t plane = (size_t)(m * m);
    const unsigned char *src =
        im->pix + ((size_t)im->first[cls / im->rot] + (size_t)i) * (size_t)im->channels * plane;
    for (int c = 0; c < im->channels; c++, src += plane, at += plane)
        for (ptrdiff_t a = 0; a < m; a++) {
            const unsigned char *s = src + a * m;
            ptrdiff_t o = (ptrdiff_t)at + q.start + a * q.da;
            if (real == RT_F32)
                for (ptrdiff_t b = 0; b < m; b++)
                    ((float *)out)[o + b * q.db] = im->lut32[c][s[b]];
            else
                for (ptrdiff_t b = 0; b < m; b++)
                    ((double *)out)[o + b * q.db] = im->lut64[c][s[b]];
        }
}

static int per_class(const void *im, int cls)
{
    return rt_images_per_class(im, cls);
}

void rt_images_image(const RtImages *im, int cls, int i, RtReal real, void *out)
{
    put_image(im, cls, i, real, out, 0);
}

bool rt_images_check(const RtImages *im, int ways, int shots, int queries, char *err,
                     size_t errsize)
{
    if (ways < 1 || shots < 0 || queries < 0)
        return rt_errorf(err, errsize, "%s: ways must be at least 1 and shots and queries not "
                         "negative (%d, %d, %d)", im->name, ways, shots, queries);
    if (ways > rt_images_classes(im))
        return rt_errorf(err, errsize, "%s has only %d classes, fewer than the %d ways asked for",
                         im->name, rt_images_classes(im), ways);
    if (shots > INT_MAX - queries || shots + queries > im->min_images) {
        int c = 0;
        while (rt_images_per_class(im, c) > im->min_images)
            c++;
        return rt_errorf(err, errsize, "%s: class %s has %d images, fewer than shots + queries = %lld",
                         im->name, im->class_name[c], im->min_images, (long long)shots + queries);
    }
    return true;
}

bool rt_images_task(const RtImages *im, uint64_t seed, uint64_t task, int ways, int shots,
                    int queries, RtReal real, void *sx, int32_t *sy, void *qx, int32_t *qy)
{
    if (!im || !rt_images_check(im, ways, shots, queries, NULL, 0))
        return false;
    RtTaskData d = {im, rt_images_classes(im),
                    (size_t)im->channels * (size_t)im->size * (size_t)im->size, per_class, put_image};
    return rt_draw_task(&d, seed, task, ways, shots, queries, real, sx, sy, qx, qy);
}

void rt_images_sample(const void *ctx, uint64_t seed, uint64_t task,
                      void *sx, void *sy, void *qx, void *qy)
{
    const RtImagesSource *s = ctx;
    const RtImages *im = (task & RT_EVAL_TASK) && s->eval ? s->eval : s->data;
    if (rt_images_task(im, seed, task, s->ways, s->shots, s->queries, s->real, sx, sy, qx, qy))
        return;
    if (im && s->ways >= 1 && s->shots >= 0 && s->queries >= 0)
        rt_zero_task((size_t)im->channels * (size_t)im->size * (size_t)im->size, s->ways, s->shots,
                     s->queries, s->real, sx, sy, qx, qy);
}
