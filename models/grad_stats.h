/* grad_stats.h: how good a gradient estimate is. For one model and one
 * sequence, the exact gradient of L (full BPTT) against the estimates of a
 * truncation policy or an online estimator over many draws (seeds): the bias
 * of their mean, their cosine similarity to it, their relative variance, and
 * the error of the running mean against the number of draws (an unbiased
 * estimate's falls as 1/sqrt(n), a biased one's levels off). What
 * `bptt analyze --estimator` prints (tools/analysis_report.h shows it).
 *
 * Dimension letters: B rows, T steps, P parameters, N draws. */
#ifndef BPTT_GRAD_STATS_H
#define BPTT_GRAD_STATS_H

#include "online.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_grad_stats {
    char desc[128];      /* canonical spec ("fixed:5", "uoro,eps=1e-07") */
    bool online;         /* an estimator, not a truncation policy */
    int draws;           /* run; 1 for a method that gave the same gradient twice */
    double rel_bias;     /* ||mean - g|| / ||g|| */
    double rel_se;       /* its noise floor sqrt(rel_var / draws): a bias well above it is real */
    double cos_mean;     /* cos(mean, g) */
    double cos_draw;     /* mean over draws of cos(g_s, g) */
    double rel_var;      /* sum_s ||g_s - mean||^2 / (draws - 1) / ||g||^2; 0 for one draw */
    double seconds;      /* CPU time per draw */
    double *cos;         /* [draws] cos(g_s, g) */
    double *running;     /* [draws] ||mean of the first n draws - g|| / ||g||, n = 1..draws */
} bt_grad_stats;

/* The exact gradient of L (full BPTT, parameters fixed) into g [P], from a
 * zero initial state, with r's policy full; its norm into *norm. */
BT_API bt_status bt_grad_exact(const bt_registry *r, bt_model *m, const bt_sequence *seq,
                               bt_real *g, double *norm, char *err, size_t errlen);

/* The estimates of spec (a policy or an estimator registered in r) over
 * `draws` seeds seed, seed + 1, ..., each from a zero state, against g [P]
 * (norm gnorm): *out filled (free with bt_grad_stats_free). A method whose
 * first two draws agree bit for bit is taken as deterministic and stops there. */
BT_API bt_status bt_grad_stats_run(const bt_registry *r, bt_model *m, const bt_sequence *seq,
                                   const char *spec, int draws, uint64_t seed, const bt_real *g,
                                   double gnorm, bt_grad_stats *out, char *err, size_t errlen);
BT_API void bt_grad_stats_free(bt_grad_stats *s);

#ifdef __cplusplus
}
#endif
#endif
