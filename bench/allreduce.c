/* allreduce.c: the floor under data-parallel training's one all-reduce per
 * update: MPI_Allreduce (sum, in place) of P values of bptt's real type on
 * processes that enter it together (a barrier first), so the time is the
 * transfer alone, without the waiting for a slower process that bptt train's
 * own `all-reduce:` figure includes. bench/mpi_bench.py runs it.
 * Usage: mpirun -np N allreduce P [REPEATS]; prints one line from process 0:
 *   allreduce: N processes, P values (B bytes): median M ms, min m ms */
#include <stdio.h>
#include <stdlib.h>

#include <mpi.h>

#include "bptt.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long P = argc > 1 ? atol(argv[1]) : 0, reps = argc > 2 ? atol(argv[2]) : 200;
    if (P <= 0 || P > 1L << 30 || reps <= 0 || reps > 1000000) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N allreduce P [REPEATS]\n");
        MPI_Finalize();
        return 2;
    }
    bt_real *buf = calloc((size_t)P, sizeof *buf);
    double *t = malloc(sizeof *t * (size_t)reps);
    if (!buf || !t) {
        fprintf(stderr, "allreduce: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Datatype type = BT_REAL_DOUBLE ? MPI_DOUBLE : MPI_FLOAT;
    for (long i = -10; i < reps; i++) { /* 10 unmeasured: connections, caches */
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)P, type, MPI_SUM, MPI_COMM_WORLD);
        if (i >= 0)
            t[i] = MPI_Wtime() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    if (rank == 0)
        printf("allreduce: %d processes, %ld values (%zu bytes): median %.4f ms, min %.4f ms\n",
               size, P, (size_t)P * sizeof(bt_real), 1e3 * t[reps / 2], 1e3 * t[0]);
    free(buf);
    free(t);
    MPI_Finalize();
    return 0;
}
