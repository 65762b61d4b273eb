/* grad_stats_report.h: how `bptt analyze --estimator` shows the bias and
 * variance of gradient estimates (models/grad_stats.h computes them): a
 * table, a JSON array, an SVG figure. Presentation (tools/). */
#ifndef BPTT_GRAD_STATS_REPORT_H
#define BPTT_GRAD_STATS_REPORT_H

#include <stdio.h>

#include <jansson.h>

#include "grad_stats.h"

/* One row per method: draws, relative bias and its noise floor, cosines,
 * relative variance, CPU time per draw; a line on how to read them. */
void cli_grad_stats_print(const bt_grad_stats *s, int n, double gnorm, FILE *f);
/* [{"method", "online", "draws", "rel_bias", "rel_se", "cos_mean", "cos_draw",
 * "rel_var", "seconds"}, ...] (null for a number that is not finite); NULL
 * when out of memory. */
json_t *cli_grad_stats_to_json(const bt_grad_stats *s, int n);
/* Two panels: the running mean's relative error against the number of draws
 * (log-log, with 1/sqrt(n) for reference), and each draw's cosine to the
 * exact gradient. */
bt_status cli_grad_stats_svg(const bt_grad_stats *s, int n, const char *title, const char *path,
                             char *err, size_t errlen);

#endif
