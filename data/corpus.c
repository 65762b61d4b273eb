/* corpus.c: reading a text file into token ids: checks that it is text
 * (not empty, no NUL, valid UTF-8, not mostly control bytes), tokenizes it,
 * builds the vocabulary from the whole text and keeps the first max_tokens. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corpus.h"
#include "utf8.h"

void bt_corpus_free(bt_corpus *c)
{
    if (!c)
        return;
    bt_vocab_free(c->vocab);
    bt_free(c->ids);
    bt_free(c);
}

/* Is s[0..len) a text? Not empty, no NUL, UTF-8, not mostly control bytes.
 * `name` is "'path'" or "the text" for messages. */
static bt_status check_text(const char *name, const unsigned char *s, size_t len, char *err,
                            size_t errlen)
{
    if (len == 0)
        return bt_error(err, errlen, BT_ERR_FORMAT, "%s is empty: give a text with at least 2 characters",
                    name);
    /* NUL first: a binary or UTF-16 file is usually also bad UTF-8, and
     * "binary" says more than a byte offset. */
    const unsigned char *nul = memchr(s, 0, len);
    if (nul)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s has a NUL byte at offset %zu: it looks like a binary (or UTF-16) file; "
                    "give a UTF-8 text file", name, (size_t)(nul - s));
    size_t bad = bt_utf8_first_invalid(s, len);
    if (bad < len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s is not valid UTF-8: byte 0x%02X at byte offset %zu; convert it, e.g. "
                    "iconv -f latin1 -t utf-8", name, s[bad], bad);
    size_t ctrl = 0;
    for (size_t i = 0; i < len; i++)
        if ((s[i] < 0x20 && !(s[i] >= '\t' && s[i] <= '\r') && s[i] != 0x1B) || s[i] == 0x7F)
            ctrl++;
    if (ctrl * 10 > len)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                    "%s looks binary: %zu of its %zu bytes are control characters; give a text file",
                    name, ctrl, len);
    return BT_OK;
}

/* The whole pipeline: check, tokenize, vocabulary, ids. */
static bt_status corpus_build(const char *name, const unsigned char *s, size_t len,
                              bt_tokens_kind kind, long max_tokens, bt_corpus **out, char *err,
                              size_t errlen)
{
    bt_status check = check_text(name, s, len, err, errlen);
    if (check != BT_OK)
        return check;
    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) {
        s += 3; /* a BOM marks the encoding; it is not text */
        len -= 3;
    }

    bt_status st = BT_OK;
    bt_corpus *c = NULL;
    uint32_t *tok = bt_malloc((len ? len : 1) * sizeof *tok);
    if (!tok)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading %s", name);
    long n = bt_tokenize(kind, s, len, tok);
    if (n < 2) {
        st = bt_error(err, errlen, BT_ERR_FORMAT,
                  "%s has %ld token%s after %s tokenization%s: a corpus needs at least 2; give a "
                  "longer text", name, n, n == 1 ? "" : "s", bt_tokens_kind_name(kind),
                  kind == BT_TOKENS_LETTERS ? " (only A-Z letters and spaces between words are kept)"
                                            : "");
        goto done;
    }
    long keep = max_tokens > 0 && max_tokens < n ? max_tokens : n;
    if (keep < 2) {
        st = bt_error(err, errlen, BT_ERR_ARG,
                  "a maximum of %ld token keeps too little of %s: a corpus needs at least 2",
                  max_tokens, name);
        goto done;
    }
    c = bt_calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->kind = kind;
    /* The vocabulary sees the whole text, as d2l builds Vocab before cutting
     * the corpus to max_tokens. */
    c->vocab = bt_vocab_build(kind, tok, n);
    c->ids = bt_malloc((size_t)keep * sizeof *c->ids);
    if (!c->vocab || !c->ids)
        goto nomem;
    for (long i = 0; i < keep; i++) {
        int id = bt_vocab_id_of(c->vocab, tok[i]);
        if (id < 0) { /* cannot happen: the vocabulary came from these tokens */
            st = bt_error(err, errlen, BT_ERR_FORMAT, "internal error: token %ld of %s has no id", i, name);
            goto done;
        }
        c->ids[i] = id;
    }
    c->n = keep;
    goto done;
nomem:
    st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading %s", name);
done:
    bt_free(tok);
    if (st != BT_OK) {
        bt_corpus_free(c);
        return st;
    }
    *out = c;
    return BT_OK;
}

bt_status bt_corpus_from_string(const char *text, size_t len, bt_tokens_kind kind, long max_tokens,
                                bt_corpus **out, char *err, size_t errlen)
{
    if (!out || (!text && len))
        return bt_error(err, errlen, BT_ERR_ARG, "bt_corpus_from_string: NULL argument");
    *out = NULL;
    return corpus_build("the text", (const unsigned char *)(text ? text : ""), len, kind,
                        max_tokens, out, err, errlen);
}

bt_status bt_corpus_read_file(const char *path, char **text, size_t *len, char *err,
                              size_t errlen)
{
    *text = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return bt_error(err, errlen, BT_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    const char *why = fstat(fd, &sb) != 0 ? strerror(errno)
                      : S_ISDIR(sb.st_mode) ? "it is a folder"
                      : !S_ISREG(sb.st_mode) ? "it is a device, FIFO or socket, which may never end"
                                             : NULL;
    if (why) {
        close(fd);
        return bt_error(err, errlen, BT_ERR_IO, "'%s' is not a regular file (%s): give a text file",
                        path, why);
    }
    /* At most the size it had when opened: a file that grows is read as it was. */
    size_t want = (size_t)sb.st_size, got = 0;
    char *buf = bt_malloc(want + 1);
    bt_status st = buf ? BT_OK : bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading '%s' "
                                          "(%zu bytes)", path, want);
    while (st == BT_OK && got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            st = bt_error(err, errlen, BT_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        if (n <= 0)
            break; /* shrank while read: what is there */
        got += (size_t)n;
    }
    close(fd);
    if (st != BT_OK) {
        bt_free(buf);
        return st;
    }
    buf[got] = '\0';
    *text = buf;
    *len = got;
    return BT_OK;
}

bt_status bt_corpus_load(const char *path, bt_tokens_kind kind, long max_tokens, bt_corpus **out,
                         char *err, size_t errlen)
{
    if (!path || !out)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_corpus_load: NULL argument");
    *out = NULL;
    char *text;
    size_t len;
    bt_status st = bt_corpus_read_file(path, &text, &len, err, errlen);
    if (st != BT_OK)
        return st;
    size_t namelen = strlen(path) + 3;
    char *name = bt_malloc(namelen);
    if (name) {
        snprintf(name, namelen, "'%s'", path);
        st = corpus_build(name, (const unsigned char *)text, len, kind, max_tokens, out, err, errlen);
    } else
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory reading '%s'", path);
    bt_free(name);
    bt_free(text);
    return st;
}
