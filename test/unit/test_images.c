/* Image data sets (runtime/images.h) on small files this test writes with
 * libpng, libjpeg and libzip: class folders at depths 1 and 2, resizing
 * against a naive area average, grey conversion, normalisation, rotations,
 * zips, split files, task draws, and the errors. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <jpeglib.h>            /* after stdio.h, which it needs */

#include "check.h"
#include "images.h"

enum { W = 7, H = 5, N = 3, PER = 3 };          /* 7x5 images resized to 3x3, 3 a class */

static char root[256];
static const char *const class_dir[] = {"cls0", "cls1", "sub/cls2"};

/* Pixel (channel c, row y, column x) of image i of class k: fixed, distinct. */
static unsigned char pixel(int k, int i, int c, int y, int x)
{
    unsigned v = (unsigned)(k * 7919 + i * 104729 + c * 31 + y * 17 + x * 131);
    v ^= v >> 7;
    return (unsigned char)(v * 2654435761u >> 24);
}

static void path_of(char *out, size_t n, const char *a, const char *b)
{
    snprintf(out, n, "%s/%s", a, b);
}

static bool write_png(const char *path, int k, int i)
{
    unsigned char rgb[H][W][3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                rgb[y][x][c] = pixel(k, i, c, y, x);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = W;
    img.height = H;
    img.format = PNG_FORMAT_RGB;
    return png_image_write_to_file(&img, path, 0, rgb, 0, NULL) != 0;
}

/* A side x side JPEG of one colour, at quality 100. */
static bool write_jpeg(const char *path, int side, const unsigned char colour[3])
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)side;
    c.image_height = (JDIMENSION)side;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    unsigned char row[3 * 64];
    for (int x = 0; x < side; x++)
        memcpy(row + 3 * x, colour, 3);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(f) == 0;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* The overlap of input pixel x and output pixel j along an axis of m
 * resized to n, in units of 1/n, by its definition. */
static long overlap(int m, int n, int x, int j)
{
    long lo = (long)x * n > (long)j * m ? (long)x * n : (long)j * m;
    long hi = (long)(x + 1) * n < (long)(j + 1) * m ? (long)(x + 1) * n : (long)(j + 1) * m;
    return hi > lo ? hi - lo : 0;
}

/* The resized byte (row i, column j) of a plane given by f, naively: the
 * area-weighted mean over the output pixel's footprint, rounded half up. */
static int reference(int k, int im, int c, int i, int j, bool grey)
{
    long sum = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            long p = pixel(k, im, c, y, x);
            if (grey)
                p = (19595L * pixel(k, im, 0, y, x) + 38470L * pixel(k, im, 1, y, x) +
                     7471L * pixel(k, im, 2, y, x) + 32768) >> 16;
            sum += overlap(H, N, y, i) * overlap(W, N, x, j) * p;
        }
    long area = (long)W * H;
    return (int)((2 * sum + area) / (2 * area));
}

static RtImages *open_with(const char *path, int channels, bool rotations, const char *split,
                           char *err, size_t errsize)
{
    RtImagesSpec sp = {.size = N, .channels = channels, .rotations = rotations, .split = split};
    return rt_images_open(path, &sp, err, errsize);
}

static void test_folders(void)
{
    char err[1024];
    RtImages *im = open_with(root, 3, false, NULL, err, sizeof err);
    CHECK(im, "open: %s", err);
    if (!im)
        return;
    EXPECT(rt_images_classes(im) == 3);
    EXPECT(rt_images_count(im) == 3 * PER);
    EXPECT(rt_images_bytes(im) == 3 * PER * 3 * N * N);
    for (int k = 0; k < 3; k++) {
        CHECK(strcmp(rt_images_class_name(im, k), class_dir[k]) == 0, "class %d is %s", k,
              rt_images_class_name(im, k));
        EXPECT(rt_images_per_class(im, k) == PER);
    }
    int bad = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < PER; i++) {
            double v[3 * N * N];
            rt_images_image(im, k, i, RT_F64, v);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < N; y++)
                    for (int x = 0; x < N; x++)
                        bad += v[(c * N + y) * N + x] * 255 != reference(k, i, c, y, x, false);
        }
    CHECK(bad == 0, "%d RGB pixels differ from the naive area average", bad);
    rt_images_close(im);

    /* grey, normalised */
    RtImagesSpec sp = {.size = N, .channels = 1, .nnorm = 1, .mean = {0.25}, .std = {0.5}};
    im = rt_images_open(root, &sp, err, sizeof err);
    CHECK(im, "open grey: %s", err);
    if (!im)
        return;
    bad = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < PER; i++) {
            float v[N * N];
            rt_images_image(im, k, i, RT_F32, v);
            for (int y = 0; y < N; y++)
                for (int x = 0; x < N; x++)
                    bad += v[y * N + x] != (float)((reference(k, i, 0, y, x, true) / 255.0 - 0.25) / 0.5);
        }
    CHECK(bad == 0, "%d grey pixels differ", bad);
    rt_images_close(im);
}

static void test_rotations(void)
{
    char err[1024];
    RtImages *im = open_with(root, 3, true, NULL, err, sizeof err);
    CHECK(im, "open: %s", err);
    if (!im)
        return;
    EXPECT(rt_images_classes(im) == 12);
    EXPECT(strcmp(rt_images_class_name(im, 4 * 2 + 3), "sub/cls2@270") == 0);
    int bad = 0;
    for (int r = 1; r < 4; r++) {
        double a[3 * N * N], b[3 * N * N];
        rt_images_image(im, 4 * 1 + r - 1, 2, RT_F64, a);
        rt_images_image(im, 4 * 1 + r, 2, RT_F64, b);
        /* numpy.rot90 once more: b[i][j] = a[j][n-1-i], per channel */
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                    bad += b[(c * N + i) * N + j] != a[(c * N + j) * N + (N - 1 - i)];
    }
    CHECK(bad == 0, "%d rotated pixels differ", bad);
    rt_images_close(im);
}

/* The tree under root, zipped (entries in the order given), plus `extra`. */
static bool make_zip(const char *zippath, const char *extra)
{
    zip_t *z = zip_open(zippath, ZIP_CREATE | ZIP_TRUNCATE, NULL);
    bool ok = z != NULL;
    for (int k = 0; ok && k < 3; k++)
        for (int i = 0; ok && i < PER; i++) {
            char name[64], file[512];
            snprintf(name, sizeof name, "%s/%d.png", class_dir[k], i);
            path_of(file, sizeof file, root, name);
            zip_source_t *s = zip_source_file(z, file, 0, -1);
            ok = s && zip_file_add(z, name, s, 0) >= 0;
        }
    if (ok && extra) {
        char file[512];
        path_of(file, sizeof file, root, "cls0/0.png");
        zip_source_t *s = zip_source_file(z, file, 0, -1);
        ok = s && zip_file_add(z, extra, s, 0) >= 0;
    }
    return z && zip_close(z) == 0 && ok;
}

static void test_zip(void)
{
    char zippath[512], err[1024];
    path_of(zippath, sizeof zippath, root, "../images-test.zip");
    CHECK(make_zip(zippath, NULL), "cannot write %s", zippath);
    RtImages *a = open_with(root, 3, false, NULL, err, sizeof err);
    RtImages *b = open_with(zippath, 3, false, NULL, err, sizeof err);
    CHECK(a && b, "open: %s", err);
    if (a && b) {
        EXPECT(rt_images_classes(b) == 3 && rt_images_count(b) == 3 * PER);
        int bad = 0;
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < PER; i++) {
                float x[3 * N * N], y[3 * N * N];
                rt_images_image(a, k, i, RT_F32, x);
                rt_images_image(b, k, i, RT_F32, y);
                bad += memcmp(x, y, sizeof x) != 0;
            }
        CHECK(bad == 0, "%d images of the zip differ from the folder's", bad);
    }
    rt_images_close(a);
    rt_images_close(b);
    static const char *const unsafe[] = {"../x/0.png", "/abs/0.png", "cls0/../../0.png"};
    for (int u = 0; u < 3; u++) {
        CHECK(make_zip(zippath, unsafe[u]), "cannot write %s", zippath);
        RtImages *im = open_with(zippath, 3, false, NULL, err, sizeof err);
        CHECK(!im && strstr(err, unsafe[u]) && strstr(err, "'..' component is refused"),
              "%s: %s", unsafe[u], im ? "opened" : err);
        rt_images_close(im);
    }
    remove(zippath);
}

static void test_split(void)
{
    char csv[512], err[1024];
    path_of(csv, sizeof csv, root, "split.csv");
    /* "images/" is tried after the name itself; labels order the classes */
    write_text(csv, "\xef\xbb\xbf" "filename,label\r\n"
                    "a.png,zebra\r\n" "cls0/1.png,ant\r\n" "b.png,zebra\r\n" "\r\n" "cls1/2.png,ant\r\n");
    char img[512];
    path_of(img, sizeof img, root, "images");
    mkdir(img, 0777);
    path_of(img, sizeof img, root, "images/a.png");
    write_png(img, 5, 0);
    path_of(img, sizeof img, root, "images/b.png");
    write_png(img, 5, 1);
    RtImages *im = open_with(root, 3, false, csv, err, sizeof err);
    CHECK(im, "open split: %s", err);
    if (im) {
        EXPECT(rt_images_classes(im) == 2 && rt_images_count(im) == 4);
        EXPECT(strcmp(rt_images_class_name(im, 0), "ant") == 0);
        EXPECT(strcmp(rt_images_class_name(im, 1), "zebra") == 0);
        double v[3 * N * N];
        rt_images_image(im, 0, 1, RT_F64, v);           /* cls1/2.png, after cls0/1.png */
        EXPECT(v[0] * 255 == reference(1, 2, 0, 0, 0, false));
        rt_images_image(im, 1, 1, RT_F64, v);           /* images/b.png */
        EXPECT(v[0] * 255 == reference(5, 1, 0, 0, 0, false));
        CHECK(strstr(rt_images_name(im), "split.csv (") != NULL, "name %s", rt_images_name(im));
    }
    rt_images_close(im);
    write_text(csv, "filename,label\nnone.png,x\n");
    im = open_with(root, 3, false, csv, err, sizeof err);
    CHECK(!im && strstr(err, "split.csv:2: none.png is in neither"), "%s", im ? "opened" : err);
    rt_images_close(im);
    remove(csv);
    path_of(img, sizeof img, root, "images/a.png");
    remove(img);
    path_of(img, sizeof img, root, "images/b.png");
    remove(img);
    path_of(img, sizeof img, root, "images");
    rmdir(img);
}

static void test_tasks(void)
{
    char err[1024];
    RtImages *im = open_with(root, 3, false, NULL, err, sizeof err);
    CHECK(im, "open: %s", err);
    if (!im)
        return;
    enum { WAYS = 3, SHOTS = 1, QUERIES = 2, PX = 3 * N * N };
    float sx[2][WAYS * SHOTS * PX], qx[2][WAYS * QUERIES * PX];
    int32_t sy[2][WAYS * SHOTS], qy[2][WAYS * QUERIES];
    for (int t = 0; t < 2; t++)
        EXPECT(rt_images_task(im, 9, 17, WAYS, SHOTS, QUERIES, RT_F32, sx[t], sy[t], qx[t], qy[t]));
    EXPECT(memcmp(sx[0], sx[1], sizeof sx[0]) == 0 && memcmp(qx[0], qx[1], sizeof qx[0]) == 0);
    EXPECT(memcmp(sy[0], sy[1], sizeof sy[0]) == 0 && memcmp(qy[0], qy[1], sizeof qy[0]) == 0);
    int seen = 0;
    for (int i = 0; i < WAYS; i++) {
        seen |= 1 << sy[0][i];
        for (int q = 0; q < QUERIES; q++) {
            EXPECT(qy[0][i * QUERIES + q] == sy[0][i]);
            EXPECT(memcmp(sx[0] + i * PX, qx[0] + (i * QUERIES + q) * PX, PX * sizeof(float)) != 0);
        }
    }
    EXPECT(seen == 7);
    EXPECT(rt_images_check(im, 3, 1, 2, err, sizeof err));
    CHECK(!rt_images_check(im, 4, 1, 1, err, sizeof err) && strstr(err, "has only 3 classes, fewer than the 4 ways"),
          "%s", err);
    CHECK(!rt_images_check(im, 2, 2, 2, err, sizeof err) &&
          strstr(err, "class cls0 has 3 images, fewer than shots + queries = 4"), "%s", err);
    EXPECT(!rt_images_task(im, 9, 17, 4, 1, 1, RT_F32, sx[0], sy[0], qx[0], qy[0]));
    rt_images_close(im);
}

static void test_jpeg_and_errors(void)
{
    char dir[512], path[1024], err[1024];
    path_of(dir, sizeof dir, root, "../images-jpeg");
    mkdir(dir, 0777);
    path_of(path, sizeof path, dir, "red");
    mkdir(path, 0777);
    path_of(path, sizeof path, dir, "red/0.JPG");
    const unsigned char red[3] = {200, 30, 60};
    CHECK(write_jpeg(path, 16, red), "cannot write %s", path);
    RtImages *im = open_with(dir, 3, false, NULL, err, sizeof err);
    CHECK(im, "open jpeg: %s", err);
    if (im) {
        double v[3 * N * N];
        rt_images_image(im, 0, 0, RT_F64, v);
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(v[c * N * N + 4] * 255, red[c], 3);
    }
    rt_images_close(im);
    /* a JPEG cut short, then not an image at all */
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    f = fopen(path, "wb");
    if (f) {
        fwrite(buf, 1, len / 2, f);
        fclose(f);
    }
    im = open_with(dir, 3, false, NULL, err, sizeof err);
    CHECK(!im && strstr(err, "red/0.JPG: cannot decode JPEG: Premature end of JPEG file"), "%s",
          im ? "opened" : err);
    rt_images_close(im);
    write_text(path, "not an image");
    im = open_with(dir, 3, false, NULL, err, sizeof err);
    CHECK(!im && strstr(err, "red/0.JPG: cannot decode: neither PNG nor JPEG data"), "%s",
          im ? "opened" : err);
    rt_images_close(im);
    RtImagesSpec sp = {.size = N, .channels = 2};
    im = rt_images_open(dir, &sp, err, sizeof err);
    CHECK(!im && strstr(err, "channels must be 1 or 3"), "%s", im ? "opened" : err);
    nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof root, "%s/mamlc-images-XXXXXX", base);
    if (!mkdtemp(root)) {
        perror(root);
        return 1;
    }
    char path[512];
    path_of(path, sizeof path, root, "sub");
    mkdir(path, 0777);
    for (int k = 0; k < 3; k++) {
        path_of(path, sizeof path, root, class_dir[k]);
        mkdir(path, 0777);
        for (int i = 0; i < PER; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s/%d.png", class_dir[k], i);
            path_of(path, sizeof path, root, name);
            CHECK(write_png(path, k, i), "cannot write %s", path);
        }
    }
    path_of(path, sizeof path, root, "top.png");       /* directly in the root: in no class */
    write_png(path, 9, 0);
    test_folders();
    test_rotations();
    test_zip();
    test_split();
    test_tasks();
    test_jpeg_and_errors();
    nftw(root, remove_one, 8, FTW_DEPTH | FTW_PHYS);
    return check_summary();
}
