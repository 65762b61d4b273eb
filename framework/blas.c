/* blas.c: the one matrix product everything uses. CBLAS (OpenBLAS) when the
 * build found it, else a portable blocked loop that is slower but exact.
 * Also what a program needs to know about the BLAS it runs on: the library,
 * the kernel OpenBLAS picked, threads, whether that kernel is a generic
 * fallback on this CPU, and a numerical check of the active kernel. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bptt.h"

#if BT_HAVE_CBLAS
#include <cblas.h>
#endif
#if BT_HAVE_DNNL
#include <omp.h>
#include <stdlib.h>
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

/* ---- what runs the products ------------------------------------------------ */

void bt_blas_info_get(bt_blas_info *out)
{
#if BT_HAVE_CBLAS
    out->library = "OpenBLAS";
#if BT_HAVE_DNNL /* framework/packed.c: the per-step weight products on oneDNN */
    const char *env = getenv("BPTT_DNNL");
    out->library = env && !strcmp(env, "off") ? "OpenBLAS (oneDNN off: BPTT_DNNL=off)"
                                               : "OpenBLAS + oneDNN (packed weights)";
#endif
    out->kernel = openblas_get_corename();
    out->threads = openblas_get_num_threads();
#else
    out->library = "portable";
    out->kernel = "portable";
    out->threads = 1;
#endif
}

void bt_blas_set_threads(int n)
{
#if BT_HAVE_DNNL
    omp_set_num_threads(n < 1 ? 1 : n); /* Debian's oneDNN runs on OpenMP */
#endif
#if BT_HAVE_CBLAS
    openblas_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

#if BT_HAVE_CBLAS && (defined(__x86_64__) || defined(__i386__))
/* OpenBLAS kernels of CPUs older than AVX: what its dynamic dispatch falls
 * back to when it does not know a CPU (0.3.21 does not know Sapphire Rapids
 * and runs Prescott's SSE3 kernels there, about 4x slower than SkylakeX's). */
static bool generic_kernel(const char *k)
{
    static const char *const old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                      "Atom", "Katmai", "Coppermine", "Northwood", "Banias",
                                      "Opteron", "Opteron(SSE3)", "Barcelona", "Bobcat",
                                      "Unknown"};
    for (size_t i = 0; i < sizeof old / sizeof *old; i++)
        if (!strcmp(k, old[i]))
            return true;
    return false;
}
#endif

const char *bt_blas_better_kernel(void)
{
#if BT_HAVE_CBLAS && (defined(__x86_64__) || defined(__i386__))
    if (!generic_kernel(openblas_get_corename()))
        return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    if (__builtin_cpu_supports("avx"))
        return "SandyBridge";
#endif
    return NULL;
}

/* C = op(A) op(B) by the plain triple loop, in double. */
static void product_reference(bool ta, bool tb, int m, int n, int k, const bt_real *a,
                              const bt_real *b, double *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta ? a[p * m + i] : a[i * k + p]) *
                     (double)(tb ? b[j * k + p] : b[p * n + j]);
            c[i * n + j] = s;
        }
}

bt_status bt_blas_selftest(char *err, size_t errlen)
{
    /* Shapes like a step's: skinny, square, odd sizes that exercise the
     * kernels' edge handling, and both transposes of the backward. */
    static const int shapes[][5] = {{32, 67, 67, 0, 0}, {7, 33, 129, 1, 0}, {65, 17, 40, 0, 1},
                                    {130, 97, 31, 1, 1}};
    enum { MAX = 130 * 129 };
    static bt_real a[MAX], b[MAX], c[MAX];
    static double ref[MAX];
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < MAX; i++) { /* values in [-1, 1) from a fixed LCG */
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        a[i] = (bt_real)((double)(x >> 11) / 4503599627370496.0 - 1);
        b[MAX - 1 - i] = -a[i] * (bt_real)0.5;
    }
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        bool ta = shapes[s][3], tb = shapes[s][4];
        bt_gemm(ta, tb, m, n, k, 1, a, ta ? m : k, b, tb ? k : n, 0, c, n);
        product_reference(ta, tb, m, n, k, a, b, ref);
        /* Rounding of k products of |x| <= 1 in bt_real, with room to spare. */
        double tol = (BT_REAL_DOUBLE ? 1e-13 : 2e-5) * k;
        for (int i = 0; i < m * n; i++)
            if (!(fabs((double)c[i] - ref[i]) <= tol)) {
                bt_blas_info bi;
                bt_blas_info_get(&bi);
                return bt_error(err, errlen, BT_ERR_NUMERIC,
                                "%s kernel %s computes a wrong matrix product: [%dx%d]x[%dx%d]%s "
                                "element %d is %.9g, expected %.9g", bi.library, bi.kernel, m, k,
                                k, n, ta || tb ? " (transposed)" : "", i, (double)c[i], ref[i]);
            }
    }
    return BT_OK;
}
