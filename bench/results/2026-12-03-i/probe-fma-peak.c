/* Throwaway probe (ninth session), not built by meson: one core's FMA peak,
 * 12 independent chains of 512-bit FMAs. gcc -O2 probe-fma-peak.c. */
#include <stdio.h>
#include <time.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
__attribute__((target("avx512f"))) int main(int argc,char**argv){__m512 a0,a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11;__m512 b=_mm512_set1_ps(argc*0.9999999f),c=_mm512_set1_ps(1e-9f);
volatile float v[12]={1,2,3,4,5,6,7,8,9,10,11,12}; a0=_mm512_set1_ps(v[0]);a1=_mm512_set1_ps(v[1]);a2=_mm512_set1_ps(v[2]);a3=_mm512_set1_ps(v[3]);a4=_mm512_set1_ps(v[4]);a5=_mm512_set1_ps(v[5]);a6=_mm512_set1_ps(v[6]);a7=_mm512_set1_ps(v[7]);a8=_mm512_set1_ps(v[8]);a9=_mm512_set1_ps(v[9]);a10=_mm512_set1_ps(v[10]);a11=_mm512_set1_ps(v[11]);
long N=100000000;double best=1e9;for(int rep=0;rep<5;rep++){double t0=now();for(long k=0;k<N;k++){
#define F(x) x=_mm512_fmadd_ps(x,b,c);
F(a0)F(a1)F(a2)F(a3)F(a4)F(a5)F(a6)F(a7)F(a8)F(a9)F(a10)F(a11)}double t=now()-t0;if(t<best)best=t;}
double fl=(double)N*12*32;printf("%.1f GFLOP/s\n",fl/best/1e9);__m512 s=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(_mm512_add_ps(a6,a7),_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)))));printf("%g\n",s[0]);}
