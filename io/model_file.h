/* model_file.h: a model described in a small JSON file (docs/stacks.md), which
 * `bptt train`, `compare`, `grad`, `gradcheck` and `analyze` accept with
 * --model-file FILE instead of --cell/--hidden/--layers/--dropout/--init:
 *   {"layers": [{"cell": "lstm", "hidden": 256}, {"cell": "gru", "hidden": 128}],
 *    "dropout": 0.2, "variational": true, "init": "orthogonal"}
 * or, for layers alike, {"cell": "lstm", "hidden": 256, "layers": 2}. Every key
 * is optional but a cell (in "cell" or in every layer) and a width; unknown
 * keys are refused, so a misspelt one never passes silently. */
#ifndef BPTT_MODEL_FILE_H
#define BPTT_MODEL_FILE_H

#include <stdbool.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_model_file {
    char cell[64];     /* layer 1's cell */
    int hidden;        /* layer 1's width */
    char layers[256];  /* "" (one layer) or canonical "C:H,C:H" (stack.h) */
    double dropout;    /* 0: none */
    bool variational;
    char init[128];    /* an --init spec, "" for the cells' own */
} bt_model_file;

/* The description in text (JSON) into *out; BT_ERR_FORMAT with a message
 * naming the key and what it should be. what names the source in messages. */
BT_API bt_status bt_model_file_parse(const char *text, const char *what, bt_model_file *out,
                                     char *err, size_t errlen);
/* The same from a file. */
BT_API bt_status bt_model_file_read(const char *path, bt_model_file *out, char *err,
                                    size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
