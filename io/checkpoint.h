/* checkpoint.h: a training run in one safetensors file, complete enough to
 * continue it bit for bit: parameters (param.<name>), optimizer state
 * (opt.<i>, laid out like the parameters) and step count, the run's RNG
 * (rng, 4 x I64), the carried state (state.<k> [B, width]), the per-epoch
 * history, and every setting in __metadata__ (cell, sizes, vocabulary as
 * JSON or the task spec, optimizer, truncation, clip, init, seed, precision,
 * version...).
 *
 * Writing is atomic (atomic.h): the previous file stays whole until the
 * new one is complete; bt_atomic_check_writable checks a --save path early.
 * Reading checks the content as well as the structure: every tensor present
 * with the right dtype and shape, the precision of this build, a known cell. */
#ifndef BPTT_CHECKPOINT_H
#define BPTT_CHECKPOINT_H

#include "atomic.h"
#include "lm.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BT_CHECKPOINT_FORMAT "bptt-lm-1"

/* What a checkpoint file says, before anything is built from it. */
typedef struct bt_checkpoint {
    bt_st_file *file;
    char path[1024];
    bt_lm_config cfg;
    char data[1024];        /* the text it was trained on, as given ("" if unknown) */
    char task[256];         /* the generated task it was trained on ("adding:50"), "" for a text */
    bt_vocab *vocab;        /* NULL for a source without a vocabulary */
    int input_size, output_size;
    int epoch;              /* epochs done */
    uint64_t updates;       /* optimizer updates done (including skipped ones) */
    uint64_t opt_steps;     /* the optimizer's own step counter */
    char version[32];       /* bptt version that wrote it */
} bt_checkpoint;

/* Refuses non-finite parameters (BT_ERR_NUMERIC), so a file on disk is always
 * a model worth keeping. data_path may be NULL. */
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
 * --plugin), parameters loaded and checked. */
BT_API bt_status bt_checkpoint_model(const bt_checkpoint *c, const bt_registry *reg, bt_model **out,
                                     char *err, size_t errlen);
/* Everything into a run built from c->cfg over the same data: parameters,
 * optimizer state and steps, RNG, carried state, epoch count and history. */
BT_API bt_status bt_checkpoint_restore(const bt_checkpoint *c, bt_lm *lm, char *err, size_t errlen);

/* What a resumed run may change: nothing the checkpoint fixes. BT_OK when
 * c's cell is registered in reg (else BT_ERR_NOT_FOUND, suggesting --plugin),
 * every setting in `given` that was given equals the checkpoint's (an
 * optimizer or policy written another way, "sgd:1" for "sgd:lr=1", is equal),
 * and the data is of the checkpoint's kind: a task checkpoint resumes on its
 * own task, a text one on a text (else BT_ERR_ARG naming the first conflict).
 * *data and *task are what the user gave (NULL when not); on BT_OK they are
 * what the run trains on: the checkpoint's task, or the given text, or the
 * text the checkpoint names. The run's settings are then c->cfg. */
BT_API bt_status bt_checkpoint_check_resume(const bt_checkpoint *c, const bt_registry *reg,
                                            const bt_lm_given *given, const char **data,
                                            const char **task, char *err, size_t errlen);


#ifdef __cplusplus
}
#endif
#endif
