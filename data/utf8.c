/* utf8.c: the one UTF-8 decoder and encoder (see utf8.h). A code point is
 * accepted exactly when Python's strict decoder accepts it, so a text bptt
 * reads is a text d2l's Python reads the same way. */
#include "utf8.h"

int bt_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (len == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int k;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        k = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        k = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0; /* a continuation byte, or 0xF8..0xFF */
    }
    if (len < (size_t)k)
        return 0;
    for (int j = 1; j < k; j++) {
        if ((s[j] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[j] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return k;
}

int bt_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t bt_utf8_first_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    while (i < len) {
        int k = bt_utf8_decode(s + i, len - i, &cp);
        if (!k)
            return i;
        i += (size_t)k;
    }
    return len;
}

bool bt_utf8_valid(const char *s, size_t len)
{
    return bt_utf8_first_invalid((const unsigned char *)s, len) == len;
}
