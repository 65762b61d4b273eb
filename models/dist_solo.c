/* dist_solo.c: dist_net.h for a build without MPI: a group of one, whose
 * sums are the values themselves. (dist.c refuses to start such a build
 * under mpirun with N > 1: N copies would each train alone.) */
#include <stdio.h>

#include "dist_net.h"

bool bt_net_available(void) { return false; }

bt_status bt_net_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen)
{
    (void)argc, (void)argv, (void)err, (void)errlen;
    *rank = 0;
    *size = 1;
    return BT_OK;
}

void bt_net_finalize(void) {}

const char *bt_net_name(char *buf, size_t len)
{
    snprintf(buf, len, "none (built without MPI)");
    return buf;
}

void bt_net_sum_real(bt_real *buf, size_t n) { (void)buf, (void)n; }
void bt_net_sum_double(double *buf, size_t n) { (void)buf, (void)n; }
void bt_net_sum_u64(uint64_t *buf, size_t n) { (void)buf, (void)n; }
void bt_net_allgather_real(bt_real *buf, size_t block) { (void)buf, (void)block; }
