#!/usr/bin/env bash
# test_cli_grad.sh: the gradient commands end to end through the `bptt` binary:
# plugins (table and JSON), gradcheck for every shipped cell and policy,
# selfcheck, grad against the committed reference fixtures (full, fixed:2, a
# given xi, and the rtrl estimator against full), uoro's files, and the error
# cases a user meets (each must name the problem).
#
#   test_cli_grad.sh BPTT ST_COMPARE FIXTURES_DIR USER_CELL_SO   (BPTT_PLUGIN_PATH set by meson)
set -u

BPTT=$1
COMPARE=$2
FIX=$3
USER_CELL=$4
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# run NAME CMD...: expects exit 0; prints the output on failure.
run() {
    local name=$1
    shift
    if "$@" >"$TMP/out" 2>&1; then
        echo "ok   $name"
    else
        fail "$name (exit $?)"
        cat "$TMP/out"
    fi
}

# refuse NAME PATTERN CMD...: expects a non-zero exit and PATTERN (grep -E) in stderr.
refuse() {
    local name=$1 pattern=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        fail "$name: exit 0, expected an error"
    elif ! grep -Eq -- "$pattern" "$TMP/err"; then
        fail "$name: message does not match '$pattern':"
        cat "$TMP/err"
    else
        echo "ok   $name: $(head -n 1 "$TMP/err")"
    fi
}

# ---- plugins -------------------------------------------------------------------
run "plugins" "$BPTT" plugins
for name in rnn_tanh linear gru gru_torch lstm influence full fixed random tbptt sgd momentum adam \
    rtrl uoro; do
    grep -Eq "^(cell|policy|optimizer|estimator) +$name " "$TMP/out" || fail "plugins: '$name' not listed"
done
run "plugins --json" "$BPTT" plugins --json
for pair in 'cell:rnn_tanh' 'cell:lstm' 'policy:tbptt' 'optimizer:adam' 'estimator:uoro'; do
    grep -q "\"kind\": \"${pair%%:*}\", \"name\": \"${pair#*:}\"" "$TMP/out" ||
        fail "plugins --json: no object for ${pair}"
done
head -c 1 "$TMP/out" | grep -q '\[' || fail "plugins --json: not a JSON array"
tail -n 1 "$TMP/out" | grep -q '^\]$' || fail "plugins --json: array not closed"
if command -v python3 >/dev/null; then # optional: a real JSON parser when there is one
    python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert all("summary" in o for o in a)' \
        "$TMP/out" || fail "plugins --json: python3 cannot parse it"
fi

# ---- gradcheck: every shipped cell under full, fixed and TBPTT ----------------------
for cell in rnn_tanh linear gru gru_torch lstm; do
    for policy in full fixed:2 tbptt:2,4; do
        run "gradcheck $cell $policy" "$BPTT" gradcheck --cell "$cell" --truncation "$policy"
        grep -q "^PASS" "$TMP/out" || fail "gradcheck $cell $policy: no PASS line"
    done
done
for policy in full fixed:2 random:0.5 tbptt:2,4; do # its output is one unit, its input P <= N
    run "gradcheck influence $policy" "$BPTT" gradcheck --cell influence --hidden 6 --vocab 3 \
        --output 1 --truncation "$policy"
    grep -q "^PASS" "$TMP/out" || fail "gradcheck influence $policy: no PASS line"
done
# --describe: every shipped name prints its plugin's text (docs/cells.md embeds
# it; test_describe_docs.py checks that); an unknown name is one line, exit 1.
for name in rnn_tanh gru_torch influence tbptt adam rtrl uoro; do
    run "plugins --describe $name" "$BPTT" plugins --describe "$name"
    [ "$(wc -l <"$TMP/out")" -gt 5 ] || fail "plugins --describe $name: no description"
    grep -q "no description" "$TMP/out" && fail "plugins --describe $name: no description"
done
"$BPTT" plugins --describe no_such >"$TMP/out" 2>"$TMP/err"
[ $? -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "gru_torch" "$TMP/err" ||
    fail "plugins --describe no_such: want exit 1 and one line naming the known cells"
run "gradcheck random with options" "$BPTT" gradcheck --cell gru --truncation random:0.5,seed=3 \
    --steps 8 --batch 3 --hidden 3 --vocab 4
# A user's own cell from --plugin: listed, and checked like a shipped one.
run "plugins --plugin" "$BPTT" plugins --plugin "$USER_CELL"
grep -Eq "^cell +user_gated +cli_user_cell +0\.3\.1" "$TMP/out" || fail "plugins --plugin: user_gated not listed"
for policy in full fixed:2 tbptt:2,3; do
    run "gradcheck --plugin user_gated $policy" "$BPTT" gradcheck --plugin "$USER_CELL" \
        --cell user_gated --truncation "$policy" --hidden 3 --vocab 2
done
# An impossible tolerance must fail, and say so.
"$BPTT" gradcheck --cell rnn_tanh --tolerance 0 >"$TMP/out" 2>&1 &&
    fail "gradcheck --tolerance 0 passed"
grep -q "FAIL" "$TMP/out" || fail "gradcheck --tolerance 0: no FAIL line"

# ---- selfcheck ---------------------------------------------------------------------
run "selfcheck" "$BPTT" selfcheck
grep -q "^PASS  training" "$TMP/out" || fail "selfcheck: no training PASS line"

# ---- grad against the reference fixtures --------------------------------------------
# grad_case NAME EXPECTED CMD-ARGS...: run bptt grad, compare every tensor.
grad_case() {
    local name=$1 expected=$2
    shift 2
    if ! "$BPTT" grad "$@" --out "$TMP/$name.safetensors" >"$TMP/out" 2>&1; then
        fail "grad $name (exit $?)"
        cat "$TMP/out"
        return
    fi
    if "$COMPARE" "$TMP/$name.safetensors" "$FIX/$expected" >"$TMP/cmp" 2>&1; then
        echo "ok   grad $name: $(tail -n 1 "$TMP/cmp")"
    else
        fail "grad $name differs from $expected"
        cat "$TMP/cmp"
    fi
}
grad_case rnn_tanh_full rnn_tanh_full.expected.safetensors \
    --cell rnn_tanh --params "$FIX/rnn_tanh_params.safetensors"
grad_case rnn_tanh_fixed2 rnn_tanh_fixed2.expected.safetensors \
    --cell rnn_tanh --params "$FIX/rnn_tanh_params.safetensors" --truncation fixed:2
grad_case linear_full linear_full.expected.safetensors \
    --cell linear --params "$FIX/linear_params.safetensors" --truncation full
grad_case linear_xi linear_xi.expected.safetensors \
    --cell linear --params "$FIX/linear_xi_params.safetensors"
# The truncated case must really differ from full BPTT, or it tests nothing.
"$COMPARE" "$TMP/rnn_tanh_fixed2.safetensors" "$FIX/rnn_tanh_full.expected.safetensors" \
    >/dev/null 2>&1 && fail "grad fixed:2 equals full BPTT"
# Metadata records what was run.
"$COMPARE" "$TMP/rnn_tanh_fixed2.safetensors" "$FIX/rnn_tanh_fixed2.expected.safetensors" \
    --meta cell=rnn_tanh --meta policy=fixed:2 --meta B=2 --meta T=5 --meta loss=xent \
    >"$TMP/cmp" 2>&1 || { fail "grad metadata"; cat "$TMP/cmp"; }

# ---- grad --estimator: rtrl is full BPTT computed forward in time ---------------------
# Against the same fixtures (an explicit-loop BPTT in double): every tensor rtrl
# writes (loss, grad.<param>, grad.h0); it writes no xi and no grad_norm_h.
est_case() {
    local name=$1 expected=$2
    shift 2
    if ! "$BPTT" grad "$@" --out "$TMP/$name.safetensors" >"$TMP/out" 2>&1; then
        fail "grad $name (exit $?)"
        cat "$TMP/out"
        return
    fi
    if "$COMPARE" "$TMP/$name.safetensors" "$FIX/$expected" --skip xi --skip grad_norm_h \
        --meta estimator=rtrl,max_mb=1024 --meta grad_h0=computed >"$TMP/cmp" 2>&1; then
        echo "ok   grad $name: $(tail -n 1 "$TMP/cmp")"
    else
        fail "grad $name differs from $expected"
        cat "$TMP/cmp"
    fi
}
est_case rnn_tanh_rtrl rnn_tanh_full.expected.safetensors \
    --cell rnn_tanh --params "$FIX/rnn_tanh_params.safetensors" --estimator rtrl
est_case linear_rtrl linear_full.expected.safetensors \
    --cell linear --params "$FIX/linear_params.safetensors" --estimator rtrl:max_mb=1024
# uoro: an estimate (not the gradient), the same for the same seed, no grad.h0.
P="$FIX/rnn_tanh_params.safetensors"
run "grad uoro" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator uoro --seed 5 --out "$TMP/u1.st"
grep -q "with estimator uoro,eps=1e-07" "$TMP/out" || fail "grad uoro: $(cat "$TMP/out")"
run "grad uoro again" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator uoro --seed 5 --out "$TMP/u2.st"
"$COMPARE" "$TMP/u1.st" "$TMP/u2.st" --atol 0 --rtol 0 --meta grad_h0=absent >"$TMP/cmp" 2>&1 ||
    { fail "grad uoro: two runs with --seed 5 differ"; cat "$TMP/cmp"; }
run "grad uoro seed 6" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator uoro,seed=6 --seed 5 --out "$TMP/u3.st"
"$COMPARE" "$TMP/u3.st" "$TMP/u1.st" >/dev/null 2>&1 && fail "grad uoro: seed=6 gave seed 5's estimate"
"$COMPARE" "$TMP/u1.st" "$FIX/rnn_tanh_full.expected.safetensors" --skip xi --skip grad_norm_h \
    --skip grad.h0 >/dev/null 2>&1 && fail "grad uoro: one draw equals the exact gradient"
refuse "estimator with truncation" "takes no --truncation" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator rtrl --truncation fixed:2 --out "$TMP/x"
"$BPTT" grad --cell rnn_tanh --params "$P" --estimator rtrl --checkpoint 2 --out "$TMP/x" 2>/dev/null
[ $? -eq 2 ] || fail "grad --estimator --checkpoint: want exit status 2 (usage)"
refuse "unknown estimator" "unknown estimator 'nope'.*rtrl, uoro" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator nope --out "$TMP/x"
refuse "estimator bad option" "estimator uoro.*colour" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator uoro,colour=2 --out "$TMP/x"
refuse "rtrl above its limit" "above max_mb=1e-06: raise the limit" "$BPTT" grad --cell rnn_tanh --params "$P" --estimator rtrl,max_mb=0.000001 --out "$TMP/x"
refuse "estimator and xi" "P holds xi.*remove xi" "$BPTT" grad --cell linear --params "$FIX/linear_xi_params.safetensors" --estimator rtrl --out "$TMP/x"

# ---- errors: non-zero exit and a message naming the problem --------------------------
P="$FIX/rnn_tanh_params.safetensors"
refuse "missing file" "no_such_file" "$BPTT" grad --cell rnn_tanh --params "$TMP/no_such_file.safetensors" --out "$TMP/x"
refuse "missing --out" "--out" "$BPTT" grad --cell rnn_tanh --params "$P"
refuse "unknown cell" "unknown cell 'nope'.*rnn_tanh" "$BPTT" grad --cell nope --params "$P" --out "$TMP/x"
refuse "unknown policy" "unknown truncation policy 'nope'.*fixed" "$BPTT" grad --cell rnn_tanh --params "$P" --truncation nope --out "$TMP/x"
refuse "bad policy options" "fixed" "$BPTT" grad --cell rnn_tanh --params "$P" --truncation fixed:0 --out "$TMP/x"
refuse "missing tensor" "missing tensor 'W_xh'.*F32 or F64 \[V,H\]" "$BPTT" grad --cell rnn_tanh --params "$FIX/linear_params.safetensors" --out "$TMP/x"
refuse "wrong shape" "'b_q'.*\[5\].*\[4\]" "$BPTT" grad --cell rnn_tanh --params "$FIX/bad_shape_params.safetensors" --out "$TMP/x"
refuse "id out of range" "X\[1\]\[4\] = 4 is out of range" "$BPTT" grad --cell rnn_tanh --params "$FIX/bad_id_params.safetensors" --out "$TMP/x"
refuse "wrong dtype" "'Y' is F32.*I32" "$BPTT" grad --cell rnn_tanh --params "$FIX/bad_dtype_params.safetensors" --out "$TMP/x"
refuse "gradcheck unknown cell" "unknown cell 'nope'" "$BPTT" gradcheck --cell nope
refuse "gradcheck unknown policy" "unknown truncation policy 'nope'" "$BPTT" gradcheck --cell rnn_tanh --truncation nope
refuse "unknown option" "unknown option.*--bogus" "$BPTT" gradcheck --cell rnn_tanh --bogus
refuse "plugin that is not one" "not_a_plugin" "$BPTT" plugins --plugin "$TMP/not_a_plugin.so"
[ -e "$TMP/x" ] && fail "a failed grad left an output file"

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all cli grad checks passed"
