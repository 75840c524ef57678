/* Charts as SVG, written by hand: a plot area with axes, ticks at nice
 * numbers (1, 2 or 5 times a power of ten), grid lines, labels, lines,
 * shaded bands, markers and a legend.  What mamlc plot draws with. */
#ifndef MAMLC_TOOLS_SVG_H
#define MAMLC_TOOLS_SVG_H

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    int id;                     /* unique in the picture (names its clip path) */
    double left, top, width, height;   /* the plot area, in pixels */
    double x0, x1, y0, y1;      /* the data shown; with logy, y0 and y1 are log10 of its range */
    bool logy;                  /* a logarithmic y axis (positive data only) */
    bool xthousands;            /* x tick labels 10k, 20k, ... */
} SvgChart;

typedef struct {
    const char *label;
    const char *color;
    const char *dash;           /* stroke-dasharray, or NULL: solid */
    bool line;                  /* a line in the key */
    bool marker;                /* a dot in the key */
    bool band;                  /* a shaded box in the key */
} SvgKey;

/* The line colours, in order, and how many there are. */
extern const char *const svg_palette[];
extern const int svg_npalette;

/* "<svg ...>" for a width x height picture with a white background, and its end. */
void svg_begin(FILE *f, double width, double height);
void svg_end(FILE *f);

/* Text at (x, y) with anchor "start", "middle" or "end"; escaped. */
void svg_text(FILE *f, double x, double y, const char *anchor, double size, const char *weight, const char *text);

/* The range [lo, hi] of the data a chart shows, widened to nice ticks
 * (with logy, to whole decades; lo and hi must then be positive).  A
 * range of one value is widened around it. */
void svg_range(double *lo, double *hi, bool log);

/* Frame, grid, ticks and their labels, the axis labels and the title of c
 * (its ranges set); opens the clip path that the drawing calls use. */
void svg_axes(SvgChart *c, const char *title, const char *xlabel, const char *ylabel);

/* A polyline through the n points (x[i], y[i]); a point that is not finite
 * (or not positive on a log axis) breaks the line. */
void svg_line(const SvgChart *c, const double *x, const double *y, int n, const char *color, double width,
              const char *dash);
/* The band between lo[i] and hi[i] over x[i], shaded. */
void svg_band(const SvgChart *c, const double *x, const double *lo, const double *hi, int n, const char *color,
              double opacity);
/* A dot of radius r at each point. */
void svg_dots(const SvgChart *c, const double *x, const double *y, int n, const char *color, double r);

/* A key of n entries in a box at the top right of c's plot area. */
void svg_legend(const SvgChart *c, const SvgKey *key, int n);

#endif
