/* corpus_ids.c: prints the vocabulary and token ids bptt gives a text with
 * `--tokens letters` (bt_corpus_load, as `bptt train` reads it), as one JSON
 * object, so bench/test_torch_data.py can check the PyTorch reference's data
 * against bptt's own: {"vocab": [...], "n": N, "ids": [...]}. */
#include <stdio.h>
#include <stdlib.h>

#include "corpus.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: corpus_ids FILE [MAX_TOKENS]\n");
        return 2;
    }
    long max_tokens = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    char err[2048] = "";
    bt_corpus *c = NULL;
    if (bt_corpus_load(argv[1], BT_TOKENS_LETTERS, max_tokens, &c, err, sizeof err) != BT_OK) {
        fprintf(stderr, "corpus_ids: %s\n", err);
        return 1;
    }
    char *vocab = bt_vocab_to_json(c->vocab);
    if (!vocab) {
        fprintf(stderr, "corpus_ids: out of memory\n");
        bt_corpus_free(c);
        return 1;
    }
    printf("{\"vocab\": %s, \"n\": %ld, \"ids\": [", vocab, c->n);
    for (long i = 0; i < c->n; i++)
        printf(i ? ",%d" : "%d", (int)c->ids[i]);
    printf("]}\n");
    bt_free(vocab);
    bt_corpus_free(c);
    return 0;
}
