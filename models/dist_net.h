/* dist_net.h: the transport under dist.c, internal to libbptt-train. Two
 * implementations with one interface: dist_mpi.c (Open MPI, or any MPI) when
 * the build found MPI, dist_solo.c (a group of one) when it did not. Every
 * call but bt_net_available and bt_net_name is collective; a transport failure (a lost host)
 * ends the job through MPI's default error handler, which is what a broken
 * collective needs: no process could go on alone. */
#ifndef BPTT_DIST_NET_H
#define BPTT_DIST_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bptt.h"

/* True when the build has a transport (MPI). */
bool bt_net_available(void);
/* Starts the transport; its rank and size. */
bt_status bt_net_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen);
void bt_net_finalize(void);
/* "Open MPI v4.1.4", or what the solo build says. */
const char *bt_net_name(char *buf, size_t len);
/* In-place sums over the group. */
void bt_net_sum_real(bt_real *buf, size_t n);
void bt_net_sum_double(double *buf, size_t n);
void bt_net_sum_u64(uint64_t *buf, size_t n);
/* buf holds size blocks of `block` values; block `rank` is this process's:
 * afterwards every process holds every block. */
void bt_net_allgather_real(bt_real *buf, size_t block);

#endif
