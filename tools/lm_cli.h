/* lm_cli.h: what `train` and `compare` share: the run options (parsed into a
 * bt_lm_config, remembering which were given so a resume can name a
 * conflict), the training source (a text with --data or a generated task
 * with --task), progress output and the metrics file. */
#ifndef BPTT_LM_CLI_H
#define BPTT_LM_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "checkpoint.h"
#include "cli.h"
#include "compare.h"
#include "lm.h"
#include "text_source.h"

/* The run options of both commands: the settings as given (values, which
 * were typed, and as typed, for resume conflicts), the data, and output. */
typedef struct lm_cli_opts {
    bt_lm_given run;
    const char *data;
    const char *task;          /* --task SPEC (adding:50, copy:10,3, influence:23,10) */
    int epochs;
    const char *metrics;
    bool quiet;
} lm_cli_opts;

/* The options both commands take; false (message printed) on a bad value. */
bool lm_cli_parse(cli_args *a, lm_cli_opts *o);
/* --layers, --dropout, --variational into g (the layers in canonical form,
 * cell and hidden then layer 1's); false with a message on bad values. */
bool lm_cli_arch(cli_args *a, bt_lm_given *g);
/* "  layers lstm:256,lstm:256, dropout 0.2 (variational)" for a stack; nothing otherwise. */
void lm_cli_print_arch(const bt_lm_config *c);
/* The table of the options lm_cli_parse reads (all but --truncation, whose
 * help differs between the commands: each command declares it). */
extern const cli_option lm_cli_options[];

/* Checks cell, truncation and optimizer names and options before any data is
 * read, so a typo is reported first; prints the error and returns false. */
bool lm_cli_validate(const char *command, const bt_registry *r, const bt_lm_config *cfg);
/* What a resume should know, on stderr: a checkpoint from before checksums
 * (its integrity unchecked), a --checkpoint or --memory-budget that replaces
 * the stored one (same gradients up to rounding, so not bit for bit). */
void lm_cli_resume_notes(const char *command, const bt_checkpoint *ck, const bt_lm_config *run);
/* The first of those alone (generate, analyze --model). */
void lm_cli_integrity_note(const char *command, const bt_checkpoint *ck);
/* Exactly one of data and task, and no text-only option (--tokens, --sampling,
 * --max-tokens, --val-fraction) with a task; prints the error and returns false. */
bool lm_cli_check_data(const char *command, const lm_cli_opts *o, const char *data,
                       const char *task);
/* Where a run's sequences come from: a task, or a text loaded once. */
typedef struct lm_cli_data {
    const lm_cli_opts *o;
    const char *data, *task;
    bt_corpus *corpus;         /* the text, loaded on the first call (free it) */
} lm_cli_data;
/* The training source of one run (a bt_compare_source_fn): the task (a task
 * fixes the sequence length: cfg->steps becomes its T, and an explicit
 * --steps that differs is an error), or the text, loaded into d->corpus on
 * the first call and shared after. */
bt_status lm_cli_source(void *d, bt_lm_config *cfg, bt_source *src, char *err, size_t errlen);
/* "ppl" or "loss": what a source's runs report (perplexity for token targets). */
static inline const char *lm_cli_measure(const bt_source *src)
{
    return src->tokens_out ? "ppl" : "loss";
}
/* Perplexity exp(loss) as text with `digits` decimals, computed from the
 * mean cross-entropy in double. A loss above ~709 gives a perplexity beyond
 * double's range: it is written as mantissa and decimal exponent
 * ("3.142e+1234"), never as inf while the loss is finite. */
const char *lm_cli_ppl(double loss, int digits, char *buf, size_t len);
/* x with 17 significant digits (a double read back exactly), "" for NaN. */
const char *lm_cli_num(double x, char *buf, size_t len);
/* "12.3k", "1.2M" */
const char *lm_cli_si(double x, char *buf, size_t len);
/* "1h02m", "3m05s", "12.3s" */
const char *lm_cli_duration(double s, char *buf, size_t len);
/* Ctrl-C and SIGTERM for a training command. The first asks the attached run
 * to stop after the minibatch under way (bt_lm_request_stop: the library
 * installs no handler itself) and says so on stderr; the command then saves
 * and exits 128 + the signal (130, 143). A second one exits at once with that
 * status, writing nothing: an atomic write cut short leaves the old file
 * whole and a temporary the next save removes. begin installs the handlers
 * (before any work, so a signal during loading is kept too), attach names
 * the run (a signal already caught stops it at once), signal is the one
 * caught (0 if none), end restores the previous handlers. */
void lm_cli_stop_begin(const char *command);
void lm_cli_stop_attach(bt_lm *lm);
/* Training has ended: a signal from here on stops nothing and says so; the
 * command finishes its output (a finished run then exits 128 + the signal,
 * a failed one with its own status). */
void lm_cli_stop_finished(void);
int lm_cli_stop_signal(void);
void lm_cli_stop_end(void);
/* Progress hook: one line on stderr redrawn with \r (for a terminal). */
void lm_cli_progress(void *ctx, const bt_lm_progress *p);
/* Clears the progress line if one is shown. */
void lm_cli_progress_clear(void);
/* Greedy continuation of the first tokens of the text, or NULL. */
char *lm_cli_sample(bt_lm *lm, const bt_corpus *c, int length);

#endif
