/* analyze.h: seeing vanishing and exploding gradients. For one model and one
 * probe sequence: how much gradient ONE loss term sends back k steps
 * (||dL_T/dh_{T-k}||, from the tape under full BPTT), the norm of the state
 * Jacobian product dh_T/dh_{T-k}, the eigenvalues of the recurrent matrix, and
 * the power-iteration picture of its symmetric part. The numbers only: the
 * program prints them as a table, JSON or an SVG figure (tools/analysis_report.h).
 *
 * Dimension letters: B rows, T steps, H hidden (state width), K largest lag. */
#ifndef BPTT_ANALYZE_H
#define BPTT_ANALYZE_H

#include "unroll.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_analysis {
    int K;              /* lags 0..K */
    int H;
    /* ||dL_T/dh_{T-k}||: Frobenius norm of the [B,H] gradient over the whole
     * batch (not a mean of row norms), the loss being the last step's alone. */
    double *grad_norm;  /* [K+1] */
    /* ||dh_T/dh_{T-k}||_2 of batch row 0: the largest singular value of the
     * Jacobian product (for tanh: prod diag(1 - h^2) W_hh^T). An upper bound
     * on grad_norm[k] / grad_norm[0] for that row. */
    double *jac_norm;   /* [K+1] */
    /* A least-squares line through (k, log grad_norm[k]) over the finite,
     * positive norms: grad_norm[k] ~ grad_scale * grad_rate^k. */
    double grad_rate, grad_scale;
    double jac_rate;    /* the same for jac_norm */

    /* The first square recurrent parameter (W_hh); n 0 when the cell has none. */
    char matrix[BT_NAME_LEN];
    int n;
    double *eig_re, *eig_im; /* [n] sorted by modulus, largest first */
    double radius;

    /* Power iteration on M = (W + W^T) / 2: tan of the angle between M^k x
     * (x a random start) and M's leading eigenvector v1, for k = 0..power_K,
     * and the prediction tan(angle_0) |lambda_2 / lambda_1|^k. */
    int power_K;
    double *power_tan;  /* [power_K + 1] */
    double *power_pred; /* [power_K + 1] */
    double lambda1, lambda2; /* M's two eigenvalues of largest modulus */
} bt_analysis;

/* Random probe data for m: token ids or N(0,1) inputs and targets, B rows by T
 * steps (buffers bt_malloc'd into *seq; release with bt_probe_sequence_free). */
BT_API bt_status bt_probe_sequence_new(const bt_model *m, int B, int T, bt_rng *rng, bt_sequence *seq);
/* B rows of T steps from a token stream ids[n], row b starting at b * (n / B):
 * inputs ids and next-token targets (same release). BT_ERR_ARG with a message
 * when the stream is shorter than B * (T + 1). */
BT_API bt_status bt_probe_sequence_from_ids(const int32_t *ids, long n, int B, int T,
                                            bt_sequence *seq, char *err, size_t errlen);
BT_API void bt_probe_sequence_free(bt_sequence *seq);

/* Runs every measurement on the first K+1 steps of seq (T >= K+1) from the
 * initial state h0 (n_states buffers [B, width]; NULL: zeros). power_K 0 picks
 * a length from the eigenvalue gap. */
BT_API bt_status bt_analysis_run(bt_model *m, const bt_sequence *seq, bt_real *const *h0, int K,
                                 int power_K, uint64_t seed, bt_analysis *out, char *err, size_t errlen);
BT_API void bt_analysis_free(bt_analysis *a);

/* ||dL_T/dh_{T-k}|| alone, k = 0..K (norm[K+1]), as in bt_analysis. */
BT_API bt_status bt_grad_vs_lag(bt_model *m, const bt_sequence *seq, bt_real *const *h0, int K,
                                double *norm, char *err, size_t errlen);

/* Power iteration on a symmetric n x n matrix M (row-major): tan_angle[k] for
 * k = 0..K as above, pred[k] = tan_angle[0] |l2/l1|^k, l1/l2 (may be NULL)
 * M's eigenvalues of largest modulus. x0 [n] is the start (NULL: random from seed). */
BT_API bt_status bt_power_angles(const double *M, int n, int K, const double *x0, uint64_t seed,
                                 double *tan_angle, double *pred, double *l1, double *l2);

/* Eigen-decomposition of a symmetric n x n matrix: w ascending, V's columns
 * the eigenvectors (row-major, V[i*n + j] = component i of vector j).
 * LAPACK dsyev when available, else cyclic Jacobi. */
BT_API bt_status bt_sym_eigen(const double *M, int n, double *w, double *V);

/* The least-squares line through (k, log y[k]) over the finite, positive
 * y[k], k = 0..n-1, as y[k] ~ scale * rate^k (scale = exp(intercept), rate =
 * exp(slope)). BT_ERR_NUMERIC and both NAN with fewer than two such points. */
BT_API bt_status bt_geometric_fit(const double *y, int n, double *scale, double *rate);
/* The rate alone (NAN where bt_geometric_fit fails). */
BT_API double bt_geometric_rate(const double *y, int n);

#ifdef __cplusplus
}
#endif
#endif
