#!/bin/sh
# test_cli_examples.sh: the plugin guide's examples (docs/example-plugin), loaded
# as a user loads them (--plugin), through the bptt binary. The MGU cell is
# gradient-checked with token and real input under every shipped policy and
# under geoseg (the build's tolerance: strict in the double build);
# geoseg:mean=2,min=2 must give the committed reference gradients of fixed:2
# (tests/fixtures, from grad_reference.c's explicit loops); try_plugin checks
# geoseg's contract and the mean and minimum of its segments, and runs signSGD;
# a short training run with the cell and the policy together must learn; bad
# options fail with the policy's own message; a failing gradcheck names the
# kink; the guide states the ABI of bptt_plugin.h.
#
# usage: test_cli_examples.sh BPTT ST_COMPARE FIXTURES MGU_SO GEOSEG_SO SIGNSGD_SO TRY_PLUGIN
#                             GUIDE_MD PLUGIN_H
set -u
BPTT=$1 COMPARE=$2 FIX=$3 MGU=$4 GEOSEG=$5 SIGNSGD=$6 TRY=$7 GUIDE=$8 HEADER=$9
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bptt-examples-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run NAME CMD...: expects exit 0; prints the output on failure.
run() {
    name=$1
    shift
    if "$@" >"$TMP/out" 2>&1; then
        echo "ok   $name"
    else
        fail "$name (exit $?)"
        cat "$TMP/out"
    fi
}

# refuse NAME STATUS PATTERN CMD...: expects exit STATUS and PATTERN (grep -E) in the output.
refuse() {
    name=$1 want=$2 pattern=$3
    shift 3
    "$@" >"$TMP/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        fail "$name: exit $got, expected $want"
        cat "$TMP/out"
    elif ! grep -Eq -- "$pattern" "$TMP/out"; then
        fail "$name: output lacks '$pattern'"
        cat "$TMP/out"
    else
        echo "ok   $name: $(head -n 1 "$TMP/out")"
    fi
}

# ---- listed and described -----------------------------------------------------------
run "plugins --plugin mgu --plugin geoseg" "$BPTT" plugins --plugin "$MGU" --plugin "$GEOSEG"
grep -Eq "^cell +mgu +mgu +0\.1\.0" "$TMP/out" || fail "plugins: cell mgu not listed"
grep -Eq "^cell +mgu_real +mgu +0\.1\.0" "$TMP/out" || fail "plugins: cell mgu_real not listed"
grep -Eq "^policy +geoseg +geoseg +0\.1\.0" "$TMP/out" || fail "plugins: policy geoseg not listed"
run "describe mgu" "$BPTT" plugins --plugin "$MGU" --describe mgu
grep -q "c_t = tanh(x_t W_xc + (f_t \* h_{t-1}) W_hc + b_c)" "$TMP/out" ||
    fail "describe mgu: no candidate equation"
run "describe geoseg" "$BPTT" plugins --plugin "$GEOSEG" --describe geoseg
grep -q "p = 1/(M - N + 1)" "$TMP/out" || fail "describe geoseg: no segment law"

# ---- the cell's gradients, token input, under every policy ----------------------------
for policy in full fixed:2 tbptt:2,4 random:0.5,seed=2 geoseg:mean=3,min=1 geoseg:mean=3,min=2,seed=7; do
    run "gradcheck mgu $policy" "$BPTT" gradcheck --plugin "$MGU" --plugin "$GEOSEG" --cell mgu \
        --truncation "$policy" --steps 10
    grep -q "^PASS" "$TMP/out" || fail "gradcheck mgu $policy: no PASS line"
    case $policy in
    geoseg*) grep "^xi used:" "$TMP/out" | grep -q " 0" ||
        fail "gradcheck mgu $policy: no cut in 10 steps: $(grep '^xi used' "$TMP/out")" ;;
    esac
done
# ---- real input: the same step fed rows x_t [B,D], with squared error -----------------------
for policy in full fixed:3 geoseg:mean=2,min=1; do
    run "gradcheck mgu_real $policy" "$BPTT" gradcheck --plugin "$MGU" --plugin "$GEOSEG" \
        --cell mgu_real --vocab 3 --output 2 --truncation "$policy" --steps 8
    grep -q "^PASS" "$TMP/out" || fail "gradcheck mgu_real $policy: no PASS line"
done
# A shipped cell under the user's policy.
run "gradcheck lstm geoseg" "$BPTT" gradcheck --plugin "$GEOSEG" --cell lstm \
    --truncation geoseg:mean=3,min=2 --steps 9
grep -q "^PASS" "$TMP/out" || fail "gradcheck lstm geoseg: no PASS line"

# ---- geoseg:mean=N,min=N is fixed:N: the committed reference of fixed:2 ----------------------
if "$BPTT" grad --cell rnn_tanh --params "$FIX/rnn_tanh_params.safetensors" --plugin "$GEOSEG" \
    --truncation geoseg:mean=2,min=2 --out "$TMP/g.safetensors" >"$TMP/out" 2>&1 &&
    "$COMPARE" "$TMP/g.safetensors" "$FIX/rnn_tanh_fixed2.expected.safetensors" >"$TMP/cmp" 2>&1; then
    echo "ok   grad geoseg:mean=2,min=2 = fixed:2 reference: $(tail -n 1 "$TMP/cmp")"
else
    fail "grad geoseg:mean=2,min=2 differs from the fixed:2 reference"
    cat "$TMP/out" "$TMP/cmp"
fi

# ---- try_plugin: geoseg's contract and its segment lengths; signSGD -------------------------
# Segments: 2 + Geometric(p = 1/5) steps, mean 6, standard deviation sqrt(20);
# over ~16,700 segments the mean's standard error is 0.035: 0.2 is 5.7 of them.
run "try_plugin geoseg:mean=6,min=2" "$TRY" "$GEOSEG" geoseg:mean=6,min=2
line=$(grep "steps between updates" "$TMP/out")
echo "$line" | awk '{ for (i = 1; i < NF; i++) { if ($i == "mean") m = $(i + 1); if ($i == "shortest") s = $(i + 1) } }
    END { m += 0; s += 0; exit !(m > 5.8 && m < 6.2 && s == 2) }' ||
    fail "geoseg:mean=6,min=2: want mean 6 +- 0.2 and shortest 2: $line"
echo "$line" | grep -q "0 not right after an update" || fail "geoseg cuts where it does not update: $line"
run "try_plugin geoseg:mean=4,min=4" "$TRY" "$GEOSEG" geoseg:mean=4,min=4
grep -q "mean 4.0000, shortest 4, longest 4" "$TMP/out" ||
    fail "geoseg:mean=4,min=4 is not fixed:4: $(grep 'between' "$TMP/out")"
run "try_plugin signsgd" "$TRY" "$SIGNSGD" signsgd:lr=0.01,mu=0.9

# ---- the cell and the policy together: a short training run learns the text -----------------
i=0
: >"$TMP/text.txt"
while [ $i -lt 40 ]; do
    echo "the time traveller smiled at us. the fire burned brightly." >>"$TMP/text.txt"
    i=$((i + 1))
done
run "train mgu under geoseg" "$BPTT" train --plugin "$MGU" --plugin "$GEOSEG" --cell mgu \
    --truncation geoseg:mean=6,min=2 --data "$TMP/text.txt" --hidden 16 --batch 4 --steps 16 \
    --optimizer adam:lr=0.02 --epochs 3 --seed 1 --metrics "$TMP/m.csv"
grep -q "truncation geoseg:mean=6,min=2" "$TMP/out" || fail "train: the log does not name the policy"
# The text's unigram perplexity is 15.4; a model that learns the sentences falls far below.
awk -F, 'NR == 2 { first = $2 } NR == 4 { last = $2 } END { exit !(last < 3 && last < first / 2) }' \
    "$TMP/m.csv" || fail "train mgu under geoseg did not learn: $(cat "$TMP/m.csv")"

# ---- the guide's ABI is the header's -------------------------------------------------------
major=$(sed -n 's/^#define BT_ABI_MAJOR \([0-9][0-9]*\).*/\1/p' "$HEADER")
minor=$(sed -n 's/^#define BT_ABI_MINOR \([0-9][0-9]*\).*/\1/p' "$HEADER")
if [ -n "$major" ] && [ -n "$minor" ] && grep -q "describes plugin ABI \*\*$major\.$minor\*\*" "$GUIDE" &&
    grep -q "{ ABI $major\.$minor," "$GUIDE"; then
    echo "ok   writing-a-plugin.md describes ABI $major.$minor, as bptt_plugin.h"
else
    fail "writing-a-plugin.md does not state ABI '$major.$minor' of bptt_plugin.h"
fi

# ---- errors name the problem ----------------------------------------------------------------
refuse "geoseg mean < min" 2 "policy geoseg: mean \(1\) must be >= min \(2\)" \
    "$BPTT" gradcheck --plugin "$GEOSEG" --cell rnn_tanh --truncation geoseg:mean=1,min=2
refuse "geoseg without mean" 2 "policy geoseg: .*mean" \
    "$BPTT" gradcheck --plugin "$GEOSEG" --cell rnn_tanh --truncation geoseg:min=2
refuse "geoseg unknown option" 2 "unknown option 'men'" \
    "$BPTT" gradcheck --plugin "$GEOSEG" --cell rnn_tanh --truncation geoseg:men=3
refuse "mgu without --plugin" 2 "unknown cell 'mgu'" "$BPTT" gradcheck --cell mgu
refuse "a failing gradcheck names kinks" 1 "ReLU or another kink.*try a smaller --eps" \
    "$BPTT" gradcheck --plugin "$MGU" --cell mgu --tolerance 0

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all example plugin checks passed"
