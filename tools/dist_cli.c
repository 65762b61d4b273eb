/* dist_cli.c: the program's side of data-parallel training (dist_cli.h):
 * output of one process, messages held through the setup, the figures of
 * the all-reduces. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "dist_cli.h"

/* stderr into a temporary file until dist_cli_agree. */
static void hold_stderr(dist_cli *dc)
{
    fflush(stderr);
    dc->held = tmpfile();
    dc->saved_stderr = dc->held ? dup(STDERR_FILENO) : -1;
    if (dc->saved_stderr < 0 || dup2(fileno(dc->held), STDERR_FILENO) < 0) {
        if (dc->saved_stderr >= 0)
            close(dc->saved_stderr);
        if (dc->held)
            fclose(dc->held);
        dc->held = NULL;
        dc->saved_stderr = -1; /* messages are then shown as they come */
    }
}

/* stderr back; the held messages shown when show, else dropped. */
static void release_stderr(dist_cli *dc, bool show)
{
    if (dc->saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(dc->saved_stderr, STDERR_FILENO);
    close(dc->saved_stderr);
    dc->saved_stderr = -1;
    if (show) {
        char buf[4096];
        size_t n;
        rewind(dc->held);
        while ((n = fread(buf, 1, sizeof buf, dc->held)) > 0)
            fwrite(buf, 1, n, stderr);
        fflush(stderr);
    }
    fclose(dc->held);
    dc->held = NULL;
}

bool dist_cli_begin(dist_cli *dc, int *argc, char ***argv, const char *command, int *rc)
{
    char err[1024] = "";
    *dc = (dist_cli){.saved_stderr = -1};
    if (bt_dist_begin(argc, argv, &dc->d, err, sizeof err) != BT_OK) {
        if (err[0])
            fprintf(stderr, "bptt %s: %s\n", command, err);
        *rc = 2;
        return false;
    }
    if (bt_dist_size(dc->d) > 1) {
        if (bt_dist_rank(dc->d) != 0) { /* one process prints the run */
            fflush(stdout);
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, STDOUT_FILENO);
                close(null);
            }
        }
        hold_stderr(dc);
    }
    return true;
}

int dist_cli_agree(dist_cli *dc, int code)
{
    int agreed = bt_dist_agree_code(dc->d, code);
    release_stderr(dc, bt_dist_reports(dc->d));
    return agreed;
}

void dist_cli_describe(const dist_cli *dc, int batch, size_t n_params)
{
    int N = bt_dist_size(dc->d);
    if (N <= 1)
        return;
    char name[128];
    printf("  data parallel: %d processes (%s), %d rows of the batch each; one all-reduce of "
           "%zu values (%.3g MB) per update\n", N, bt_dist_transport(name, sizeof name), batch / N,
           n_params, (double)n_params * sizeof(bt_real) / 1e6);
}

void dist_cli_report(const dist_cli *dc, double train_seconds)
{
    if (bt_dist_size(dc->d) <= 1 || bt_dist_rank(dc->d) != 0)
        return;
    bt_dist_stats s = bt_dist_stats_get(dc->d);
    if (s.reduces == 0)
        return;
    printf("all-reduce: %llu updates, %.3f ms each (%.1f%% of the %.2f s of training, waiting "
           "for the slowest process included)\n", (unsigned long long)s.reduces,
           1e3 * s.seconds / (double)s.reduces,
           train_seconds > 0 ? 100 * s.seconds / train_seconds : 0, train_seconds);
}

void dist_cli_end(dist_cli *dc)
{
    release_stderr(dc, true);
    bt_dist_end(dc->d);
    dc->d = NULL;
}
