#!/bin/sh
# test_cli_stack.sh: stacked layers and dropout end to end (docs/stacks.md):
# train, resume bit for bit with dropout, generate from a stack's checkpoint
# alone, gradcheck and grad on stacks, and the messages of bad input.
# Usage: test_cli_stack.sh PATH/TO/bptt PATH/TO/st_compare   (BPTT_PLUGIN_PATH set by meson)
set -u
BPTT=${1:?usage: test_cli_stack.sh PATH/TO/bptt PATH/TO/st_compare}
ST_COMPARE=${2:?usage: test_cli_stack.sh PATH/TO/bptt PATH/TO/st_compare}
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
DIR=$(mktemp -d /tmp/bptt-stack-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run NAME EXPECTED_STATUS [PATTERN] -- COMMAND...: status must match; output must contain PATTERN.
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
SMALL="--data text.txt --batch 4 --steps 8 --optimizer adam:lr=0.02 --seed 3 --val-fraction 0.1"
STACK="--layers gru:12,lstm:10 --dropout 0.3"

# ---- resume is bit for bit for a stack with dropout: 2 + 2 epochs = 4 epochs ----
run "stack: train 2 epochs" 0 "layers gru:12,lstm:10, dropout 0.3" -- \
    "$BPTT" train $SMALL $STACK --epochs 2 --save a.st
run "stack: resume to 4" 0 "from epoch 2" -- "$BPTT" train --resume a.st --epochs 4 --save b.st
run "stack: train 4 epochs" 0 "" -- "$BPTT" train $SMALL $STACK --epochs 4 --save c.st
run "stack: resumed = straight, bit for bit" 0 "" -- \
    "$ST_COMPARE" b.st c.st --atol 0 --rtol 0 --skip history
run "stack: variational dropout, tbptt, checkpointed windows" 0 "a mask per sequence" -- \
    "$BPTT" train $SMALL $STACK --variational --truncation tbptt:3,6 --checkpoint 2 --epochs 2
run "stack: dropout changes training" 0 "" -- "$BPTT" train $SMALL --layers gru:12,lstm:10 \
    --epochs 4 --save f.st
"$ST_COMPARE" f.st c.st --atol 0 --rtol 0 --skip history >/dev/null 2>&1 &&
    fail "a run without dropout gave the same model as one with dropout"

# ---- generate needs nothing but the checkpoint; dropout is off there ----
run "stack: generate greedy" 0 "^the" -- "$BPTT" generate --model c.st --prefix the --length 30
g1=$(cat out.txt)
run "stack: generate again" 0 "" -- "$BPTT" generate --model c.st --prefix the --length 30
[ "$g1" = "$(cat out.txt)" ] || fail "greedy generation from a stack with dropout differs"

# ---- resume refuses another architecture ----
run "stack resume: other layers" 1 "conflicts with the checkpoint's layers" -- \
    "$BPTT" train --resume a.st --layers gru:12,lstm:10,lstm:4 --epochs 3
run "stack resume: other dropout" 1 "conflicts with the checkpoint's dropout 0.3" -- \
    "$BPTT" train --resume a.st --dropout 0.5 --epochs 3
run "stack resume: same settings restated" 0 "" -- \
    "$BPTT" train --resume a.st $STACK --epochs 3
# A stacked checkpoint whose metadata claims a wide layer (header checksum
# recomputed, so only the shape check can refuse it) is refused before the
# model is built, as a one-cell checkpoint is (issue 12, defect 10).
python3 - a.st wide.st <<'PY'
import json, struct, sys, zlib
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
m = h['__metadata__']
m['layers'] = m['layers'].replace(m['layers'].split(',')[0].split(':')[1], '4000', 1)
m['checksum_header'] = 'crc32:00000000'
s = json.dumps(h, separators=(',', ':')).encode()
s += b' ' * (-(len(s) + 8) % 8)
l8 = struct.pack('<Q', len(s))
c = zlib.crc32(l8 + s) & 0xffffffff
s = s.replace(b'"checksum_header":"crc32:00000000"', b'"checksum_header":"crc32:%08x"' % c)
open(sys.argv[2], 'wb').write(l8 + s + b[8 + n:])
PY
run "stack resume: a layer wider than its tensors" 1 "do not fit tensor 'param.l1" -- \
    "$BPTT" train --resume wide.st --epochs 3

# ---- gradcheck on stacks ----
run "gradcheck: mixed stack under tbptt" 0 "PASS" -- \
    "$BPTT" gradcheck --layers gru:4,lstm:3,rnn_tanh:2 --truncation tbptt:2,4
grep -q "l3.W_xh" out.txt || fail "gradcheck table lacks layer 3's parameters"
run "gradcheck: stack with variational dropout" 0 "PASS" -- \
    "$BPTT" gradcheck --cell lstm --layers 2 --hidden 3 --dropout 0.4 --variational \
    --truncation random:0.5,seed=2
run "gradcheck: real-valued stack" 0 "PASS" -- \
    "$BPTT" gradcheck --layers linear:4,linear:3 --vocab 3 --output 2

# ---- a model file: the same run as the options, recorded in the checkpoint ----
printf '{"layers": [{"cell": "gru", "hidden": 12}, {"cell": "lstm", "hidden": 10}],\n "dropout": 0.3}\n' >m.json
run "model file: train 4 epochs" 0 "layers gru:12,lstm:10, dropout 0.3" -- \
    "$BPTT" train $SMALL --model-file m.json --epochs 4 --save mf.st
run "model file = options, bit for bit" 0 "" -- \
    "$ST_COMPARE" mf.st c.st --atol 0 --rtol 0 --skip history
run "model file: resume needs nothing else" 0 "epoch 5/5" -- \
    "$BPTT" train --resume mf.st --epochs 5
run "model file: resume with the file" 0 "epoch 5/5" -- \
    "$BPTT" train --resume mf.st --model-file m.json --epochs 5
printf '{"cell": "lstm", "hidden": 3, "layers": 2, "dropout": 0.2, "init": "orthogonal"}\n' >s.json
run "model file: gradcheck" 0 "PASS" -- "$BPTT" gradcheck --model-file s.json --truncation fixed:2
run "model file: analyze per layer" 0 "layer 2" -- "$BPTT" analyze --model-file s.json --lags 4
run "analyze --json per layer" 0 '"layers":\[{"layer":1' -- \
    "$BPTT" analyze --layers rnn_tanh:4,gru:3 --lags 3 --json
printf '{"cell": "lstm", "hidden": 3, "dropuot": 0.2}\n' >bad.json
run "model file: unknown key" 2 'unknown key "dropuot"' -- \
    "$BPTT" train $SMALL --model-file bad.json --epochs 1
printf '{"layers": [{"cell": "gru:5,lstm", "hidden": 3}]}\n' >sneaky.json
run "model file: a cell name that is a layer list" 2 "must be a cell's name" -- \
    "$BPTT" train $SMALL --model-file sneaky.json --epochs 1
printf '{"layers": [{"cell": "lstm"}]}\n' >nowidth.json
run "model file: no width" 2 "hidden. width" -- "$BPTT" train $SMALL --model-file nowidth.json --epochs 1
printf '{"cell": "lstm", "hidden": 3,' >cut.json
run "model file: not JSON" 2 "not JSON" -- "$BPTT" train $SMALL --model-file cut.json --epochs 1
run "model file beside --hidden" 2 "drop --hidden" -- \
    "$BPTT" train $SMALL --model-file s.json --hidden 4 --epochs 1
run "model file missing" 2 "cannot open" -- "$BPTT" train $SMALL --model-file none.json --epochs 1

# ---- bad input ----
run "layers: unknown cell" 2 "unknown cell 'nosuch'" -- \
    "$BPTT" gradcheck --layers nosuch:3,lstm:3
run "layers: influence cannot be a layer" 2 "cannot be a layer of a stack" -- \
    "$BPTT" gradcheck --layers lstm:3,influence:3
run "layers: too many" 2 "1 to 8 layers" -- "$BPTT" train $SMALL --layers 9 --epochs 1
run "layers: bad width" 2 "not CELL\[:WIDTH\]" -- "$BPTT" train $SMALL --layers lstm:x --epochs 1
run "variational without dropout" 2 "needs --dropout" -- \
    "$BPTT" train $SMALL --layers 2 --variational --epochs 1
run "dropout out of range" 2 "dropout" -- "$BPTT" train $SMALL --dropout 1 --epochs 1
run "grad: --dropout without --layers" 2 "give --layers too" -- \
    "$BPTT" grad --cell lstm --params x.st --out y.st --dropout 0.2

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
