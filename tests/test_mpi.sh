#!/bin/sh
# test_mpi.sh: data-parallel `bptt train` under mpirun (issue 14), with the
# built binary.
#  - 2 and 4 processes end a 3-epoch run at the checkpoint 1 process writes
#    (parameters, Adam's state, carried state: relative difference <= 1e-12 in
#    double precision; 1e-3 in float, where Adam amplifies the rounding of
#    sums taken in another order), for rnn_tanh and lstm under full,
#    fixed:K, random:PI,seed=S and tbptt:K1,K2 (sequential sampling), with
#    validation rows that do not split evenly;
#  - 2 processes x 3 threads and 4 x 2 (train --threads) end there too;
#  - a resume under mpirun is bitwise the uninterrupted run with the same
#    number of processes, and continues correctly with another number;
#  - a process that fails (bad option, unreadable data, NaN loss or a cell
#    error in its rows, parameters that drift apart) ends the whole job with
#    one message and one exit status within a few seconds; one that is killed
#    ends it too, with mpirun's notice naming it.
# Usage: test_mpi.sh BPTT FAULT_PLUGIN MPI_COMPARE_PY TEXT [--quick|--full] [--required]
# --quick (the float and sanitizer builds; the double build checks the
# equality to 1e-12 under every policy) runs two policies per cell, not four. Exit 77 (skipped) without mpirun
# or numpy, unless --required (a build configured with -Dmpi=enabled, as CI's
# double build is): then their absence fails.
set -u
BPTT=${1:?usage: test_mpi.sh BPTT FAULT_PLUGIN MPI_COMPARE_PY TEXT}
PLUGIN=${2:?}
COMPARE=${3:?}
TEXT=${4:?}
QUICK=${5:-}
REQUIRED=${6:-}
skip() {
    if [ "$REQUIRED" = --required ]; then
        echo "FAIL: $1, but the build was configured with -Dmpi=enabled"
        exit 1
    fi
    echo "$1: skipped"
    exit 77
}
command -v mpirun >/dev/null 2>&1 || skip "no mpirun"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" -c "import numpy" 2>/dev/null || skip "no numpy"
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $PLUGIN in /*) ;; *) PLUGIN=$(pwd)/$PLUGIN ;; esac
DIR=$(mktemp -d /tmp/bptt-mpi-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1

# Local runs only: no ssh needed (a container may have none), and no
# cross-memory attach (containers often forbid ptrace, which it uses).
export OMPI_MCA_plm_rsh_agent=
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# One BLAS thread per process on a small shared machine.
export OPENBLAS_NUM_THREADS=1
# Open MPI does not free everything at MPI_Finalize: under AddressSanitizer
# its processes run without the leak check (one-process runs keep it).
MPIRUN_LOUD="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && MPIRUN_LOUD="$MPIRUN_LOUD --allow-run-as-root"
# -q: without mpirun's own notices (a killed process needs them: below).
MPIRUN="$MPIRUN_LOUD -q"

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if "$BPTT" --version | grep -q double; then RTOL=1e-12; else RTOL=1e-3; fi
echo "tolerance: relative difference <= $RTOL"

# 3000 tokens, batch 12 x 12 steps; 66 held-out tokens make 5 validation rows,
# which 2 and 4 processes split unevenly.
COMMON="--data $TEXT --max-tokens 3000 --val-fraction 0.022 --hidden 12 --batch 12 --steps 12
        --optimizer adam:lr=0.01 --epochs 3 --quiet"

# train N OUT ARGS...: a run on N processes (1: without mpirun), saving OUT.
train() {
    n=$1 out=$2
    shift 2
    if [ "$n" = 1 ]; then
        "$BPTT" train $COMMON --save "$out" "$@" >"$out.log" 2>&1
    else
        $MPIRUN -np "$n" "$BPTT" train $COMMON --save "$out" "$@" >"$out.log" 2>&1
    fi
    rc=$?
    [ $rc = 0 ] || { fail "$out: exit status $rc"; sed 's/^/    /' "$out.log" | head -20; }
    return $rc
}

# same NAME ACTUAL EXPECTED: equal within RTOL (the history without its timings).
same() {
    if "$PY" "$COMPARE" "$2" "$3" --rtol "$RTOL" >cmp.txt 2>&1; then
        echo "ok: $1: $(cat cmp.txt)"
    else
        fail "$1"
        sed 's/^/    /' cmp.txt
    fi
}

# ---- 1, 2 and 4 processes reach the same model ----
POLICIES="full fixed:4 random:0.3,seed=5 tbptt:3,6"
[ "$QUICK" = --quick ] && POLICIES="random:0.3,seed=5 tbptt:3,6"
for cell in rnn_tanh lstm; do
    for pol in $POLICIES; do
        tag=$cell-$(echo "$pol" | tr ':,=' '___')
        train 1 "$tag-1.st" --cell "$cell" --truncation "$pol" || continue
        for n in 2 4; do
            train "$n" "$tag-$n.st" --cell "$cell" --truncation "$pol" &&
                same "$cell $pol: $n processes vs 1" "$tag-$n.st" "$tag-1.st"
        done
    done
done
# Checkpointed windows and random sampling, on 2 processes.
train 1 ck-1.st --cell lstm --truncation full --checkpoint 3 &&
    train 2 ck-2.st --cell lstm --truncation full --checkpoint 3 &&
    same "lstm full --checkpoint 3: 2 processes vs 1" ck-2.st ck-1.st
train 1 rs-1.st --sampling random &&
    train 2 rs-2.st --sampling random &&
    same "random sampling: 2 processes vs 1" rs-2.st rs-1.st
# Each process's rows split further over threads (train --threads): 2
# processes x 3 threads (6 rows each, 2 per thread) and 4 x 2.
train 2 thr-2x3.st --cell lstm --truncation tbptt:3,6 --threads 3 &&
    same "lstm tbptt:3,6: 2 processes x 3 threads vs 1" thr-2x3.st lstm-tbptt_3_6-1.st
train 4 thr-4x2.st --cell rnn_tanh --truncation tbptt:3,6 --threads 2 &&
    same "rnn_tanh tbptt:3,6: 4 processes x 2 threads vs 1" thr-4x2.st rnn_tanh-tbptt_3_6-1.st
grep -q "data parallel: 4 processes" rnn_tanh-tbptt_3_6-4.st.log ||
    fail "a 4-process run does not say it is data-parallel"
grep -q "all-reduce: .* updates" rnn_tanh-tbptt_3_6-4.st.log ||
    fail "a 4-process run does not report its all-reduces"

# ---- resume: bitwise on the same N, and onto another N ----
P="--cell rnn_tanh --truncation tbptt:3,6"
if train 2 r2.st $P --epochs 2; then
    $MPIRUN -np 2 "$BPTT" train --resume r2.st --epochs 3 --save r3.st --quiet >r3.log 2>&1 ||
        fail "resume on 2 processes: exit status $?"
    if "$PY" "$COMPARE" r3.st rnn_tanh-tbptt_3_6-2.st --bitwise >cmp.txt; then
        echo "ok: 2 + 1 epochs on 2 processes are the 3-epoch run bit for bit: $(cat cmp.txt)"
    else
        fail "resume on 2 processes differs from the uninterrupted run"
        cat cmp.txt
    fi
    $MPIRUN -np 4 "$BPTT" train --resume r2.st --epochs 3 --save r3n4.st --quiet >r3n4.log 2>&1 ||
        fail "resume on 4 processes: exit status $?"
    same "2 epochs on 2 processes + 1 on 4 vs 3 on 1" r3n4.st rnn_tanh-tbptt_3_6-1.st
fi
if train 1 s2.st $P --epochs 2; then
    $MPIRUN -np 4 "$BPTT" train --resume s2.st --epochs 3 --save s3.st --quiet >s3.log 2>&1 ||
        fail "resume of a 1-process checkpoint on 4 processes: exit status $?"
    same "2 epochs on 1 process + 1 on 4 vs 3 on 1" s3.st rnn_tanh-tbptt_3_6-1.st
fi

# ---- faults: one message, one exit status, no hang ----
# A text whose rarest character, '~' (so the last token of the vocabulary),
# sits once at three quarters: with 2 rows it is in the rows of process 1.
i=0
: >fault.txt
while [ $i -lt 30 ]; do
    [ $i = 22 ] && printf '~' >>fault.txt
    printf 'the time traveller sat by the fire. the doctor read the paper.\n' >>fault.txt
    i=$((i + 1))
done
FAULT="--data fault.txt --hidden 8 --batch 2 --steps 10 --epochs 2 --val-fraction 0"

# A failing job must end within a few seconds: LIMIT (the sanitizer build's
# processes start and run several times slower); 60 s means a hang.
LIMIT=10
[ "$QUICK" = --quick ] && LIMIT=30

# fault NAME STATUS PATTERN MESSAGES -- COMMAND...: exit status STATUS within
# LIMIT seconds, output with PATTERN, exactly MESSAGES lines from bptt.
fault() {
    name=$1 want=$2 pattern=$3 lines=$4
    shift 5
    t0=$(date +%s)
    timeout 60 "$@" >out.txt 2>&1
    got=$? t1=$(date +%s)
    n=$(grep -c '^bptt' out.txt)
    if [ "$got" = 124 ]; then
        fail "$name: still running after 60 s (a hang)"
    elif [ $((t1 - t0)) -gt $LIMIT ]; then
        fail "$name: ended after $((t1 - t0)) s, more than $LIMIT s"
    elif [ "$got" != "$want" ]; then
        fail "$name: exit status $got, expected $want"
        sed 's/^/    /' out.txt | head -20
    elif ! grep -q -e "$pattern" out.txt; then
        fail "$name: output lacks '$pattern'"
        sed 's/^/    /' out.txt | head -20
    elif [ "$n" != "$lines" ]; then
        fail "$name: $n messages from bptt, expected $lines"
        sed 's/^/    /' out.txt | head -20
    else
        echo "ok: $name (status $got after $((t1 - t0)) s): $(grep -m1 -e "$pattern" out.txt)"
    fi
}

fault "bad option on every process" 2 "--hidden x" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --hidden x
fault "bad option on process 1 only" 2 "--hidden x" 1 -- \
    $MPIRUN -np 1 "$BPTT" train $FAULT : -np 1 "$BPTT" train $FAULT --hidden x
fault "process 1 cannot read its data" 1 "cannot open 'missing.txt'" 1 -- \
    $MPIRUN -np 1 "$BPTT" train $FAULT : -np 1 "$BPTT" train $FAULT --data missing.txt
fault "4 processes for a batch of 6" 2 "run with a number of processes that divides the batch (1, 2, 3, 6)" 1 -- \
    $MPIRUN -np 4 "$BPTT" train $FAULT --batch 6
fault "dropout under mpirun" 2 "--dropout 0.5 trains on one process" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --layers 2 --dropout 0.5
fault "an online estimator under mpirun" 2 "--estimator uoro trains on one process" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --estimator uoro
fault "NaN loss in the rows of process 1" 3 "the loss became NaN" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --cell fault_nan --plugin "$PLUGIN"
fault "the same NaN on one process" 3 "the loss became NaN" 1 -- \
    "$BPTT" train $FAULT --cell fault_nan --plugin "$PLUGIN"
fault "cell error in the rows of process 1" 1 "fault_fail: row 0 reads token" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --cell fault_fail --plugin "$PLUGIN"
# A process that dies without a word (killed like the out-of-memory killer
# does): mpirun ends the others at once and names it; no message from bptt.
fault "process 1 killed" 137 "rank 1 .* exited on signal 9" 0 -- \
    $MPIRUN_LOUD -np 2 "$BPTT" train $FAULT --cell fault_kill --plugin "$PLUGIN"
sed 's/doctor/dactor/' fault.txt >other.txt
fault "process 1 reads another text" 1 "process 1 does not take the update process 0 takes" 1 -- \
    $MPIRUN -np 1 "$BPTT" train $FAULT : -np 1 "$BPTT" train $FAULT --data other.txt
sed 's/doctor/doctor!/' fault.txt >bigger.txt
fault "process 1 has another vocabulary (model size)" 1 "before epoch 1, the model, optimizer state or progress differ" 1 -- \
    $MPIRUN -np 1 "$BPTT" train $FAULT : -np 1 "$BPTT" train $FAULT --data bigger.txt
fault "parameters drift apart" 1 "differ between processes: process 1" 1 -- \
    $MPIRUN -np 2 "$BPTT" train $FAULT --optimizer fault_skew --plugin "$PLUGIN"
fault "the same optimizer agrees on one process" 0 "done: epoch 2" 0 -- \
    "$BPTT" train $FAULT --optimizer fault_skew --plugin "$PLUGIN"
fault "generate under mpirun" 2 "only bptt train trains data-parallel" 1 -- \
    $MPIRUN -np 2 "$BPTT" generate --model x.st

[ $failures = 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all passed"
