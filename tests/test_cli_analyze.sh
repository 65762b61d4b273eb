#!/bin/sh
# test_cli_analyze.sh: `bptt analyze` and `bptt demo` end to end (suite cli):
# the JSON has its keys, --plot writes an SVG, bad options fail with a
# message, every --init kind on every shipped cell sets what it names or says
# why not, and the demo finishes (exit 0) and writes its figures; the demo's
# wall time is printed, so the log shows the time budget.
# Usage: test_cli_analyze.sh PATH/TO/bptt
set -eu
BPTT=$1
DIR=$(mktemp -d /tmp/bptt_cli_analyze_XXXXXX)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BPTT" analyze --cell linear --hidden 8 --init spectral:0.9 --json >"$DIR/a.json" ||
    fail "analyze --json exited $?"
for key in '"cell":"linear"' '"init":"spectral:0.9"' '"grad_norm":\[' '"jac_norm":\[' \
           '"grad_rate":' '"grad_scale":' '"spectral_radius":0.9' '"eigenvalues":\[\[' '"power":{' \
           '"tan_angle":\[' '"predicted":\['; do
    grep -q "$key" "$DIR/a.json" || fail "analyze --json lacks $key: $(cat "$DIR/a.json")"
done
[ "$(wc -l <"$DIR/a.json")" -eq 1 ] || fail "analyze --json should print one line"
grep -q 'nan\|inf' "$DIR/a.json" && fail "non-finite number in the JSON"

"$BPTT" analyze --cell rnn_tanh --hidden 16 --init orthogonal --lags 12 --plot "$DIR/a.svg" \
    >"$DIR/table.txt" || fail "analyze --plot exited $?"
grep -q '^<svg' "$DIR/a.svg" || head -c 200 "$DIR/a.svg" | grep -q '<svg' || fail "no SVG written"
grep -q 'unit circle' "$DIR/a.svg" || fail "the SVG lacks the unit circle"
grep -q 'spectral radius' "$DIR/table.txt" || fail "the table lacks the spectral radius"

"$BPTT" analyze --cell influence --hidden 23 --task influence:23,10 --lags 20 >/dev/null ||
    fail "analyze on the influence task"
"$BPTT" analyze --cell gru --hidden 8 --task copy:10,3 --json | grep -q '"data":"copy:10,3"' ||
    fail "analyze on the copy task"

if "$BPTT" analyze --cell linear --hidden 8 --init spectral 2>"$DIR/err.txt"; then
    fail "--init spectral (no RHO) accepted"
fi
grep -q 'rho' "$DIR/err.txt" || fail "no message for a bad --init: $(cat "$DIR/err.txt")"
if "$BPTT" analyze --cell linear 2>"$DIR/err.txt"; then fail "--cell without --hidden accepted"; fi
if "$BPTT" analyze --cell linear --hidden 4 --task nope:3 2>"$DIR/err.txt"; then
    fail "unknown task accepted"
fi
grep -q 'unknown task' "$DIR/err.txt" || fail "no message for an unknown task"

# Every --init kind on every shipped cell: it sets what it names, or a cell
# with recurrent matrices it cannot act on is refused (exit 2, one line naming
# the cell), or a cell with no recurrent matrix says so in the header.
for cell in rnn_tanh linear gru gru_torch lstm influence; do
    for init in normal:0.1 orthogonal identity spectral:1.2; do
        set +e
        "$BPTT" analyze --cell "$cell" --hidden 8 --lags 4 --init "$init" >"$DIR/init.txt" \
            2>"$DIR/init.err"
        rc=$?
        set -e
        case "$cell:$init" in
        gru_torch:spectral:1.2 | lstm:spectral:1.2)
            [ "$rc" -eq 2 ] || fail "$cell --init $init: exit $rc, want 2 (refused)"
            [ "$(wc -l <"$DIR/init.err")" -eq 1 ] || fail "$cell --init $init: want one line"
            grep -q "cell $cell has no square recurrent matrix" "$DIR/init.err" ||
                fail "$cell --init $init: message $(cat "$DIR/init.err")"
            [ -s "$DIR/init.txt" ] && fail "$cell --init $init printed a table anyway"
            ;;
        influence:*)
            [ "$rc" -eq 0 ] || fail "$cell --init $init: exit $rc"
            head -1 "$DIR/init.txt" | grep -q "init cell default (--init $init has nothing to set: cell influence has no recurrent matrix)" ||
                fail "$cell --init $init: header $(head -1 "$DIR/init.txt")"
            ;;
        *)
            [ "$rc" -eq 0 ] || fail "$cell --init $init: exit $rc: $(cat "$DIR/init.err")"
            head -1 "$DIR/init.txt" | grep -q "init $init, " ||
                fail "$cell --init $init: header $(head -1 "$DIR/init.txt")"
            ;;
        esac
        if [ "$init" = spectral:1.2 ] && [ "$rc" -eq 0 ] && [ "$cell" != influence ]; then
            grep -q 'spectral radius 1\.2;' "$DIR/init.txt" ||
                fail "$cell --init spectral:1.2: $(grep 'spectral radius' "$DIR/init.txt")"
        fi
    done
done

start=$(date +%s.%N)
"$BPTT" demo --out "$DIR/demo" >"$DIR/demo.txt" || { cat "$DIR/demo.txt"; fail "demo exited $?"; }
end=$(date +%s.%N)
for f in influence.svg lags.svg text.svg analyze-linear-spectral-1.2.svg; do
    [ -s "$DIR/demo/$f" ] || fail "demo did not write $f"
done
grep -q 'away from theta\*' "$DIR/demo.txt" || fail "demo: fixed:1 should move theta away"
awk -v a="$start" -v b="$end" 'BEGIN { printf "bptt demo took %.1f s\n", b - a }'
echo "all analyze/demo CLI checks passed"
