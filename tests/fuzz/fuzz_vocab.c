/* fuzz_vocab.c: a vocabulary from its JSON form (the "vocab" entry of a
 * checkpoint). The first byte picks the kind (even: chars, odd: letters), the
 * rest is the JSON.
 *
 * Invariants beyond "no crash": a refusal carries a message; an accepted
 * vocabulary holds exactly the strings of the JSON array (read here with
 * jansson) in order, each found again under its own id; it writes back to
 * JSON that reads as an equal vocabulary and writes back to the same bytes;
 * for chars, the text made of its tokens encodes to the ids 0..V-1 and
 * decodes to that text again. */
#include <jansson.h>

#include "fuzz.h"
#include "generate.h"
#include "vocab.h"

static void check_tokens(const bt_vocab *v, const char *json)
{
    json_t *list = json_loads(json, 0, NULL);
    FUZZ_CHECK(json_is_array(list), "accepted JSON that is not an array: %s", json);
    int V = bt_vocab_size(v);
    FUZZ_CHECK(V >= 1 && (size_t)V == json_array_size(list), "%d tokens from %zu strings", V,
               json_array_size(list));
    int unk = -1;
    for (int id = 0; id < V; id++) {
        const char *tok = bt_vocab_token(v, id);
        const json_t *s = json_array_get(list, (size_t)id);
        FUZZ_CHECK(tok && json_is_string(s) && strcmp(tok, json_string_value(s)) == 0,
                   "token %d is '%s', the JSON says '%s'", id, tok ? tok : "(null)",
                   json_string_value(s) ? json_string_value(s) : "(not a string)");
        FUZZ_CHECK(bt_vocab_id(v, tok, strlen(tok)) == id, "token %d '%s' looks up as %d", id, tok,
                   bt_vocab_id(v, tok, strlen(tok)));
        if (strcmp(tok, "<unk>") == 0)
            unk = id;
    }
    FUZZ_CHECK(bt_vocab_token(v, -1) == NULL && bt_vocab_token(v, V) == NULL, "ids out of range");
    FUZZ_CHECK(bt_vocab_unk(v) == unk, "<unk> is id %d, unk() says %d", unk, bt_vocab_unk(v));
    FUZZ_CHECK(bt_vocab_kind(v) == BT_TOKENS_CHARS ? unk < 0 : unk >= 0, "<unk> and the kind");
    json_decref(list);
}

/* chars: the concatenated tokens encode to 0..V-1 and decode back. A token
 * "\r" reads as "\n" (the corpus rule), so such vocabularies are skipped. */
static void check_encode(const bt_vocab *v)
{
    int V = bt_vocab_size(v);
    size_t len = 1;
    for (int id = 0; id < V; id++) {
        if (strcmp(bt_vocab_token(v, id), "\r") == 0)
            return;
        len += strlen(bt_vocab_token(v, id));
    }
    char *text = malloc(len);
    FUZZ_CHECK(text, "out of memory");
    text[0] = '\0';
    for (int id = 0; id < V; id++)
        strcat(text, bt_vocab_token(v, id));
    int32_t *ids = NULL;
    long n = 0;
    char err[256] = "";
    FUZZ_CHECK(bt_vocab_encode(v, BT_TOKENS_CHARS, text, &ids, &n, err, sizeof err) == BT_OK,
               "its own tokens do not encode: %s", err);
    FUZZ_CHECK(n == V, "%d tokens encode to %ld ids", V, n);
    for (long i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] == i, "token %ld encodes as %d", i, (int)ids[i]);
    char *back = bt_decode_ids(v, ids, n);
    FUZZ_CHECK(back && strcmp(back, text) == 0, "decoding changed the text");
    bt_free(back);
    bt_free(ids);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bt_tokens_kind kind = data[0] & 1 ? BT_TOKENS_LETTERS : BT_TOKENS_CHARS;
    char *json = fuzz_cstr(data + 1, size - 1);
    char err[512] = "";
    bt_vocab *v = (bt_vocab *)1;
    if (bt_vocab_from_json(json, kind, &v, err, sizeof err) != BT_OK) {
        FUZZ_CHECK(!v && err[0], "refused without a message");
        free(json);
        return 0;
    }
    FUZZ_CHECK(bt_vocab_kind(v) == kind, "kind changed");
    check_tokens(v, json);
    char *once = bt_vocab_to_json(v);
    FUZZ_CHECK(once, "to_json failed");
    bt_vocab *w = NULL;
    FUZZ_CHECK(bt_vocab_from_json(once, kind, &w, err, sizeof err) == BT_OK,
               "its own JSON does not read back: %s", err);
    FUZZ_CHECK(bt_vocab_equal(v, w), "read back, the vocabulary differs");
    char *twice = bt_vocab_to_json(w);
    FUZZ_CHECK(twice && strcmp(once, twice) == 0, "the JSON changed on a second round trip");
    if (kind == BT_TOKENS_CHARS)
        check_encode(v);
    bt_free(once);
    bt_free(twice);
    bt_vocab_free(w);
    bt_vocab_free(v);
    free(json);
    return 0;
}
