/* Throwaway probe (ninth session): tanh(|x|) = m / (m + 2) written as
 * 1 / (1 + 2 / m), m = e^(2|x|) - 1 = 2^k (e^r - 1) + 2^k - 1 with no
 * cancellation (bt_exp_in_range's reduction and polynomial). The first
 * form, m / (m + 2), was not monotone (probe-tanh-monotone.c). */
static inline float new_tanhf(float x)
{
    float ax = fabsf(x);
    float y = 2.0f * (ax < 9.5f ? ax : 9.5f);
    float kf = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = fmaf(kf, -0.693359375f, y);
    r = fmaf(kf, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r); /* e^r - 1 */
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float m = fmaf(scale, p, scale - 1.0f); /* e^y - 1 = 2^k (e^r - 1) + 2^k - 1 */
    float t = 1.0f / (1.0f + 2.0f / m);
    return x != x ? x : copysignf(t, x);
}
