/* svg_text.c: text metrics for the SVG charts. The widths are DejaVu Sans's
 * own (its hmtx table, ASCII 32..126, in 1/2048 em), so a layout reserves
 * what a renderer with that font draws; other sans fonts are narrower.
 * tests/check_figures.py measures the result against the font file and a
 * real rendering, independently of this table. */
#include <stdint.h>
#include <string.h>

#include "svg_text.h"
#include "utf8.h"

#define UNITS_PER_EM 2048.0

static const unsigned short advance[2][95] = {
    { /* DejaVuSans.ttf */
        651, 821, 942, 1716, 1303, 1946, 1597, 563, 799, 799, 1024, 1716, 651, 739, 651, 690,
        1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 690, 690, 1716, 1716, 1716, 1087,
        2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 604, 604, 1343, 1141, 1767, 1532, 1612,
        1235, 1612, 1423, 1300, 1251, 1499, 1401, 2025, 1403, 1251, 1403, 799, 690, 799, 1716, 1024,
        1024, 1255, 1300, 1126, 1300, 1260, 721, 1300, 1298, 569, 569, 1186, 569, 1995, 1298, 1253,
        1300, 1300, 842, 1067, 803, 1298, 1212, 1675, 1212, 1212, 1075, 1303, 690, 1303, 1716,
    },
    { /* DejaVuSans-Bold.ttf */
        713, 934, 1067, 1716, 1425, 2052, 1786, 627, 936, 936, 1071, 1716, 778, 850, 778, 748,
        1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 819, 819, 1716, 1716, 1716, 1188,
        2048, 1585, 1561, 1503, 1700, 1399, 1399, 1681, 1714, 762, 762, 1587, 1305, 2038, 1714, 1741,
        1501, 1741, 1577, 1475, 1397, 1663, 1585, 2259, 1579, 1483, 1485, 936, 748, 936, 1716, 1024,
        1024, 1382, 1466, 1214, 1466, 1389, 891, 1466, 1458, 702, 702, 1362, 702, 2134, 1458, 1407,
        1466, 1466, 1010, 1219, 979, 1458, 1335, 1892, 1321, 1335, 1192, 1458, 748, 1458, 1716,
    },
};

/* One character of s[0..len): its byte length (>= 1 when len >= 1) and its
 * width in 1/2048 em. */
static int char_units(const char *s, size_t len, bool bold, double *units)
{
    uint32_t cp = 0xFFFD;
    int n = bt_utf8_decode((const unsigned char *)s, len, &cp);
    if (n == 0)
        n = 1, cp = 0xFFFD;
    *units = cp >= 32 && cp < 127 ? advance[bold][cp - 32] : UNITS_PER_EM;
    return n;
}

double bt_svgtext_width(const char *s, size_t len, double px, bool bold)
{
    double units = 0, u;
    for (size_t i = 0; s && i < len;) {
        i += (size_t)char_units(s + i, len - i, bold, &u);
        units += u;
    }
    return units * px / UNITS_PER_EM;
}

/* The end of the longest prefix of s[from..len) that fits in max_w pixels
 * (at least one character) or ends at a newline (*forced set), and where it
 * may break: *brk the end of the line at the last break opportunity (0 when
 * none), *next where the following line starts. A space, comma or semicolon
 * is a better place than a colon or equals sign, which would split
 * "name=value" or "kind:options" rather than separate two of them. */
static size_t fit_prefix(const char *s, size_t from, size_t len, double px, bool bold,
                         double max_w, size_t *brk, size_t *next, bool *forced)
{
    double w = 0, u;
    size_t i = from, weak = 0;
    *brk = *next = 0;
    *forced = false;
    while (i < len) {
        if (s[i] == '\n') {
            *forced = true;
            return i;
        }
        int k = char_units(s + i, len - i, bold, &u);
        if (i > from && w + u * px / UNITS_PER_EM > max_w)
            break;
        w += u * px / UNITS_PER_EM;
        i += (size_t)k;
        if (s[i - 1] == ' ' && i - 1 > from)
            *brk = i - 1, *next = i;
        else if (k == 1 && strchr(",;", s[i - 1]))
            *brk = i, *next = i;
        else if (k == 1 && strchr(":=", s[i - 1]))
            weak = i;
    }
    if (*brk == 0 && weak > 0)
        *brk = *next = weak;
    return i;
}

int bt_svgtext_wrap(const char *s, double px, bool bold, double max_w, bt_svgtext_line *lines,
                    int max_lines)
{
    size_t len = s ? strlen(s) : 0, at = 0;
    int n = 0;
    while (n < max_lines - 1) {
        size_t brk, next;
        bool forced;
        size_t end = fit_prefix(s, at, len, px, bold, max_w, &brk, &next, &forced);
        if (forced)
            next = end + 1;
        else if (end >= len)
            break;
        else if (brk > at)
            end = brk;
        else
            next = end; /* no break opportunity: cut the word */
        lines[n++] = (bt_svgtext_line){at, end};
        at = next;
        while (!forced && at < len && s[at] == ' ')
            at++;
    }
    lines[n++] = (bt_svgtext_line){at, len};
    return n;
}
