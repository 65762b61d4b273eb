/* blas.c: the one matrix product everything uses. CBLAS (OpenBLAS) when the
 * build found it, else a portable blocked loop that is slower but exact. */
#include "bptt.h"

#if BT_HAVE_CBLAS
#include <cblas.h>
#endif

#if !BT_HAVE_CBLAS
/* C = alpha op(A) op(B) + beta C, row-major, i-k-j order for contiguous rows. */
static void gemm_portable(bool ta, bool tb, int m, int n, int k, bt_real alpha,
                          const bt_real *a, int lda, const bt_real *b, int ldb, bt_real beta,
                          bt_real *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        bt_real *ci = c + (size_t)i * ldc;
        if (beta == 0)
            for (int j = 0; j < n; j++)
                ci[j] = 0;
        else if (beta != 1)
            for (int j = 0; j < n; j++)
                ci[j] *= beta;
        for (int p = 0; p < k; p++) {
            bt_real aip = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
            aip *= alpha;
            if (aip == 0)
                continue;
            if (!tb) {
                const bt_real *bp = b + (size_t)p * ldb;
                for (int j = 0; j < n; j++)
                    ci[j] += aip * bp[j];
            } else {
                for (int j = 0; j < n; j++)
                    ci[j] += aip * b[(size_t)j * ldb + p];
            }
        }
    }
}
#endif

void bt_gemm(bool trans_a, bool trans_b, int m, int n, int k, bt_real alpha, const bt_real *a,
             int lda, const bt_real *b, int ldb, bt_real beta, bt_real *c, int ldc)
{
#if BT_HAVE_CBLAS
#if BT_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
#else
    gemm_portable(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}
