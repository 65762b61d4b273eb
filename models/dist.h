/* dist.h: data-parallel training over processes (MPI). Under `mpirun -np N`
 * every process holds the whole model, optimizer and data, and trains its
 * own contiguous block of the B rows of each minibatch; one all-reduce per
 * update sums the gradients, so every process takes the same step. Without a
 * launcher, or in a build without MPI (meson -Dmpi=disabled), the group is one
 * process and a run is exactly what it was without this file.
 *
 * Every call but bt_dist_launched, bt_dist_rank, bt_dist_size, bt_dist_rows,
 * bt_dist_reports, bt_dist_reserve and bt_dist_stats_get is collective: all processes make it, in
 * the same order. A failure is agreed on: each process brings its status,
 * and all leave with the status of the lowest-numbered process that failed,
 * which alone reports it (bt_dist_reports); the others' err says which
 * process failed. So a job ends with one message and one exit status.
 *
 * Dimension letters: B rows, N processes, P parameters. */
#ifndef BPTT_DIST_H
#define BPTT_DIST_H

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_dist bt_dist;

/* The number of processes a launcher (Open MPI's mpirun, a PMI or PMIx
 * launcher) started, from the environment, without starting MPI; 0 when the
 * process was not started by one. *rank (may be NULL) is this one's. */
BT_API int bt_dist_launched(int *rank);

/* Joins the group: starts MPI when a launcher started the process, else a
 * group of one. A build without MPI started with N > 1 is refused
 * (BT_ERR_ARG; the message is set on the first process only, so the job
 * shows it once). *out is NULL on error. */
BT_API bt_status bt_dist_begin(int *argc, char ***argv, bt_dist **out, char *err, size_t errlen);
/* Leaves the group (MPI_Finalize) and frees d. Collective. */
BT_API void bt_dist_end(bt_dist *d);

BT_API int bt_dist_rank(const bt_dist *d);
BT_API int bt_dist_size(const bt_dist *d);
/* What carries the messages: "Open MPI v4.1.4", or "none (built without MPI)". */
BT_API const char *bt_dist_transport(char *buf, size_t len);

/* This process's share of n rows, split into N contiguous blocks whose sizes
 * differ by at most one: rows [*first, *first + *count). */
BT_API void bt_dist_rows(const bt_dist *d, int n, int *first, int *count);

/* Agrees on st (see above). */
BT_API bt_status bt_dist_agree(bt_dist *d, bt_status st, char *err, size_t errlen);
/* Agrees on a code (an exit status; 0 means no failure): the code of the
 * lowest-numbered process that gives a non-zero one. */
BT_API int bt_dist_agree_code(bt_dist *d, int code);
/* True on the process whose messages the job shows: the lowest-numbered that
 * failed in the last failed agreement, else process 0. */
BT_API bool bt_dist_reports(const bt_dist *d);

/* Allocates the gradient frame for P parameters (not collective: call it
 * during setup, before the agreement that ends it). */
BT_API bt_status bt_dist_reserve(bt_dist *d, size_t P, char *err, size_t errlen);
/* The update: sums p's gradient block [P] and *loss over the processes with
 * one all-reduce and divides both by N, so a process whose loss is the mean
 * over its B/N rows ends with the gradient and loss of the mean over all B
 * rows. st is the window's status: a process whose window failed still
 * calls, so the others learn of it (its gradient counts as zero). digest says
 * which update this is (unroll.h's, mixed with the position in the run): a
 * process whose digest differs from process 0's is at another update, which
 * stops every process (BT_ERR_ARG) before their collectives could go out of
 * step. On a failed agreement the gradient and *loss are left as they were.
 * With p NULL it is a marker (a point all processes must reach together, the
 * end of an epoch): the same frame, no gradient. */
BT_API bt_status bt_dist_reduce_grad(bt_dist *d, bt_params *p, bt_status st, uint64_t digest,
                                     double *loss, char *err, size_t errlen);
/* Sums v [n] over the processes (not divided) and agrees on st, in one
 * all-reduce; v is left as it was on a failed agreement. */
BT_API bt_status bt_dist_sum(bt_dist *d, double *v, int n, bt_status st, char *err, size_t errlen);
/* buf holds N blocks of `block` values, block rank being this process's;
 * afterwards every process holds every block (the carried state of all rows). */
BT_API void bt_dist_gather_rows(bt_dist *d, bt_real *buf, size_t block);
/* A 64-bit checksum (FNV-1a) of `bytes` bytes at data, continuing h (0 to
 * begin one). */
BT_API uint64_t bt_dist_checksum(uint64_t h, const void *data, size_t bytes);
/* Agrees on st and checks that `checksum` is the same on every process:
 * BT_ERR_ARG on every process when it is not, naming the first process whose
 * checksum differs from process 0's, and what they are of (`what`). */
BT_API bt_status bt_dist_check_same(bt_dist *d, bt_status st, uint64_t checksum, const char *what,
                                    char *err, size_t errlen);

/* The gradient all-reduces so far: how many, the values each sent, and the
 * seconds spent inside them (transfer, and waiting for the slowest process). */
typedef struct bt_dist_stats {
    uint64_t reduces;
    size_t values;
    double seconds;
} bt_dist_stats;
BT_API bt_dist_stats bt_dist_stats_get(const bt_dist *d);

#ifdef __cplusplus
}
#endif
#endif
