/* fastmath.h: exp, tanh and sigmoid for float tensors that the compiler can
 * vectorise (no branches: both sides of a choice are computed and one is
 * selected; no calls where the CPU has FMA, see below). glibc's tanhf took an
 * eighth of a training step. Accuracy: a few float ulps, checked against libm
 * over a wide range in test_ops.c. The double build keeps libm, since its
 * gradient checks are the strict ones. */
#ifndef BPTT_FASTMATH_H
#define BPTT_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The elementwise loops of ops/ run in BT_VECTOR_CLONES: the baseline alone
 * ran the tanh of the fused RNN step 4 floats at a time, an eighth of the
 * classic step at hidden 512. The polynomials below write their fused
 * multiply-adds as fmaf, so every clone gives the same bits (tanh and exp
 * compared over all 2^32 floats, v4 against baseline). In the v3 and v4
 * clones fmaf is one instruction, and tanh ran 1.35-1.6x faster than with
 * separate multiplies and adds. Where the baseline code runs, fmaf is a libm
 * call and the loop is scalar: tanh took 185 µs per 32 x 256 floats against
 * 27 before. That is x86-64 CPUs without AVX2 and FMA (and VMs that hide
 * them) and builds without clones. Same bits on every CPU was chosen over
 * speed there. */
#include "vector_clones.h"

/* e^x by x = k ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial (Cephes
 * coefficients), 2^k assembled in the exponent bits. Only for x in
 * [-87.34, 88.38] (no NaN): callers clamp, as bt_fast_expf does; tanh, whose
 * argument is clamped already, calls it directly (the clamps and NaN test
 * cost it a third of its time). */
static inline float bt_exp_in_range(float x)
{
    /* round(x / ln2) with the 1.5 * 2^23 trick: SSE2 has no rounding instruction */
    float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = fmaf(kf, -0.693359375f, x);
    r = fmaf(kf, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* e^x for any float: clamped to where the result is a normal float, NaN
 * handed back. */
static inline float bt_fast_expf(float x)
{
    float c = x != x ? 0.0f : x; /* NaN: compute on 0, hand the NaN back at the end */
    c = c > 88.3762626647949f ? 88.3762626647949f : c;
    c = c < -87.3365478515625f ? -87.3365478515625f : c;
    float y = bt_exp_in_range(c);
    return x != x ? x : y;
}

/* tanh: an odd polynomial near 0 (where 1 - 2/(e^2x + 1) would cancel),
 * the exponential form elsewhere, both on |x|, and x's sign put back last (a
 * bit operation, so tanh(-0) = -0). |x| is clamped at 9.5, where
 * 2/(e^19 + 1) is below half an ulp of 1: saturation gives exactly 1 (and
 * inf too) with no separate test. */
static inline float bt_fast_tanhf(float x)
{
    float ax = fabsf(x);
    float z = x * x;
    float q = fmaf(-5.70498872745e-3f, z, 2.06390887954e-2f);
    q = fmaf(q, z, -5.37397155531e-2f);
    q = fmaf(q, z, 1.33314422036e-1f);
    q = fmaf(q, z, -3.33332819422e-1f);
    float small = fmaf(q * z, ax, ax);
    float e = bt_exp_in_range(2.0f * (ax < 9.5f ? ax : 9.5f));
    float big = 1.0f - 2.0f / (e + 1.0f);
    float y = ax < 0.625f ? small : big;
    return x != x ? x : copysignf(y, x); /* NaN stays NaN: a diverged run must not look finite */
}

static inline float bt_fast_sigmoidf(float x) { return 1.0f / (1.0f + bt_fast_expf(-x)); }

#endif
