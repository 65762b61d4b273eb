/* blas_probe.c: what OpenBLAS chose on its own in a process that bptt did not
 * re-execute, and the kernel bptt would ask for instead ("none"): the
 * reference test_cli_blas.sh checks `bptt --version` against. */
#include <stdio.h>

#include "bptt.h"

int main(void)
{
    bt_blas_info bi;
    bt_blas_info_get(&bi);
    const char *better = bt_blas_better_kernel();
    printf("%s %s\n", bi.kernel, better ? better : "none");
    return 0;
}
