/* dist_cli.h: `bptt train` under mpirun speaking with one voice. Process 0
 * alone writes to stdout; messages of the setup (a bad option, a file one
 * host cannot read) are held back until the processes agree, then only those
 * of the process that failed are shown (process 0's when none did), and every
 * process leaves with the same exit status. Without a launcher it is a group
 * of one and nothing is held back. */
#ifndef BPTT_DIST_CLI_H
#define BPTT_DIST_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "dist.h"

typedef struct dist_cli {
    bt_dist *d;
    int saved_stderr; /* the real stderr while messages are held, else -1 */
    FILE *held;       /* where stderr goes meanwhile */
} dist_cli;

/* Joins the group (MPI_Init under a launcher) and starts holding messages.
 * False with *rc (the message printed once for the job) when it cannot. */
bool dist_cli_begin(dist_cli *dc, int *argc, char ***argv, const char *command, int *rc);
/* Ends the setup: code is 0 when this process goes on, else its exit status
 * plus one. Returns the agreed code (that of the lowest-numbered process that
 * stops) after showing the held messages of the process that reports. */
int dist_cli_agree(dist_cli *dc, int code);
/* "  data parallel: 2 processes (Open MPI v4.1.4), batch rows 0-15 of 32 on
 * process 0 ...": what the run splits, for the setup lines (nothing for one). */
void dist_cli_describe(const dist_cli *dc, int batch, size_t n_params);
/* The all-reduce figures after training (nothing for one process). */
void dist_cli_report(const dist_cli *dc, double train_seconds);
/* Leaves the group (MPI_Finalize). */
void dist_cli_end(dist_cli *dc);

#endif
