#include "svg.h"

#include <math.h>
#include <string.h>

const char *const svg_palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                                   "#17becf"};
const int svg_npalette = sizeof svg_palette / sizeof *svg_palette;

static const char FONT[] = "DejaVu Sans, Helvetica, Arial, sans-serif";

void svg_begin(FILE *f, double width, double height) {
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"%s\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            width, height, width, height, FONT);
}

void svg_end(FILE *f) { fputs("</svg>\n", f); }

static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else if ((unsigned char)*s >= 0x20 || *s == '\t')
            fputc(*s, f);
    }
}

void svg_text(FILE *f, double x, double y, const char *anchor, double size, const char *weight, const char *text) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%g\"%s%s%s>", x, y, anchor, size,
            weight ? " font-weight=\"" : "", weight ? weight : "", weight ? "\"" : "");
    put_escaped(f, text);
    fputs("</text>\n", f);
}

/* The tick step for about `target` ticks over span: 1, 2 or 5 times a power of ten. */
static double nice_step(double span, int target) {
    double raw = span / target, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

void svg_range(double *lo, double *hi, bool log) {
    if (log) {
        *lo = pow(10, floor(log10(*lo) + 1e-9));
        *hi = pow(10, ceil(log10(*hi) - 1e-9));
        if (*hi <= *lo)
            *hi = *lo * 10;
        return;
    }
    if (!(*hi > *lo)) {
        double w = *lo != 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= w;
        *hi += w;
    }
    double step = nice_step(*hi - *lo, 5);
    *lo = floor(*lo / step + 1e-9) * step;
    *hi = ceil(*hi / step - 1e-9) * step;
}

static double px(const SvgChart *c, double x) { return c->left + (x - c->x0) / (c->x1 - c->x0) * c->width; }

/* y in pixels, or NAN where it cannot be shown (not finite, or not positive on a log axis). */
static double py(const SvgChart *c, double y) {
    if (c->logy)
        y = y > 0 ? log10(y) : NAN;
    return isfinite(y) ? c->top + (c->y1 - y) / (c->y1 - c->y0) * c->height : NAN;
}

/* Whether (x, y) can be drawn on c. */
static bool shown(const SvgChart *c, double x, double y) { return isfinite(x) && isfinite(py(c, y)); }

/* A tick label for v on an axis of ticks `step` apart. */
static void tick_label(char *buf, size_t size, double v, double step, bool thousands) {
    if (fabs(v) < step * 1e-6)
        v = 0;
    if (thousands && fabs(v) >= 1000 && fmod(v, 1000) == 0) {
        snprintf(buf, size, "%gk", v / 1000);
        return;
    }
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4))
        snprintf(buf, size, "%g", v);
    else
        snprintf(buf, size, "%.*f", decimals, v);
}

static void grid_line(const SvgChart *c, bool vertical, double at, bool major) {
    if (vertical)
        fprintf(c->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"", at, c->top, at, c->top + c->height);
    else
        fprintf(c->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"", c->left, at, c->left + c->width, at);
    fprintf(c->f, " stroke=\"%s\" stroke-width=\"1\"/>\n", major ? "#dddddd" : "#f0f0f0");
}

void svg_axes(SvgChart *c, const char *title, const char *xlabel, const char *ylabel) {
    FILE *f = c->f;
    char label[64];
    double xstep = nice_step(c->x1 - c->x0, 6);
    for (double v = ceil(c->x0 / xstep - 1e-9) * xstep; v <= c->x1 + xstep * 1e-9; v += xstep) {
        double x = px(c, v);
        grid_line(c, true, x, true);
        tick_label(label, sizeof label, v, xstep, c->xthousands);
        svg_text(f, x, c->top + c->height + 16, "middle", 11, NULL, label);
    }
    if (c->logy) {
        int decades = (int)lround(c->y1 - c->y0);
        for (int e = (int)lround(c->y0); e <= (int)lround(c->y1); e++) {
            for (int m = 1; m < 10 && (m == 1 || e < (int)lround(c->y1)); m++) {
                double y = py(c, m * pow(10, e));
                bool labelled = m == 1 || (decades <= 2 && (m == 2 || m == 5));
                grid_line(c, false, y, m == 1);
                if (labelled) {
                    snprintf(label, sizeof label, "%g", m * pow(10, e));
                    svg_text(f, c->left - 6, y + 4, "end", 11, NULL, label);
                }
            }
        }
    } else {
        double ystep = nice_step(c->y1 - c->y0, 5);
        for (double v = ceil(c->y0 / ystep - 1e-9) * ystep; v <= c->y1 + ystep * 1e-9; v += ystep) {
            double y = py(c, v);
            grid_line(c, false, y, true);
            tick_label(label, sizeof label, v, ystep, false);
            svg_text(f, c->left - 6, y + 4, "end", 11, NULL, label);
        }
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333333\"/>\n",
            c->left, c->top, c->width, c->height);
    if (title)
        svg_text(f, c->left + c->width / 2, c->top - 10, "middle", 14, "bold", title);
    if (xlabel)
        svg_text(f, c->left + c->width / 2, c->top + c->height + 36, "middle", 12, NULL, xlabel);
    if (ylabel) {
        fprintf(f, "<g transform=\"translate(%.1f %.1f) rotate(-90)\">\n", c->left - 48, c->top + c->height / 2);
        svg_text(f, 0, 0, "middle", 12, NULL, ylabel);
        fputs("</g>\n", f);
    }
    fprintf(f, "<clipPath id=\"plot%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n",
            c->id, c->left, c->top, c->width, c->height);
}

void svg_line(const SvgChart *c, const double *x, const double *y, int n, const char *color, double width,
              const char *dash) {
    for (int i = 0; i < n;) {
        while (i < n && !shown(c, x[i], y[i]))
            i++;
        int start = i;
        while (i < n && shown(c, x[i], y[i]))
            i++;
        if (i == start)
            continue;
        fprintf(c->f, "<polyline clip-path=\"url(#plot%d)\" fill=\"none\" stroke=\"%s\" stroke-width=\"%g\"%s%s%s "
                      "stroke-linejoin=\"round\" points=\"", c->id, color, width, dash ? " stroke-dasharray=\"" : "",
                dash ? dash : "", dash ? "\"" : "");
        for (int k = start; k < i; k++)
            fprintf(c->f, "%s%.2f,%.2f", k > start ? " " : "", px(c, x[k]), py(c, y[k]));
        fputs("\"/>\n", c->f);
    }
}

void svg_band(const SvgChart *c, const double *x, const double *lo, const double *hi, int n, const char *color,
              double opacity) {
    for (int i = 0; i < n;) {
        while (i < n && !(shown(c, x[i], lo[i]) && shown(c, x[i], hi[i])))
            i++;
        int start = i;
        while (i < n && shown(c, x[i], lo[i]) && shown(c, x[i], hi[i]))
            i++;
        if (i == start)
            continue;
        fprintf(c->f, "<polygon clip-path=\"url(#plot%d)\" fill=\"%s\" fill-opacity=\"%g\" stroke=\"none\" points=\"",
                c->id, color, opacity);
        for (int k = start; k < i; k++)
            fprintf(c->f, "%.2f,%.2f ", px(c, x[k]), py(c, hi[k]));
        for (int k = i - 1; k >= start; k--)
            fprintf(c->f, "%.2f,%.2f%s", px(c, x[k]), py(c, lo[k]), k > start ? " " : "");
        fputs("\"/>\n", c->f);
    }
}

void svg_dots(const SvgChart *c, const double *x, const double *y, int n, const char *color, double r) {
    fprintf(c->f, "<g clip-path=\"url(#plot%d)\" fill=\"%s\" stroke=\"white\" stroke-width=\"0.8\">\n", c->id, color);
    for (int i = 0; i < n; i++)
        if (shown(c, x[i], y[i]))
            fprintf(c->f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%g\"/>\n", px(c, x[i]), py(c, y[i]), r);
    fputs("</g>\n", c->f);
}

void svg_legend(const SvgChart *c, const SvgKey *key, int n) {
    double width = 0, row = 16;
    for (int i = 0; i < n; i++) {
        double w = 6.2 * (double)strlen(key[i].label);
        width = w > width ? w : width;
    }
    width += 44;
    double x = c->left + c->width - width - 8, y = c->top + 8;
    fprintf(c->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" fill-opacity=\"0.85\" "
                  "stroke=\"#bbbbbb\"/>\n", x, y, width, row * n + 8);
    for (int i = 0; i < n; i++) {
        const SvgKey *k = &key[i];
        double cy = y + 4 + row * i + row / 2;
        if (k->band)
            fprintf(c->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"24\" height=\"10\" fill=\"%s\" fill-opacity=\"0.2\"/>\n",
                    x + 6, cy - 5, k->color);
        if (k->line)
            fprintf(c->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s%s%s/>\n",
                    x + 6, cy, x + 30, cy, k->color, k->dash ? " stroke-dasharray=\"" : "", k->dash ? k->dash : "",
                    k->dash ? "\"" : "");
        if (k->marker)
            fprintf(c->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", x + 18, cy, k->color);
        svg_text(c->f, x + 36, cy + 4, "start", 11, NULL, k->label);
    }
}
