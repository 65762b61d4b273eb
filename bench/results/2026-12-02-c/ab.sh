#!/bin/bash
# ab.sh OLD_BUILD NEW_BUILD HIDDEN STEPS PAIRS [extra]
export OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
A=$1; B=$2; H=$3; S=$4; P=$5; shift 5
for i in $(seq $P); do
  for b in $A $B; do BPTT_PLUGIN_PATH=$b/plugins $b/bench/bench step --hidden $H --steps $S --warmup 5 "$@" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['tokens_per_cpu_s'])"; done | paste -sd' '
done | python3 -c "
import sys,statistics
r=[tuple(map(float,l.split())) for l in sys.stdin]
q=[b/a for a,b in r]
print('H=$H old med %.0f new med %.0f  new/old median %.3f  (min %.3f max %.3f) n=%d' % (statistics.median(a for a,b in r), statistics.median(b for a,b in r), statistics.median(q), min(q), max(q), len(q)))
"
