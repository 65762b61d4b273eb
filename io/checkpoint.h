/* checkpoint.h: a training run in one safetensors file, complete enough to
 * continue it bit for bit: parameters (param.<name>), optimizer state
 * (opt.<i>, laid out like the parameters) and step count, the run's RNG
 * (rng, 4 x I64), the carried state (state.<k> [B, width]), the per-epoch
 * history, and every setting in __metadata__ (cell, sizes, vocabulary as
 * JSON or the task spec, optimizer, truncation, clip, init, seed, precision,
 * --checkpoint and --memory-budget, version...). A run stopped within an
 * epoch (bt_lm_request_stop) also stores where: epoch_batches (minibatches
 * done), epoch_rng (the RNG as the epoch began, which replays its order) and
 * epoch_sums (its figures so far).
 *
 * Format bptt-lm-2 (this one) carries the CRC-32 checksums safetensors.c
 * writes, and a file of that format without them is refused. Files of
 * format bptt-lm-1, written before checksums, still load: bt_checkpoint's
 * `verified` is false so a command can say their integrity is unchecked.
 *
 * Writing is atomic (atomic.h): the previous file stays whole until the
 * new one is complete. Reading checks the content as well as the structure:
 * the checksums, every tensor present with the right dtype and shape, the
 * precision of this build, a known cell, and every setting against the
 * tensors' shapes before anything is built from it. */
#ifndef BPTT_CHECKPOINT_H
#define BPTT_CHECKPOINT_H

#include "atomic.h"
#include "lm.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BT_CHECKPOINT_FORMAT "bptt-lm-2"
#define BT_CHECKPOINT_FORMAT_V1 "bptt-lm-1" /* before checksums: still read */

/* What a checkpoint file says, before anything is built from it. Its strings
 * (those of cfg included) live as long as it does. */
typedef struct bt_checkpoint {
    bt_st_file *file;
    char *path;             /* as given */
    bt_lm_config cfg;
    char *data;             /* the text it was trained on, byte for byte as given ("" if unknown) */
    const char *task;       /* the generated task it was trained on ("adding:50"), "" for a text */
    bt_vocab *vocab;        /* NULL for a source without a vocabulary */
    int input_size, output_size;
    int epoch;              /* epochs done */
    uint64_t updates;       /* optimizer updates of those epochs (including skipped ones) */
    uint64_t opt_steps;     /* the optimizer's own step counter */
    const char *version;    /* bptt version that wrote it */
    bool verified;          /* its checksums were present and matched (false: format bptt-lm-1) */
    bt_lm_position position; /* within the next epoch: batches_done 0 at an epoch's end */
} bt_checkpoint;

/* Refuses non-finite parameters (BT_ERR_NUMERIC), so a file on disk is always
 * a model worth keeping. data_path may be NULL, and may be any bytes: a path
 * that is not UTF-8 is stored losslessly as hex (metadata data_hex) next to a
 * readable form (data, invalid bytes as \xNN), since metadata must be UTF-8. */
BT_API bt_status bt_checkpoint_save(bt_lm *lm, const char *path, const char *data_path, char *err,
                                    size_t errlen);

/* Reads and checks the metadata; tensors are checked when loaded. */
BT_API bt_status bt_checkpoint_read(const char *path, bt_checkpoint **out, char *err, size_t errlen);
/* The same from n bytes at data (what bt_checkpoint_read runs on a file's
 * bytes; the fuzz targets use it), named `name` in messages (NULL: "(buffer)"). */
BT_API bt_status bt_checkpoint_read_buffer(const void *data, size_t n, const char *name,
                                           bt_checkpoint **out, char *err, size_t errlen);
BT_API void bt_checkpoint_free(bt_checkpoint *c);

/* The model alone (generation): cell from reg (an unknown cell suggests
 * --plugin), every setting checked against the tensors' shapes before the
 * model is made, parameters loaded and checked. */
BT_API bt_status bt_checkpoint_model(const bt_checkpoint *c, const bt_registry *reg, bt_model **out,
                                     char *err, size_t errlen);
/* Everything into a run built from c->cfg over the same data: parameters,
 * optimizer state and steps, RNG, carried state, epoch count and history. */
BT_API bt_status bt_checkpoint_restore(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen);

/* What a resumed run may change: nothing the checkpoint fixes. BT_OK when
 * c's cell is registered in reg (else BT_ERR_NOT_FOUND, suggesting --plugin),
 * c's settings fit its tensors (else BT_ERR_FORMAT: a damaged or crafted
 * file is refused before anything is allocated from its settings), every
 * setting in `given` that was given equals the checkpoint's (an optimizer or
 * policy written another way, "sgd:1" for "sgd:lr=1", is equal), and the data
 * is of the checkpoint's kind: a task checkpoint resumes on its own task, a
 * text one on a text (else BT_ERR_ARG naming the first conflict). *data and
 * *task are what the user gave (NULL when not); on BT_OK they are what the
 * run trains on: the checkpoint's task, or the given text, or the text the
 * checkpoint names. *run is then the run's settings: c->cfg, except that
 * when --checkpoint or --memory-budget is given (how backward runs, not what
 * it computes), both are the given ones as in a fresh run (a budget alone:
 * no fixed spacing), validated like a fresh run's by bt_lm_new and the
 * unroller; otherwise both are the stored ones. */
BT_API bt_status bt_checkpoint_check_resume(const bt_checkpoint *c, const bt_registry *reg,
                                            const bt_lm_given *given, const char **data,
                                            const char **task, bt_lm_config *run, char *err,
                                            size_t errlen);


#ifdef __cplusplus
}
#endif
#endif
