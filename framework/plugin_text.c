/* plugin_text.c: strings that cross the plugin ABI. A plugin may hand over a
 * name, summary or version that never ends, or fill an error or describe
 * buffer to the last byte without a NUL; printing either reads past it. So
 * every such string is measured with a bound, and every buffer a plugin filled
 * is terminated and cleaned before the host reads it. */
#include <string.h>

#include "registry.h"

size_t bt_plugin_text_len(const char *s, size_t bound)
{
    return s ? strnlen(s, bound) : 0;
}

/* Control bytes (newlines, escape sequences) are refused in what a plugin
 * declares: one line in a table or a log, and nothing that drives a terminal.
 * Bytes from 0x80 up are left alone so UTF-8 summaries stay readable. */
bool bt_plugin_text_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

char *bt_plugin_text_clean(char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    buf[len - 1] = '\0';
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return buf;
}

char *bt_plugin_text_copy(char *dst, size_t dstlen, const char *src)
{
    if (!dst || !dstlen)
        return dst;
    size_t n = bt_plugin_text_len(src, dstlen - 1);
    if (n)
        memmove(dst, src, n);
    dst[n] = '\0';
    return bt_plugin_text_clean(dst, dstlen);
}
