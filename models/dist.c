/* dist.c: the process group of a data-parallel run, over dist_net.h. Every
 * collective carries a status word per process in the buffer it sums
 * anyway (each process writes only its own slot, the others are zero, so
 * the sum is exact in any type), so a failure costs no extra message and can
 * never leave a process waiting for one that has stopped.
 *
 * Dimension letters: N processes, P parameters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bt_assert.h"
#include "bt_clock.h"
#include "dist.h"
#include "dist_net.h"

struct bt_dist {
    int rank, size;
    bool started;       /* the transport was started: finalize it */
    int failed;         /* lowest process that failed in the last failed agreement, or -1 */
    bt_real *frame;     /* gradient frame [P + 1 + 2N], allocated by bt_dist_reserve */
    size_t frame_cap, P;
    double *sums;       /* bt_dist_sum frame [n + N] */
    size_t sums_cap;
    uint64_t *words;    /* agreement frame [2N] */
    bt_dist_stats stats;
};

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

int bt_dist_launched(int *rank)
{
    /* Open MPI's mpirun, then PMI launchers (MPICH's hydra, srun --mpi=pmi2). */
    int size = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 0));
    int r = env_int("OMPI_COMM_WORLD_RANK", env_int("PMI_RANK", env_int("PMIX_RANK", 0)));
    if (size == 0 && getenv("PMIX_RANK"))
        size = 1; /* a PMIx launcher: the size is known to MPI only */
    if (rank)
        *rank = r;
    return size;
}

bt_status bt_dist_begin(int *argc, char ***argv, bt_dist **out, char *err, size_t errlen)
{
    *out = NULL;
    int rank = 0, launched = bt_dist_launched(&rank);
    if (launched > 1 && !bt_net_available()) {
        if (err && errlen)
            err[0] = '\0';
        if (rank != 0)
            return BT_ERR_ARG;
        return bt_error(err, errlen, BT_ERR_ARG, "started by a launcher (mpirun) with %d "
                        "processes, but this bptt was built without MPI, so each would train "
                        "alone: install Open MPI (libopenmpi-dev) and rebuild with "
                        "meson setup -Dmpi=enabled", launched);
    }
    bt_dist *d = bt_calloc(1, sizeof *d);
    if (!d)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    d->size = 1;
    d->failed = -1;
    if (launched > 0 && bt_net_available()) {
        bt_status st = bt_net_init(argc, argv, &d->rank, &d->size, err, errlen);
        if (st != BT_OK) {
            bt_free(d);
            return st;
        }
        d->started = true;
    }
    d->words = bt_calloc(2 * (size_t)d->size, sizeof *d->words);
    if (!d->words) {
        bt_dist_end(d);
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    }
    *out = d;
    return BT_OK;
}

void bt_dist_end(bt_dist *d)
{
    if (!d)
        return;
    if (d->started)
        bt_net_finalize();
    bt_free(d->frame);
    bt_free(d->sums);
    bt_free(d->words);
    bt_free(d);
}

int bt_dist_rank(const bt_dist *d) { return d ? d->rank : 0; }
int bt_dist_size(const bt_dist *d) { return d ? d->size : 1; }
const char *bt_dist_transport(char *buf, size_t len) { return bt_net_name(buf, len); }
bool bt_dist_reports(const bt_dist *d) { return !d || d->rank == (d->failed >= 0 ? d->failed : 0); }
bt_dist_stats bt_dist_stats_get(const bt_dist *d) { return d->stats; }

void bt_dist_rows(const bt_dist *d, int n, int *first, int *count)
{
    long N = bt_dist_size(d), r = bt_dist_rank(d);
    *first = (int)((long)n * r / N);
    *count = (int)((long)n * (r + 1) / N) - *first;
}

/* The process that failed, or -1: the lowest with a non-zero slot (each slot
 * holds that process's status), except that a failure agreed on before keeps
 * its reporter while it still fails (every process agreeing again on an
 * agreed failure must not hand the report to process 0). Its status into *st. */
static int first_failed(const bt_dist *d, double slot(const void *, int), const void *slots,
                        int *st)
{
    int found = -1;
    if (d->failed >= 0 && slot(slots, d->failed) != 0)
        found = d->failed;
    for (int r = 0; found < 0 && r < d->size; r++)
        if (slot(slots, r) != 0)
            found = r;
    *st = found >= 0 ? (int)slot(slots, found) : 0;
    return found;
}

static double slot_real(const void *s, int r) { return (double)((const bt_real *)s)[r]; }
static double slot_double(const void *s, int r) { return ((const double *)s)[r]; }
static double slot_u64(const void *s, int r) { return (double)((const uint64_t *)s)[r]; }

/* After a sum: the agreed status. A failure is recorded, and every process
 * but the one that reports gets a message naming it. */
static bt_status settle(bt_dist *d, int failed, int code, char *err, size_t errlen)
{
    if (failed < 0)
        return BT_OK;
    d->failed = failed;
    if (failed != d->rank)
        bt_errorf(err, errlen, "process %d of %d failed (it reports why)", failed, d->size);
    return (bt_status)code;
}

bt_status bt_dist_agree(bt_dist *d, bt_status st, char *err, size_t errlen)
{
    return bt_dist_check_same(d, st, 0, NULL, err, errlen);
}

int bt_dist_agree_code(bt_dist *d, int code)
{
    uint64_t *w = d->words;
    memset(w, 0, sizeof *w * (size_t)d->size);
    w[d->rank] = (uint64_t)(unsigned)code;
    if (d->size > 1)
        bt_net_sum_u64(w, (size_t)d->size);
    int agreed = 0, failed = first_failed(d, slot_u64, w, &agreed);
    if (failed >= 0)
        d->failed = failed;
    return agreed;
}

static bool reserve(void **buf, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap)
        return true;
    void *b = bt_realloc(*buf, n * elem);
    if (!b)
        return false;
    *buf = b;
    *cap = n;
    return true;
}

bt_status bt_dist_reserve(bt_dist *d, size_t P, char *err, size_t errlen)
{
    if (!reserve((void **)&d->frame, &d->frame_cap, P + 1 + 2 * (size_t)d->size, sizeof(bt_real)))
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for the gradient frame of %zu "
                        "values", P);
    d->P = P;
    return BT_OK;
}

/* Every process at the same update? Their digests, kept to 24 bits so that
 * they sum exactly even in float, must equal process 0's. */
static bt_status check_digests(bt_dist *d, const bt_real *tags, char *err, size_t errlen)
{
    for (int r = 1; r < d->size; r++)
        if (tags[r] != tags[0]) {
            d->failed = 0; /* every process knows; the first says it */
            return bt_error(err, errlen, BT_ERR_ARG, "process %d does not take the update process "
                            "0 takes (another window, other truncation factors, or other data "
                            "in the minibatch): the processes must draw the same factors from "
                            "the seed they are given and read the same data", r);
        }
    return BT_OK;
}

bt_status bt_dist_reduce_grad(bt_dist *d, bt_params *p, bt_status st, uint64_t digest,
                              double *loss, char *err, size_t errlen)
{
    size_t P = d->P, N = (size_t)d->size, n = P + 1 + 2 * N;
    /* Reserved beforehand: a process without its frame could not answer. */
    BT_ASSERT(d->frame && (!p || bt_params_total(p) == P),
              "bt_dist_reduce_grad: %zu values, %zu reserved", p ? bt_params_total(p) : 0, P);
    bt_real *f = d->frame, *g = p ? bt_params_grad(p) : NULL;
    if (st == BT_OK && g)
        memcpy(f, g, sizeof *f * P);
    else
        memset(f, 0, sizeof *f * P);
    f[P] = st == BT_OK ? (bt_real)*loss : 0;
    memset(f + P + 1, 0, sizeof *f * 2 * N);
    f[P + 1 + d->rank] = (bt_real)st;
    f[P + 1 + N + d->rank] = (bt_real)(digest >> 40);
    double t0 = bt_monotonic_s();
    if (N > 1)
        bt_net_sum_real(f, n);
    if (g) { /* the figures are of updates, not markers */
        d->stats.seconds += bt_monotonic_s() - t0;
        d->stats.reduces++;
        d->stats.values = P;
    }
    int code = 0, failed = first_failed(d, slot_real, f + P + 1, &code);
    if (failed >= 0)
        return settle(d, failed, code, err, errlen);
    if ((st = check_digests(d, f + P + 1 + N, err, errlen)) != BT_OK || !g)
        return st;
    /* Each process's loss is the mean over its B/N rows: the mean over all B
     * rows is the sum over processes divided by N, and so is its gradient. */
    double scale = 1.0 / (double)N;
    for (size_t i = 0; i < P; i++)
        g[i] = (bt_real)((double)f[i] * scale);
    *loss = (double)f[P] * scale;
    return BT_OK;
}

bt_status bt_dist_sum(bt_dist *d, double *v, int n, bt_status st, char *err, size_t errlen)
{
    size_t N = (size_t)d->size, len = (size_t)n + N;
    if (!reserve((void **)&d->sums, &d->sums_cap, len, sizeof(double)))
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for a sum over processes");
    double *f = d->sums;
    memcpy(f, v, sizeof *f * (size_t)n);
    memset(f + n, 0, sizeof *f * N);
    f[(size_t)n + (size_t)d->rank] = st;
    if (N > 1)
        bt_net_sum_double(f, len);
    int code = 0, failed = first_failed(d, slot_double, f + n, &code);
    if (failed >= 0)
        return settle(d, failed, code, err, errlen);
    memcpy(v, f, sizeof *f * (size_t)n);
    return BT_OK;
}

void bt_dist_gather_rows(bt_dist *d, bt_real *buf, size_t block)
{
    if (d->size > 1)
        bt_net_allgather_real(buf, block);
}

uint64_t bt_dist_checksum(uint64_t h, const void *data, size_t bytes)
{
    /* FNV-1a: any flipped bit changes it. */
    const unsigned char *c = data;
    if (h == 0)
        h = 14695981039346656037ull;
    for (size_t i = 0; i < bytes; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

bt_status bt_dist_check_same(bt_dist *d, bt_status st, uint64_t checksum, const char *what,
                             char *err, size_t errlen)
{
    int N = d->size;
    uint64_t *w = d->words; /* [N statuses][N checksums] */
    memset(w, 0, sizeof *w * 2 * (size_t)N);
    w[d->rank] = (uint64_t)st;
    w[N + d->rank] = checksum;
    if (N > 1)
        bt_net_sum_u64(w, 2 * (size_t)N);
    int code = 0, failed = first_failed(d, slot_u64, w, &code);
    if (failed >= 0)
        return settle(d, failed, code, err, errlen);
    for (int r = 1; r < N; r++)
        if (w[N + r] != w[N]) {
            d->failed = 0; /* every process knows; the first says it */
            return bt_error(err, errlen, BT_ERR_ARG, "%s differ between processes: process %d "
                            "has checksum %016llx, process 0 %016llx. Every process must start "
                            "from the same data and checkpoint and take identical steps; files "
                            "that differ between hosts, a plugin that computes differently on "
                            "one of them or a faulty host breaks that, so the run stops",
                            what ? what : "the values", r, (unsigned long long)w[N + r],
                            (unsigned long long)w[N]);
        }
    return BT_OK;
}
