/* Throwaway probe (ninth session), not built by meson: time tanh_rows' loop
 * (8,192 values) with bt_fast_tanhf, the expm1 form (probe-tanh-expm1.h),
 * and parts of it. nodiv_tanh replaces the division by a product to see
 * what the division costs: its values mean nothing. Built with
 * gcc -std=gnu11 -O3 -fno-trapping-math -ffp-contract=off -Iops -Iframework
 * probe-tanh-variants.c -lm (from the repository root, this folder on -I). */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include "fastmath.h"
#include "probe-tanh-expm1.h"
typedef float bt_real;
static inline float nodiv_tanh(float x){
    float ax = fabsf(x);
    float z = x * x;
    float q = fmaf(-5.70498872745e-3f, z, 2.06390887954e-2f);
    q = fmaf(q, z, -5.37397155531e-2f);
    q = fmaf(q, z, 1.33314422036e-1f);
    q = fmaf(q, z, -3.33332819422e-1f);
    float small = fmaf(q * z, ax, ax);
    float e = bt_exp_in_range(2.0f * (ax < 9.5f ? ax : 9.5f));
    float big = 1.0f - 2.0f * (e + 1.0f);
    float y = ax < 0.625f ? small : big;
    return x != x ? x : copysignf(y, x);
}
static inline float onlyexp(float x){
    float ax = fabsf(x);
    float e = bt_exp_in_range(2.0f * (ax < 9.5f ? ax : 9.5f));
    return 1.0f - 2.0f / (e + 1.0f);
}
#define MK(name,F) __attribute__((noinline,target("arch=x86-64-v4"))) static void name(bt_real *o, const bt_real *wx, const int32_t *ids, const bt_real *b, int B, int H){ for (int r = 0; r < B; r++) { bt_real *row = o + (size_t)r * H; const bt_real *x = wx + (size_t)ids[r] * H; for (int j = 0; j < H; j++) row[j] = F(row[j] + x[j] + b[j]); } }
static inline float ident(float x){return x*0.5f;}
MK(t_full,bt_fast_tanhf) MK(t_new,new_tanhf) MK(t_nodiv,nodiv_tanh) MK(t_exp,onlyexp) MK(t_id,ident)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
typedef void (*fn)(bt_real*,const bt_real*,const int32_t*,const bt_real*,int,int);
int main(){int B=32,H=256;float*o=aligned_alloc(64,4*B*H),*wx=aligned_alloc(64,4*64*H),*b=aligned_alloc(64,4*H);int32_t ids[32];
for(int i=0;i<64*H;i++)wx[i]=(rand()/(float)RAND_MAX-0.5f)*0.2f;for(int i=0;i<H;i++)b[i]=0.01f;for(int r=0;r<B;r++)ids[r]=rand()%64;
fn f[5]={t_full,t_new,t_nodiv,t_exp,t_id};const char*nm[5]={"bt_fast_tanhf","expm1 form","nodiv (timing only)","exp+div","add only"};
for(int v=0;v<5;v++){double best=1e9;for(int rep=0;rep<20;rep++){for(int i=0;i<B*H;i++)o[i]=(rand()/(float)RAND_MAX-0.5f)*4;double t0=now();for(int k=0;k<1000;k++){f[v](o,wx,ids,b,B,H);}double t=(now()-t0)/1000;if(t<best)best=t;}
printf("%s %.3f us\n",nm[v],best*1e6);}}
