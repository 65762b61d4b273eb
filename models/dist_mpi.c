/* dist_mpi.c: dist_net.h over MPI. Collectives run on MPI_COMM_WORLD with the
 * default error handler (errors are fatal to the job). MPI takes int counts:
 * a buffer larger than INT_MAX values goes in pieces. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "dist_net.h"

#define CHUNK ((size_t)INT_MAX)

bool bt_net_available(void) { return true; }

bt_status bt_net_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen)
{
    int up = 0;
    MPI_Initialized(&up);
    if (!up && MPI_Init(argc, argv) != MPI_SUCCESS)
        return bt_error(err, errlen, BT_ERR_ARG, "MPI_Init failed: check the MPI installation "
                        "(mpirun --version) and that every host runs the same one");
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return BT_OK;
}

void bt_net_finalize(void)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down)
        MPI_Finalize();
}

const char *bt_net_name(char *buf, size_t len)
{
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int n = 0;
    MPI_Get_library_version(lib, &n);
    lib[strcspn(lib, ",\n")] = '\0'; /* "Open MPI v4.1.4, package: ..." */
    snprintf(buf, len, "%s", lib);
    return buf;
}

static void sum(void *buf, size_t n, size_t elem, MPI_Datatype type)
{
    for (size_t at = 0; at < n; at += CHUNK) {
        size_t k = n - at < CHUNK ? n - at : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at * elem, (int)k, type, MPI_SUM, MPI_COMM_WORLD);
    }
}

void bt_net_sum_real(bt_real *buf, size_t n)
{
    sum(buf, n, sizeof *buf, BT_REAL_DOUBLE ? MPI_DOUBLE : MPI_FLOAT);
}

void bt_net_sum_double(double *buf, size_t n) { sum(buf, n, sizeof *buf, MPI_DOUBLE); }
void bt_net_sum_u64(uint64_t *buf, size_t n) { sum(buf, n, sizeof *buf, MPI_UINT64_T); }

void bt_net_allgather_real(bt_real *buf, size_t block)
{
    /* One block of a row split: far below INT_MAX values in any real run. */
    if (block > CHUNK) {
        fprintf(stderr, "bptt: a block of %zu values is too large for MPI_Allgather\n", block);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)block,
                  BT_REAL_DOUBLE ? MPI_DOUBLE : MPI_FLOAT, MPI_COMM_WORLD);
}
