/* analysis_report.h: how `bptt analyze` and the demo show a gradient analysis
 * (models/analyze.h computes it): a table, a JSON object, an SVG figure.
 * Presentation, part of the program's internal library (tools/). */
#ifndef BPTT_ANALYSIS_REPORT_H
#define BPTT_ANALYSIS_REPORT_H

#include <stdio.h>

#include <jansson.h>

#include "analyze.h"

/* The table: gradient and Jacobian norms against lag (about 20 rows), the
 * rates, and with a recurrent matrix its spectrum and the power iteration. */
void cli_analysis_print(const bt_analysis *a, FILE *f);
/* The figures as a new JSON object (lags, hidden, grad_norm, jac_norm, rates,
 * and with a matrix its eigenvalues and power iteration; null for a number
 * that is not finite), NULL when out of memory. */
json_t *cli_analysis_to_json(const bt_analysis *a);
/* An SVG figure: gradient norm and Jacobian norm against lag, eigenvalues
 * with the unit circle, the power-iteration angle. title may be NULL. */
bt_status cli_analysis_svg(const bt_analysis *a, const char *title, const char *path, char *err,
                           size_t errlen);

#endif
