/* sigint_at_cleanup.c: preloaded into `bptt train` by test_crash.sh, a Ctrl-C
 * at the one moment a timed signal rarely hits: after training, while the
 * program frees its plugins (bt_registry_free is the last library call
 * before exit). The run is saved by then; what must not be lost is what it
 * printed (a late SIGINT once dropped the buffered "done:" line). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>

typedef struct bt_registry bt_registry;

void bt_registry_free(bt_registry *reg)
{
    raise(SIGINT);
    void (*real)(bt_registry *) = (void (*)(bt_registry *))dlsym(RTLD_NEXT, "bt_registry_free");
    if (real)
        real(reg);
}
