/* sigint_after_training.c: preloaded into `bptt train` by test_crash.sh, a
 * Ctrl-C in the moment after training has ended and before the command has
 * finished its output: bt_lm_stopped is the first library call after
 * bt_lm_train returns (tools/cmd_train.c; without --plot, as the test runs
 * it), and the only one. The run is complete by then; the
 * signal must neither stop nor re-save it, its message must say so (it once
 * said "stopping after this minibatch"), and the exit status says that a
 * signal came (130). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdbool.h>

typedef struct bt_lm bt_lm;

bool bt_lm_stopped(const bt_lm *lm)
{
    raise(SIGINT);
    bool (*real)(const bt_lm *) = (bool (*)(const bt_lm *))dlsym(RTLD_NEXT, "bt_lm_stopped");
    return real ? real(lm) : false;
}
