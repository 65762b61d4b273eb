/* activations.h: tanh and the logistic function as the ops apply them to
 * bt_real values: fastmath.h's forms in the float build, libm's in the
 * double build (whose gradient checks are the strict ones). One definition,
 * so that a fused op and the primitive ops it replaces give the same bits.
 * Internal to ops/. */
#ifndef BPTT_ACTIVATIONS_H
#define BPTT_ACTIVATIONS_H

#include <math.h>

#include "bptt.h" /* BT_REAL_DOUBLE */
#include "fastmath.h"

#if BT_REAL_DOUBLE
#define R_TANH tanh
#define R_SIGMOID(x) (1 / (1 + exp(-(x))))
#else
#define R_TANH bt_fast_tanhf
#define R_SIGMOID bt_fast_sigmoidf
#endif

#endif
