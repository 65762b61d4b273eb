/* blas_kernel.c: run on the BLAS kernel this CPU deserves. OpenBLAS picks its
 * kernel once, when it loads, from OPENBLAS_CORETYPE or its own CPU detection;
 * Debian 12's 0.3.21 does not know recent CPUs (Sapphire Rapids) and falls
 * back to SSE3 kernels about 4x slower. When that happens and the user did not
 * choose a kernel, bptt re-executes itself once with OPENBLAS_CORETYPE set,
 * and the new process checks the kernel's products before using it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Set by bptt for the process it re-executes: "CHOSEN:FALLBACK" while the
 * chosen kernel is on trial, "rejected:CHOSEN:FALLBACK" after it failed. */
#define MARK "BPTT_BLAS_KERNEL"

static char provenance[160] = "OpenBLAS's own CPU detection";

static void reexec(char **argv, const char *coretype, const char *mark)
{
    setenv("OPENBLAS_CORETYPE", coretype, 1);
    setenv(MARK, mark, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* No /proc or no exec: carry on with the kernel already loaded. */
    unsetenv(MARK);
    snprintf(provenance, sizeof provenance, "OpenBLAS's own CPU detection (bptt could not "
             "re-execute itself to use %s)", coretype);
}

void cli_blas_choose(char **argv)
{
    const char *mark = getenv(MARK);
    char chosen[64], fallback[64];
    if (mark && sscanf(mark, "rejected:%63[^:]:%63s", chosen, fallback) == 2) {
        snprintf(provenance, sizeof provenance, "%s failed bptt's product check on this CPU; "
                 "OpenBLAS's own choice", chosen);
        unsetenv(MARK);
        return;
    }
    if (mark && sscanf(mark, "%63[^:]:%63s", chosen, fallback) == 2) {
        char err[512];
        unsetenv(MARK); /* children of this process choose for themselves */
        if (bt_blas_selftest(err, sizeof err) == BT_OK) {
            snprintf(provenance, sizeof provenance, "chosen by bptt for this CPU (OpenBLAS "
                     "detected %s) and checked", fallback);
            return;
        }
        fprintf(stderr, "bptt: %s; going back to %s\n", err, fallback);
        char again[160];
        snprintf(again, sizeof again, "rejected:%s:%s", chosen, fallback);
        reexec(argv, fallback, again);
        return;
    }
    if (getenv("OPENBLAS_CORETYPE")) { /* the user's choice is never overridden */
        snprintf(provenance, sizeof provenance, "from OPENBLAS_CORETYPE");
        return;
    }
    const char *better = bt_blas_better_kernel();
    if (!better)
        return;
    bt_blas_info bi;
    bt_blas_info_get(&bi);
    char trial[160];
    snprintf(trial, sizeof trial, "%s:%s", better, bi.kernel);
    reexec(argv, better, trial);
}

const char *cli_blas_describe(char *buf, size_t len)
{
    bt_blas_info bi;
    bt_blas_info_get(&bi);
    if (strcmp(bi.library, "portable") == 0)
        snprintf(buf, len, "portable matrix products (built without OpenBLAS)");
    else
        snprintf(buf, len, "%s, kernel %s (%s), %d thread%s", bi.library, bi.kernel, provenance,
                 bi.threads, bi.threads == 1 ? "" : "s");
    return buf;
}
