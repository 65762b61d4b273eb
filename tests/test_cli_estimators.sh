#!/bin/sh
# test_cli_estimators.sh: online gradient estimators in `bptt train`,
# `compare` and `analyze` end to end (suite estimators): a resumed run equals
# the uninterrupted one bit for bit over the whole run (parameters, optimizer
# state, carried state, RNG and the estimator's own state), influence
# balancing converges under rtrl and uoro where fixed:1 walks away, analyze
# reports rtrl as exact and uoro as unbiased, and each bad input gets its
# message and exit status.
# Usage: test_cli_estimators.sh PATH/TO/bptt PATH/TO/st_compare   (BPTT_PLUGIN_PATH set by meson)
set -u
BPTT=${1:?usage: test_cli_estimators.sh PATH/TO/bptt PATH/TO/st_compare}
ST_COMPARE=${2:?usage: test_cli_estimators.sh PATH/TO/bptt PATH/TO/st_compare}
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
DIR=$(mktemp -d /tmp/bptt-est-XXXXXX)
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
while [ $i -lt 40 ]; do
    printf 'the time traveller sat by the fire. the doctor read the paper.\n' >>text.txt
    i=$((i + 1))
done

# ---- resume: 2 + 2 epochs are the 4-epoch run, bit for bit ----
# The text is read sequentially (state carried between minibatches, so the
# estimator's state carries too); adam and clipping have state and effect;
# updates every 3 steps do not divide the 7-step minibatches. Every tensor of
# the final checkpoints must be equal (atol = rtol = 0) but the history's
# timings: parameters, optimizer state, RNG, carried state, estimator.*.
TXT="--data text.txt --hidden 6 --batch 2 --steps 7 --optimizer adam:lr=0.01 --clip 0.5 --seed 3"
for est in rtrl uoro,seed=2; do
    for every in 1 3; do
        what="$est every $every"
        run "$what: 2 epochs" 0 "estimator $est" -- \
            "$BPTT" train $TXT --estimator $est --update-every $every --epochs 2 --save a.st
        run "$what: resumed to 4" 0 "from epoch 2" -- \
            "$BPTT" train --resume a.st --epochs 4 --save b.st
        run "$what: 4 epochs straight" 0 "done: epoch 4" -- \
            "$BPTT" train $TXT --estimator $est --update-every $every --epochs 4 --save c.st
        "$ST_COMPARE" b.st c.st --atol 0 --rtol 0 --skip history >cmp.txt 2>&1 ||
            { fail "$what: 2+2 epochs differ from 4"; sed 's/^/    /' cmp.txt; }
        grep -q "estimator\.rng" cmp.txt || fail "$what: the checkpoint holds no estimator.rng"
        # the estimator's state is the end of the run's stream, not its start
        grep -q "estimator\." cmp.txt || fail "$what: no estimator buffers compared"
    done
done
# the run is another with another estimator (st_compare must be able to fail)
run "uoro seed 5" 0 "" -- "$BPTT" train $TXT --estimator uoro,seed=5 --epochs 4 --save d.st
"$ST_COMPARE" d.st c.st --atol 0 --rtol 0 --skip history >cmp.txt 2>&1 &&
    fail "uoro seed 5 and seed 2 gave the same checkpoint"

run "resume: other estimator" 1 "--estimator rtrl conflicts with the checkpoint's estimator uoro,seed=2" -- \
    "$BPTT" train --resume a.st --estimator rtrl --epochs 3
run "resume: same estimator written with ':'" 0 "done: epoch 3" -- \
    "$BPTT" train --resume a.st --estimator uoro:seed=2 --update-every 3 --epochs 3
run "resume: other interval" 1 "--update-every 2 conflicts with the checkpoint's update-every 3" -- \
    "$BPTT" train --resume a.st --update-every 2 --epochs 3
run "resume BPTT with an estimator" 1 "conflicts with the checkpoint's estimator (none: BPTT)" -- \
    sh -c "'$BPTT' train $TXT --epochs 1 --save p.st >/dev/null && '$BPTT' train --resume p.st --estimator rtrl --epochs 2"

# ---- refusals ----
run "estimator and truncation" 2 "drop --truncation" -- \
    "$BPTT" train $TXT --estimator rtrl --truncation fixed:2
run "update-every without an estimator" 2 "applies to an online estimator" -- \
    "$BPTT" train $TXT --update-every 2
run "unknown estimator" 1 "unknown estimator 'nosuch'" -- "$BPTT" train $TXT --estimator nosuch
run "bad estimator option" 1 "unknown option 'bogus'" -- "$BPTT" train $TXT --estimator uoro,bogus=1
run "estimator with --checkpoint" 1 "takes no --checkpoint" -- \
    "$BPTT" train $TXT --estimator rtrl --checkpoint 2
run "rtrl above its limit" 1 "max_mb" -- "$BPTT" train $TXT --estimator rtrl,max_mb=0.001
run "compare: a policy in --estimator" 2 "fixed:2 is a truncation policy" -- \
    "$BPTT" compare $TXT --estimator rtrl,fixed:2
run "compare: stray word" 2 "'bogus' is not a truncation policy" -- \
    "$BPTT" compare $TXT --estimator rtrl,bogus

# ---- influence balancing (the UORO paper's task) in bptt compare ----
# s' = A s + theta (+1 x P, -1 x N-P): theta* = 1 / (2 (2P - N)). rtrl and
# uoro, updating every step, end near theta*; fixed:1 ends farther from it
# than theta's start (0) and its loss grows from epoch to epoch.
run "compare influence" 0 "theta" -- "$BPTT" compare --task influence:23,10,len=200,batches=100 \
    --cell influence --hidden 23 --batch 1 --optimizer sgd:lr=1e-3 --clip 0 --seed 1 --epochs 2 \
    --truncation fixed:1 --estimator rtrl,uoro --plot inf.svg --metrics inf.csv --quiet
cp out.txt inf.txt
awk -v N=23 -v P=10 'BEGIN { opt = 1 / (2 * (2 * P - N)) }
     $1 ~ /^(fixed|rtrl|uoro)/ && NF >= 9 { th[substr($1, 1, 4)] = $NF }
     END {
         d = opt > 0 ? opt : -opt
         ok = ("fixe" in th) && ("rtrl" in th) && ("uoro" in th)
         r = th["rtrl"] - opt; u = th["uoro"] - opt; f = th["fixe"] - opt
         if (r < 0) r = -r; if (u < 0) u = -u; if (f < 0) f = -f
         exit !(ok && r < 0.05 * d && u < 0.05 * d && f > d)
     }' inf.txt || { fail "influence: theta out of line (theta* = -1/6)"; cat inf.txt; }
# (a description may hold commas: the columns are counted from the end)
awk -F, 'NR > 1 { l[substr($1, 2, 4), $(NF - 7)] = $(NF - 6) + 0 } END {
         exit !(l["fixe", 2] > l["fixe", 1] && l["rtrl", 2] < l["rtrl", 1] &&
                l["uoro", 2] < l["uoro", 1]) }' inf.csv ||
    { fail "influence: losses out of line"; cat inf.csv; }

# ---- influence balancing in bptt demo: the sentences come from the numbers ----
run "demo" 0 "rtrl brought theta from 0 to" -- "$BPTT" demo --out demo
grep -q "uoro brought theta from 0 to" out.txt || fail "demo: uoro did not reach theta*"
grep -q "fixed:1 moved theta from 0 to .*away from theta" out.txt || fail "demo: fixed:1 did not walk away"

# ---- analyze: bias and variance against full BPTT ----
# Invariants, not figures: full and rtrl are exact (one draw: the same
# gradient twice; rtrl's bias is rounding), uoro's mean is within 4 noise
# floors of the exact gradient, fixed:K's bias shrinks as K grows, and a
# draw's cosine never exceeds 1.
run "analyze --estimator" 0 "" -- "$BPTT" analyze --cell rnn_tanh --hidden 6 --init spectral:0.9 \
    --lags 15 --truncation full,fixed:1,fixed:4,random:0.8 --estimator rtrl,uoro,seed=1 \
    --draws 400 --json --plot an.svg
cp out.txt an.json
python3 - an.json <<'PY' || fail "analyze --estimator: figures out of line: $(cat an.json)"
import json, sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][0])
m = {x["method"].split(",")[0]: x for x in j["methods"]}
tiny = 1e-4
assert m["full"]["rel_bias"] == 0 and m["full"]["draws"] == 1
assert m["rtrl"]["rel_bias"] < tiny and m["rtrl"]["draws"] == 1 and m["rtrl"]["online"]
u = m["uoro"]
assert u["draws"] == 400 and u["rel_var"] > 0 and u["rel_bias"] < 4 * u["rel_se"], u
assert m["fixed:1"]["rel_bias"] > m["fixed:4"]["rel_bias"] > 4 * m["random:0.8"]["rel_se"]
assert m["random:0.8"]["rel_bias"] < 4 * m["random:0.8"]["rel_se"]
assert all(x["cos_draw"] <= 1 + 1e-9 and x["cos_mean"] <= 1 + 1e-9 for x in j["methods"])
PY
grep -q "error of the mean of n draws" an.svg || fail "analyze --estimator: the figure lacks its panel"
run "analyze: --draws alone" 2 "--draws applies to --estimator" -- \
    "$BPTT" analyze --cell rnn_tanh --hidden 4 --draws 5
run "analyze: a policy in --estimator" 2 "fixed:2 is a truncation policy" -- \
    "$BPTT" analyze --cell rnn_tanh --hidden 4 --estimator fixed:2

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all estimator CLI checks passed"
