#!/bin/bash
# usage: lstm_ab.sh OLD_BUILD NEW_BUILD CELL H ROUNDS
# One epoch of `bptt train --cell CELL --hidden H` on the time machine (170,000
# letters), the two builds alternating, ROUNDS times: user CPU seconds and peak RSS.
root=$(cd "$(dirname "$0")/../../.." && pwd)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX} OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for i in $(seq "$5"); do for b in "$1" "$2"; do
  out=$(mktemp)
  t=$( { BPTT_PLUGIN_PATH=$b/plugins /usr/bin/time -f "%U %M" "$b/tools/bptt" train \
        --data "$root/data/timemachine.txt" --cell "$3" --hidden "$4" --epochs 1 --max-tokens 170000 \
        --val-fraction 0 --tokens letters --seed 3 > "$out"; } 2>&1 | tail -1)
  echo "$(basename "$b") $3 H=$4 user_s/peakKB: $t  $(tail -1 "$out")"
  rm -f "$out"
done; done
