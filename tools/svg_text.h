/* svg_text.h: how much room a chart's text takes, so that tools/svg.c can lay
 * out legends, labels and titles that stay whole and on the page: advance
 * widths of DejaVu Sans (the first font the figures name) and line breaking.
 * Part of the program's internal presentation library (tools/). */
#ifndef BPTT_SVG_TEXT_H
#define BPTT_SVG_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Width in pixels of the first len bytes of UTF-8 text s set at px pixels,
 * regular or bold. A character outside ASCII counts as 1 em (more than most
 * take; a fallback font draws what DejaVu lacks). */
double bt_svgtext_width(const char *s, size_t len, double px, bool bold);

/* One line of a wrapped text: bytes [start, end) of it. */
typedef struct bt_svgtext_line {
    size_t start, end;
} bt_svgtext_line;

/* Breaks s into lines no wider than max_w at px pixels: at a newline, else
 * after a space (left out of both lines) or after one of , ; : = where it
 * can, else inside a word. At most max_lines lines (>= 1), the last taking
 * whatever remains (a newline in it shows as a space).
 * Returns the number of lines written (1 for an empty or NULL s). */
int bt_svgtext_wrap(const char *s, double px, bool bold, double max_w, bt_svgtext_line *lines,
                    int max_lines);

#endif
