/* Throwaway probe (ninth session), not built by meson: over every positive
 * float, where new_tanhf (probe-tanh-expm1.h) steps down, by the binary
 * exponent of x. With m / (m + 2) it stepped down at 772,149 floats; with
 * 1 / (1 + 2 / m), nowhere. gcc -std=gnu11 -O3 -fno-trapping-math
 * -ffp-contract=off -Iops -Iframework probe-tanh-monotone.c -lm */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "fastmath.h"
#include "probe-tanh-expm1.h"
__attribute__((target("arch=x86-64-v4"))) int main(){
  long hist[64]={0}; float prev=0; float firstx=0;
  for(uint32_t b=0;b<0x7f800000u;b++){float x;memcpy(&x,&b,4);float y=new_tanhf(x); if(y<prev){int e;frexpf(x,&e);hist[e+40>63?63:(e+40<0?0:e+40)]++; if(!firstx)firstx=x;} prev=y;}
  for(int i=0;i<64;i++)if(hist[i])printf("exp %d: %ld\n",i-40,hist[i]); printf("first %.9g\n",firstx);}
