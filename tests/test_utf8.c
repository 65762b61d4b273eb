/* test_utf8.c: the one UTF-8 codec (data/utf8.c, compiled into this test:
 * it is internal to libbptt-train) against the definition in RFC 3629:
 * - every scalar value U+0000..U+10FFFF (no surrogates) encodes to the length
 *   the RFC's table gives and decodes back;
 * - every 1-, 2- and 3-byte string, and every 4-byte string over the lead
 *   bytes 0xF0..0xF7 with continuation bytes from a set covering each bit
 *   pattern's class, decodes exactly when it is the encoding of a scalar value
 *   (so overlong forms, surrogates and values above U+10FFFF are refused);
 * - the malformed sequences of Markus Kuhn's UTF-8 decoder stress test. */
#include <criterion/criterion.h>
#include <string.h>

#include "utf8.h"

/* RFC 3629, section 3: how many bytes a scalar value takes. */
static int rfc_length(uint32_t cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static bool is_scalar(uint32_t cp) { return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF); }

Test(utf8, every_scalar_value_round_trips)
{
    char buf[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (!is_scalar(cp))
            continue;
        int n = bt_utf8_encode(cp, buf);
        cr_assert_eq(n, rfc_length(cp), "U+%04X: %d bytes", (unsigned)cp, n);
        uint32_t back = 0xFFFFFFFF;
        cr_assert_eq(bt_utf8_decode((const unsigned char *)buf, (size_t)n, &back), n,
                     "U+%04X does not decode", (unsigned)cp);
        cr_assert_eq(back, cp);
        /* One byte short is a truncated sequence, never a shorter character. */
        cr_assert_eq(bt_utf8_decode((const unsigned char *)buf, (size_t)n - 1, &back), 0,
                     "U+%04X truncated", (unsigned)cp);
    }
}

/* s[0..n) decodes (to a first character of length n) exactly when it is the
 * encoding of a scalar value. */
static void check_string(const unsigned char *s, int n)
{
    uint32_t cp = 0;
    int k = bt_utf8_decode(s, (size_t)n, &cp);
    bool ok = k == n;
    bool canonical = false;
    if (ok) {
        char again[4];
        canonical = is_scalar(cp) && bt_utf8_encode(cp, again) == n && memcmp(again, s, (size_t)n) == 0;
        cr_assert(canonical, "accepted a non-canonical %d-byte string %02X %02X %02X %02X as U+%04X",
                  n, s[0], n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0, (unsigned)cp);
    }
    /* And the converse: decoding must accept what encoding produces. */
    if (!ok && k == 0 && n > 0) {
        uint32_t v = 0;
        int len = 0;
        /* Reconstruct by the RFC's bit layout and see whether it would be canonical. */
        if (s[0] < 0x80) {
            v = s[0], len = 1;
        } else if ((s[0] & 0xE0) == 0xC0) {
            v = s[0] & 0x1Fu, len = 2;
        } else if ((s[0] & 0xF0) == 0xE0) {
            v = s[0] & 0x0Fu, len = 3;
        } else if ((s[0] & 0xF8) == 0xF0) {
            v = s[0] & 0x07u, len = 4;
        }
        bool cont = len == n;
        for (int j = 1; cont && j < n; j++) {
            cont = (s[j] & 0xC0) == 0x80;
            v = v << 6 | (s[j] & 0x3Fu);
        }
        cr_assert(!(cont && is_scalar(v) && rfc_length(v) == n),
                  "refused the encoding of U+%04X (%d bytes)", (unsigned)v, n);
    }
}

Test(utf8, exactly_the_canonical_strings_decode)
{
    unsigned char s[4];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        check_string(s, 1);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            check_string(s, 2);
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (unsigned char)c;
                check_string(s, 3);
            }
        }
    }
    /* 4 bytes: continuation bytes at the edges of each range that matters. */
    static const unsigned char conts[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    const size_t nc = sizeof conts;
    for (unsigned a = 0xF0; a <= 0xF7; a++)
        for (size_t i = 0; i < nc; i++)
            for (size_t j = 0; j < nc; j++)
                for (size_t k = 0; k < nc; k++) {
                    s[0] = (unsigned char)a, s[1] = conts[i], s[2] = conts[j], s[3] = conts[k];
                    check_string(s, 4);
                }
}

Test(utf8, kuhn_malformed_sequences_are_refused)
{
    static const struct {
        const char *bytes;
        size_t at; /* the first invalid offset */
    } bad[] = {
        {"\x80", 0},                 /* lone continuation byte */
        {"ab\xbf", 2},
        {"\xc0\xaf", 0},             /* overlong '/' */
        {"\xe0\x80\xaf", 0},
        {"\xf0\x80\x80\xaf", 0},
        {"\xc1\xbf", 0},             /* overlong U+007F */
        {"\xed\xa0\x80", 0},         /* surrogate U+D800 */
        {"\xed\xbf\xbf", 0},         /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 0},     /* U+110000 */
        {"\xf8\x88\x80\x80\x80", 0}, /* 5-byte form */
        {"\xfe", 0},
        {"\xff", 0},
        {"x\xe2\x82", 1},            /* truncated euro sign */
        {"\xc3", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = strlen(bad[i].bytes);
        cr_assert_eq(bt_utf8_first_invalid((const unsigned char *)bad[i].bytes, n), bad[i].at,
                     "case %zu", i);
        cr_assert(!bt_utf8_valid(bad[i].bytes, n), "case %zu", i);
    }
    const char *good = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf";
    cr_assert_eq(bt_utf8_first_invalid((const unsigned char *)good, strlen(good)), strlen(good));
    cr_assert(bt_utf8_valid("", 0));
}
