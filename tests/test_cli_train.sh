#!/bin/sh
# test_cli_train.sh: `bptt train`, `generate` and `compare` end to end with the
# built binary, on a small text this script writes and on generated tasks
# (--task): outputs, resume, and the exit status and message of each kind of
# bad input.
# Usage: test_cli_train.sh PATH/TO/bptt PATH/TO/st_compare   (BPTT_PLUGIN_PATH set by meson)
set -u
BPTT=${1:?usage: test_cli_train.sh PATH/TO/bptt PATH/TO/st_compare}
ST_COMPARE=${2:?usage: test_cli_train.sh PATH/TO/bptt PATH/TO/st_compare}
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
DIR=$(mktemp -d /tmp/bptt-cli-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run NAME EXPECTED_STATUS [PATTERN] -- COMMAND...: status must match; stdout+stderr must contain PATTERN.
run() {
    name=$1 want=$2 pattern=$3
    shift 4
    "$@" >"$DIR/out.txt" 2>&1
    got=$?
    if [ "$got" != "$want" ]; then
        fail "$name: exit status $got, expected $want"
        sed 's/^/    /' "$DIR/out.txt" | head -20
    elif [ -n "$pattern" ] && ! grep -q -e "$pattern" "$DIR/out.txt"; then
        fail "$name: output lacks '$pattern'"
        sed 's/^/    /' "$DIR/out.txt" | head -20
    else
        echo "ok: $name"
    fi
}

i=0
: >text.txt
while [ $i -lt 60 ]; do
    printf 'the time traveller sat by the fire. the doctor read the paper.\n' >>text.txt
    i=$((i + 1))
done
SMALL="--data text.txt --hidden 16 --batch 4 --steps 8 --optimizer adam:lr=0.02 --seed 3"

# ---- a run with every output ----
run "train writes checkpoint, metrics and plot" 0 "sample (greedy): the time" -- \
    "$BPTT" train $SMALL --epochs 3 --val-fraction 0.1 --save m.safetensors --metrics m.csv --plot m.svg
[ -s m.safetensors ] || fail "no checkpoint written"
[ "$(head -1 m.csv)" = "epoch,train_ppl,val_ppl,tokens_per_s,grad_norm_mean,grad_norm_max,skipped,seconds,train_loss,val_loss" ] ||
    fail "metrics header: $(head -1 m.csv)"
[ "$(wc -l <m.csv)" -eq 4 ] || fail "metrics should have 3 epoch rows: $(cat m.csv)"
grep -q "<svg" m.svg || fail "plot is not an SVG"
grep -q "epoch 3/3" out.txt || fail "no per-epoch line when stderr is not a terminal"
grep -q "val ppl" out.txt || fail "no validation perplexity"
ls ./*.tmp.* >/dev/null 2>&1 && fail "temporary files left behind"

run "generate greedy" 0 "^the time" -- "$BPTT" generate --model m.safetensors --prefix "the time" --length 30
g1=$(cat out.txt)
run "generate greedy again" 0 "" -- "$BPTT" generate --model m.safetensors --prefix "the time" --length 30
[ "$g1" = "$(cat out.txt)" ] || fail "greedy generation is not deterministic"
run "generate sampled" 0 "^the" -- "$BPTT" generate --model m.safetensors --prefix "the" --temperature 0.8 --seed 4
run "generate: unknown character" 1 "Z" -- "$BPTT" generate --model m.safetensors --prefix "the Zebra"
run "generate: no model" 2 "--model" -- "$BPTT" generate --prefix "the"
run "generate: missing model file" 1 "nope.safetensors" -- "$BPTT" generate --model nope.safetensors
head -c 300 m.safetensors >cut.safetensors
run "generate: truncated checkpoint" 1 "cut.safetensors" -- "$BPTT" generate --model cut.safetensors
run "generate: not a checkpoint" 1 "text.txt" -- "$BPTT" generate --model text.txt

# ---- resume continues the same run: 2 + 2 epochs give the model 4 epochs give ----
run "train 2 epochs" 0 "" -- "$BPTT" train $SMALL --epochs 2 --save a.safetensors
run "resume to epoch 4" 0 "from epoch 2" -- "$BPTT" train --resume a.safetensors --epochs 4 --save b.safetensors
grep -q "epoch 3/4" out.txt || fail "resume did not continue at epoch 3"
run "train 4 epochs" 0 "" -- "$BPTT" train $SMALL --epochs 4 --save c.safetensors
run "generate from resumed" 0 "" -- "$BPTT" generate --model b.safetensors --prefix the --temperature 1 --seed 9 --length 80
r1=$(cat out.txt)
run "generate from straight run" 0 "" -- "$BPTT" generate --model c.safetensors --prefix the --temperature 1 --seed 9 --length 80
[ "$r1" = "$(cat out.txt)" ] || fail "2+2 epochs and 4 epochs give different models"
run "resume: conflicting --hidden" 1 "--hidden 32 conflicts with the checkpoint's hidden 16" -- \
    "$BPTT" train --resume a.safetensors --hidden 32 --epochs 3
run "resume: conflicting --optimizer" 1 "optimizer" -- \
    "$BPTT" train --resume a.safetensors --optimizer sgd:lr=1 --epochs 3
run "resume: same settings restated" 0 "" -- \
    "$BPTT" train --resume a.safetensors --hidden 16 --optimizer adam:lr=0.02 --epochs 3
run "resume: already there" 0 "nothing to train" -- "$BPTT" train --resume b.safetensors --epochs 4

# ---- compare ----
run "compare two policies" 0 "fixed:4" -- "$BPTT" compare $SMALL --epochs 2 --val-fraction 0.1 \
    --truncation full,fixed:4,tbptt:2,4 --plot cmp.svg
grep -q "tbptt:2,4" out.txt || fail "compare table lacks tbptt:2,4"
grep -q "memory" out.txt || fail "compare table lacks the memory column"
grep -q "<svg" cmp.svg || fail "compare plot is not an SVG"
run "compare: unknown policy" 2 "known:" -- "$BPTT" compare $SMALL --truncation full,bogus:3

# ---- bad input: clear message, non-zero status ----
run "missing data file" 1 "nosuch.txt" -- "$BPTT" train --data nosuch.txt --epochs 1
: >empty.txt
run "empty data file" 1 "empty" -- "$BPTT" train --data empty.txt --epochs 1
printf '\000\001\002\003binary\000\000\377' >bin.dat
run "binary data file" 1 "bin.dat" -- "$BPTT" train --data bin.dat --epochs 1
run "no --data" 2 "--data" -- "$BPTT" train --epochs 1
run "bad optimizer option" 1 "lr" -- "$BPTT" train $SMALL --optimizer sgd:lr=abc --epochs 1
run "unknown optimizer option" 1 "momentum" -- "$BPTT" train $SMALL --optimizer sgd:momentum=1 --epochs 1
run "unknown optimizer" 1 "known" -- "$BPTT" train $SMALL --optimizer rmsprop --epochs 1
run "unknown cell" 1 "rnn_tanh" -- "$BPTT" train $SMALL --cell transformer --epochs 1
run "unknown policy" 1 "tbptt" -- "$BPTT" train $SMALL --truncation bogus --epochs 1
run "bad policy option" 1 "tbptt" -- "$BPTT" train $SMALL --truncation tbptt:5,2 --epochs 1
run "bad --hidden" 2 "--hidden" -- "$BPTT" train $SMALL --hidden -3 --epochs 1
run "bad --tokens" 2 "letters" -- "$BPTT" train $SMALL --tokens words --epochs 1
run "bad --init" 2 "init" -- "$BPTT" train $SMALL --init gaussian --epochs 1
run "batch too large" 1 "--batch" -- "$BPTT" train $SMALL --batch 5000 --epochs 1
run "unknown option" 2 "--frobnicate" -- "$BPTT" train $SMALL --frobnicate
run "unwritable --save, before training" 1 "no/such/dir" -- \
    "$BPTT" train $SMALL --epochs 1 --save no/such/dir/m.safetensors
grep -q "epoch 1/1" out.txt && fail "training started although --save cannot be written"
run "--save onto a folder" 1 "folder" -- "$BPTT" train $SMALL --epochs 1 --save "$DIR"
run "resume: truncated checkpoint" 1 "cut.safetensors" -- "$BPTT" train --resume cut.safetensors
run "letters tokens" 0 "sample" -- "$BPTT" train $SMALL --tokens letters --epochs 1 --quiet

# ---- generated tasks (--task): loss instead of perplexity, no sample, task checkpoints ----
ADD="--task adding:20 --cell linear --hidden 8 --batch 4 --optimizer adam:lr=0.01 --seed 5"
run "train --task adding:20" 0 "done: epoch 3, train loss" -- \
    "$BPTT" train $ADD --epochs 3 --metrics t.csv --plot t.svg --save t.safetensors
[ "$(head -1 t.csv)" = "epoch,train_loss,val_loss,tokens_per_s,grad_norm_mean,grad_norm_max,skipped,seconds" ] ||
    fail "task metrics header: $(head -1 t.csv)"
[ "$(wc -l <t.csv)" -eq 4 ] || fail "task metrics should have 3 epoch rows: $(cat t.csv)"
awk -F, 'NR > 1 && ($2 == "" || $3 == "") { bad = 1 } END { exit bad }' t.csv ||
    fail "task metrics lack train or validation loss: $(cat t.csv)"
grep -q "ppl\|perplexity\|sample" out.txt && fail "real-valued task printed a perplexity or a sample"
grep -q "val loss" out.txt || fail "no validation loss for the adding task"
grep -q ">loss<" t.svg || fail "task plot's axis is not labelled loss"
grep -q "perplexity" t.svg && fail "task plot mentions perplexity"
run "train --task copy:5,3" 0 "train ppl" -- "$BPTT" train --task copy:5,3 --cell gru --hidden 8 \
    --batch 4 --optimizer adam:lr=0.01 --epochs 2
grep -q "sample" out.txt && fail "a task run printed a text sample"
run "generate refuses a task model" 1 "trained on task adding:20, not a text" -- \
    "$BPTT" generate --model t.safetensors
run "analyze a task model" 0 "adding:20 data" -- "$BPTT" analyze --model t.safetensors --lags 5
run "analyze a text model" 0 "cell rnn_tanh" -- "$BPTT" analyze --model m.safetensors --lags 5
# resume: 2 + 2 epochs on the re-created task give what 4 epochs give
run "task: train 2 epochs" 0 "" -- "$BPTT" train $ADD --epochs 2 --save t2.safetensors
run "task: resume to epoch 4" 0 "on task adding:20" -- \
    "$BPTT" train --resume t2.safetensors --epochs 4 --save t4.safetensors
grep -q "epoch 3/4" out.txt || fail "task resume did not continue at epoch 3"
resumed=$(grep "^done:" out.txt | sed 's/, saved.*//')
run "task: train 4 epochs" 0 "" -- "$BPTT" train $ADD --epochs 4
[ "$resumed" = "$(grep "^done:" out.txt)" ] ||
    fail "task: 2+2 epochs ($resumed) and 4 epochs ($(grep "^done:" out.txt)) differ"
run "task resume: other task" 1 "trained on task adding:20" -- \
    "$BPTT" train --resume t2.safetensors --task adding:30 --epochs 3
run "task resume: --data" 1 "trained on task adding:20" -- \
    "$BPTT" train --resume t2.safetensors --data text.txt --epochs 3
run "text resume: --task" 1 "trained on a text" -- \
    "$BPTT" train --resume a.safetensors --task adding:20 --epochs 3
run "compare --task influence" 0 "train loss" -- "$BPTT" compare --task influence:23,10 \
    --cell influence --hidden 23 --batch 1 --optimizer sgd:lr=0.01 --clip 0 --seed 1 --epochs 1 \
    --truncation full,fixed:1,random:0.97 --plot ti.svg --metrics ti.csv
grep -q "ppl\|perplexit" out.txt ti.svg && fail "compare on a real-valued task shows perplexity"
[ "$(head -1 ti.csv)" = "policy,epoch,train_loss,val_loss,tokens_per_s,grad_norm_mean,grad_norm_max,skipped,seconds" ] ||
    fail "compare task metrics header: $(head -1 ti.csv)"
# fixed:1 walks theta away from the optimum; full and random:0.97 converge
awk -F, 'NR > 1 { l[$1] = $3 } END { exit !(l["\"fixed:1\""] > 1 && l["\"full\""] < 0.1 &&
         l["\"random:0.97\""] < 0.2) }' ti.csv || fail "influence losses out of line: $(cat ti.csv)"
run "--task and --data" 2 "not both" -- "$BPTT" train --task adding:20 --data text.txt --cell linear
run "unknown task" 1 "unknown task 'nosuch:3'" -- "$BPTT" train --task nosuch:3 --cell linear
run "bad task option" 1 "adding" -- "$BPTT" train --task adding:1 --cell linear
run "bad task option name" 1 "bogus" -- "$BPTT" train --task copy:5,3,bogus=2 --cell gru
run "task: conflicting --steps" 1 "--steps 35 conflicts with task adding:20" -- \
    "$BPTT" train $ADD --steps 35 --epochs 1
run "task: its own --steps" 0 "" -- "$BPTT" train $ADD --steps 20 --epochs 1 --quiet
run "task: text-only option" 2 "--val-fraction applies to a text" -- \
    "$BPTT" train $ADD --val-fraction 0.1 --epochs 1
run "task: token cell on real task" 1 "cells for it: .*linear" -- "$BPTT" train --task adding:20 --epochs 1
run "compare: --task and --data" 2 "not both" -- "$BPTT" compare --task adding:20 --data text.txt

# ---- exact BPTT in bounded memory (issue 7): same run, less memory ----
# The whole run must agree, not one printed figure: parameters, optimizer
# state, carried state (state.*) and RNG of the final checkpoints, for cells
# with one and two states under every policy, with the state carried.
# The two runs round differently (a checkpointed window sums each weight
# gradient per stretch), so they agree to st_compare's tolerance for the
# build's precision (float: 1e-5 + 1e-4 relative, measured 2e-7; double:
# 1e-10 + 1e-8). Momentum has a state to compare; Adam would magnify float
# rounding in near-zero gradient components into full-size steps.
LONG="--data text.txt --hidden 16 --batch 2 --steps 60 --optimizer momentum:lr=0.1,mu=0.9 --seed 5 --epochs 2"
WIDTH=1
"$BPTT" --version | grep -q "double precision" && WIDTH=2
for cell in rnn_tanh lstm; do
    # about half of a plain 60-step window of this cell: forces checkpointing
    budget=0.03; [ $cell = lstm ] && budget=0.05
    budget=$(awk "BEGIN { print $WIDTH * $budget }")
    for pol in full fixed:7 random:0.8,seed=4 tbptt:5,20; do
        run "train $cell $pol, plain" 0 "done: epoch 2" -- \
            "$BPTT" train $LONG --cell $cell --truncation $pol --save plain.st
        for mode in "--checkpoint 1" "--checkpoint 7" "--checkpoint sqrt" "--memory-budget $budget"; do
            run "train $cell $pol $mode" 0 "done: epoch 2" -- \
                "$BPTT" train $LONG --cell $cell --truncation $pol $mode --save ck.st
            "$ST_COMPARE" ck.st plain.st --skip history >cmp.txt 2>&1 ||
                { fail "$cell $pol $mode: the checkpoint differs from the plain run's"; sed 's/^/    /' cmp.txt; }
        done
    done
done
run "train: budget too small" 1 "checkpointing needs at least" -- "$BPTT" train $LONG --memory-budget 0.0001
run "train: bad --checkpoint" 2 "use 'sqrt'" -- "$BPTT" train $LONG --checkpoint often

# ---- --threads N: each minibatch's rows split over N threads ----
# The whole run must agree with one thread's (final checkpoints, as above),
# for a batch that splits unevenly (5 rows over 2 and 3 threads), plain and
# checkpointed, with an estimator's --threads left to BLAS.
THR="--data text.txt --hidden 16 --batch 5 --steps 30 --optimizer momentum:lr=0.1,mu=0.9 --seed 9 --epochs 2"
for pol in full tbptt:5,20; do
    run "train $pol, 1 thread" 0 "done: epoch 2" -- \
        "$BPTT" train $THR --cell lstm --truncation $pol --threads 1 --save one.st
    for mode in "--threads 2" "--threads 3" "--threads 2 --checkpoint sqrt"; do
        run "train $pol $mode" 0 "done: epoch 2" -- \
            "$BPTT" train $THR --cell lstm --truncation $pol $mode --save many.st
        "$ST_COMPARE" many.st one.st --skip history >cmp.txt 2>&1 ||
            { fail "$pol $mode: the checkpoint differs from one thread's"; sed 's/^/    /' cmp.txt; }
    done
done
run "train: --threads says so" 0 "split over 2 threads" -- "$BPTT" train $THR --epochs 1 --threads 2
run "train: more threads than rows" 2 "6 threads for 5 rows" -- \
    "$BPTT" train $THR --threads 6
run "train: --threads with --dropout" 2 "trains on one thread" -- \
    "$BPTT" train $THR --layers 2 --dropout 0.2 --threads 2
run "train: --threads with an estimator" 0 "done: epoch 1" -- \
    "$BPTT" train --data text.txt --hidden 8 --batch 2 --steps 10 --estimator uoro --epochs 1 --threads 2

# ---- a finite loss never prints an infinite perplexity ----
run "huge finite loss: perplexity in full" 0 "train ppl [0-9.]*e+[0-9]" -- \
    "$BPTT" train --data text.txt --hidden 8 --batch 4 --steps 8 --optimizer sgd:lr=1e5 --clip 0 \
    --init normal:3 --epochs 1 --metrics big.csv
grep -q -i "inf" out.txt big.csv && fail "an infinite perplexity was printed for a finite loss: $(grep -i inf out.txt big.csv)"

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
