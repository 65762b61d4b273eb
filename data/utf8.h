/* utf8.h: the one UTF-8 codec of bptt (tokenizers, vocabulary, safetensors
 * names, SVG text). By hand, so that nothing depends on the locale, and
 * strict like Python's decoder: no overlong forms, no surrogates, nothing
 * above U+10FFFF. Internal to libbptt-train (not installed). */
#ifndef BPTT_UTF8_H
#define BPTT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the code point at s[0] of len bytes; returns its byte length (1..4),
 * or 0 when the bytes there are not UTF-8 (truncated, overlong, surrogate,
 * above U+10FFFF, a stray continuation byte) or len is 0. */
int bt_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
/* Writes cp (at most U+10FFFF) as UTF-8 into out[4]; returns the byte count. */
int bt_utf8_encode(uint32_t cp, char *out);
/* Offset of the first byte that does not start a valid sequence, or len. */
size_t bt_utf8_first_invalid(const unsigned char *s, size_t len);
/* True when s[0..len) is UTF-8 throughout. */
bool bt_utf8_valid(const char *s, size_t len);

#endif
