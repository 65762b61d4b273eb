#!/usr/bin/env bash
# test_cli_files.sh: the files and settings of issue 12 through the `bptt`
# binary. Each block is one defect; each check failed before its fix.
#  1 two options naming one file (by inode, or by folder and name)
#  2 an output that exists and is not a regular file (FIFO, symlink, device, folder)
#  3 a second writer of the same output while the first runs (a lock naming it)
#  4 a --data path that is not UTF-8 (stored losslessly)
#  5 a --data that is not a regular file (/dev/zero, a FIFO)
#  6 temporary files of a killed writer (cleaned by the next save)
#  8 --checkpoint and --memory-budget stored and validated on resume
#  9 long task specs, optimizer specs and data paths kept whole
# 10 a crafted checkpoint whose settings do not fit its tensors
# 11 memory budgets below one byte; non-finite values in grad's input
#
#   test_cli_files.sh BPTT ST_COMPARE TOOLS_DIR FIXTURES_DIR   (BPTT_PLUGIN_PATH set by meson)
set -u
BPTT=$1
ST_COMPARE=$2
TOOLS=$3
FIX=$4
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
case $TOOLS in /*) ;; *) TOOLS=$(pwd)/$TOOLS ;; esac
case $FIX in /*) ;; *) FIX=$(pwd)/$FIX ;; esac
DIR=$(mktemp -d /tmp/bptt-files-XXXXXX)
BG=""
trap '[ -n "$BG" ] && kill -9 $BG 2>/dev/null; rm -rf "$DIR"' EXIT
cd "$DIR" || exit 1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run NAME STATUS PATTERN -- CMD...: the exit status must be STATUS and the
# output (stdout and stderr) must match PATTERN (grep -E; "" for any).
run() {
    local name=$1 want=$2 pattern=$3
    shift 4
    "$@" >out.txt 2>&1
    local got=$?
    if [ "$got" != "$want" ]; then
        fail "$name: exit status $got, expected $want"
        sed 's/^/    /' out.txt | head -20
    elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" out.txt; then
        fail "$name: output lacks '$pattern'"
        sed 's/^/    /' out.txt | head -20
    else
        echo "ok: $name${pattern:+: $(grep -E -m1 -- "$pattern" out.txt)}"
    fi
}
# same FILE ORIGINAL MESSAGE: FILE must still be ORIGINAL (put back if not,
# so one failed check does not spoil the next).
same() { cmp -s "$1" "$2" || { fail "$3"; rm -f "$1"; cp "$2" "$1"; }; }
# st_edit IN OUT META_JSON [TENSOR INDEX VALUE]: a copy of a safetensors file
# with metadata keys replaced (null removes one) and optionally one element
# of an F32/F64 tensor set; the Python standard library only.
st_edit() {
    python3 - "$@" <<'PY'
import json, struct, sys
src, dst, meta = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head, data = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])
m = head.setdefault("__metadata__", {})
for k, v in meta.items():
    if v is None:
        m.pop(k, None)
    else:
        m[k] = v
if len(sys.argv) > 4:
    t = head[sys.argv[4]]
    fmt = {"F32": "<f", "F64": "<d"}[t["dtype"]]
    size = struct.calcsize(fmt)
    struct.pack_into(fmt, data, t["data_offsets"][0] + size * int(sys.argv[5]), float(sys.argv[6]))
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + bytes(data))
PY
}

for i in $(seq 60); do
    printf 'the time traveller sat by the fire. the doctor read the paper.\n'
done >text.txt
cp text.txt orig.txt
SMALL="--hidden 8 --batch 4 --steps 8 --optimizer adam:lr=0.02 --seed 3 --quiet"
"$BPTT" train --data text.txt $SMALL --epochs 1 --save m.st >/dev/null 2>&1 || fail "setup: no checkpoint"
cp m.st m0.st

# ---- 1: two options, one file ---------------------------------------------------------------
run "1 --data and --save the same file" 2 "--data text.txt and --save text.txt are the same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save text.txt
same text.txt orig.txt "--save replaced the text it trains on"
run "1 --metrics = --data" 2 "same file" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --metrics text.txt
same text.txt orig.txt "--metrics replaced the text"
run "1 --save and --plot the same new file" 2 "--save x.st and --plot x.st are the same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save x.st --plot x.st
[ -e x.st ] && fail "x.st was written"
run "1 spelt differently: ./x.st and an absolute path" 2 "same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save ./x.st --metrics "$DIR/x.st"
mkdir real && ln -s real linked
run "1 a new file through a symlinked folder" 2 "same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save real/y.st --plot linked/y.st
run "1 a new file through ..: real/../y.st and y.st" 2 "same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save real/../y.st --plot y.st
ln text.txt hard.txt
run "1 a hard link of the text as --save" 2 "same file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save hard.txt
same text.txt orig.txt "--save through a hard link replaced the text"
run "1 --resume and --save the same file is allowed" 0 "" -- \
    "$BPTT" train --resume m.st --epochs 2 --save m.st
cp m0.st m.st
run "1 --resume and --metrics the same file" 2 "same file" -- \
    "$BPTT" train --resume m.st --epochs 2 --metrics m.st
same m.st m0.st "--metrics replaced the checkpoint being resumed"
run "1 --save = the text a resumed checkpoint names" 2 "--data text.txt and --save text.txt are the same file" -- \
    "$BPTT" train --resume m.st --epochs 2 --save text.txt
same text.txt orig.txt "a resume replaced the checkpoint's text"
run "1 compare --plot = --data" 2 "same file" -- \
    "$BPTT" compare --data text.txt $SMALL --epochs 1 --truncation full,fixed:2 --plot text.txt
run "1 compare --plot = --metrics" 2 "same file" -- \
    "$BPTT" compare --data text.txt $SMALL --epochs 1 --truncation full,fixed:2 --plot c.out --metrics c.out
run "1 analyze --plot = --model" 2 "same file" -- "$BPTT" analyze --model m.st --lags 3 --plot m.st
same m.st m0.st "analyze --plot replaced the model"
cp "$FIX/rnn_tanh_params.safetensors" p.st
run "1 --plot named as --save's lock file" 2 "is a working file bptt keeps beside --save x.st" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save x.st --plot x.st.lock
run "1 --metrics named as a temporary of --save" 2 "is a working file" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save x.st --metrics x.st.tmp.1.abc
run "1 grad --out = --params" 2 "same file" -- "$BPTT" grad --cell rnn_tanh --params p.st --out p.st
same p.st "$FIX/rnn_tanh_params.safetensors" "grad --out replaced its --params"

# ---- 2: outputs that are not regular files ---------------------------------------------------
mkfifo fifo
ln -s orig.txt link.txt
run "2 --save onto a FIFO" 1 "FIFO" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --save fifo
[ -p fifo ] || fail "the FIFO was replaced"
grep -q "epoch 1/1\|done:" out.txt && fail "training started although --save is a FIFO"
run "2 --save onto a symlink" 1 "symbolic link" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --save link.txt
[ -L link.txt ] || fail "the symlink was replaced"
same text.txt orig.txt "the symlink's target changed"
run "2 --metrics onto a FIFO" 1 "FIFO" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --metrics fifo
run "2 --plot onto a symlink" 1 "symbolic link" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --plot link.txt
run "2 grad --out onto a FIFO" 1 "FIFO" -- "$BPTT" grad --cell rnn_tanh --params p.st --out fifo
[ -p fifo ] || fail "grad replaced the FIFO"
run "2 compare --plot onto a symlink" 1 "symbolic link" -- \
    "$BPTT" compare --data text.txt $SMALL --epochs 1 --truncation full,fixed:2 --plot link.txt
if [ "$(id -u)" = 0 ] && mknod null c 1 3 2>/dev/null; then
    run "2 --save onto a device node (a copy of /dev/null)" 1 "device" -- \
        "$BPTT" train --data text.txt $SMALL --epochs 1 --save null
    [ -c null ] || fail "the device node was replaced by a regular file"
else
    echo "skip: 2 device node (needs root to mknod)"
fi

# ---- 3: a second writer of the same output ---------------------------------------------------
rm -f L.st
"$BPTT" train --data text.txt --hidden 8 --batch 4 --steps 8 --epochs 100000 --save L.st --every 100000 \
    >first.txt 2>&1 &
BG=$!
for _ in $(seq 100); do [ -s L.st.lock ] && break; sleep 0.05; done
run "3 a second run writing the same --save" 1 "pid $BG" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save L.st
grep -q "bptt train" out.txt || fail "the message does not name the other command"
run "3 grad --out onto a file a run is writing" 1 "pid $BG" -- \
    "$BPTT" grad --cell rnn_tanh --params p.st --out L.st
kill -9 $BG; wait $BG 2>/dev/null; BG=""
run "3 a lock left by a killed run does not block" 0 "" -- \
    "$BPTT" train --data text.txt $SMALL --epochs 1 --save L.st
[ -e L.st.lock ] && fail "the lock file outlived a clean run"

# ---- 4: a --data path that is not UTF-8 ------------------------------------------------------
LATIN=$(printf 'caf\351.txt')
cp text.txt "$LATIN"
run "4 train on a Latin-1 file name and save" 0 "saved" -- \
    "$BPTT" train --data "$LATIN" $SMALL --epochs 2 --save latin.st
run "4 resume (no --data) finds the non-UTF-8 name" 0 "epoch 3" -- "$BPTT" train --resume latin.st --epochs 3 --save latin.st
run "4 the same 3 epochs straight" 0 "" -- "$BPTT" train --data "$LATIN" $SMALL --epochs 3 --save latin3.st
"$ST_COMPARE" latin.st latin3.st --skip history >cmp.txt 2>&1 || { fail "4 2+1 epochs differ from 3"; cat cmp.txt; }

# ---- 5: --data that is not a regular file ----------------------------------------------------
rm -f fifo && mkfifo fifo
# Before the fix /dev/zero was read until memory ran out: bounded here (not
# under ASan, which reserves terabytes of address space).
LIMIT=""
ldd "$BPTT" 2>/dev/null | grep -q libasan || LIMIT="ulimit -v 600000;"
run "5 --data /dev/zero" 1 "not a regular file" -- \
    bash -c "$LIMIT exec timeout 20 \"\$0\" train --data /dev/zero $SMALL --epochs 1" "$BPTT"
run "5 --data a FIFO (no writer)" 1 "not a regular file" -- timeout 20 "$BPTT" train --data fifo $SMALL --epochs 1
run "5 analyze --data /dev/zero" 1 "not a regular file" -- \
    bash -c "$LIMIT exec timeout 20 \"\$0\" analyze --cell rnn_tanh --hidden 4 --data /dev/zero" "$BPTT"

# ---- 6: temporary files of a killed writer ---------------------------------------------------
cp m0.st t.st
: >t.st.tmp.999999999.abc123
: >t.st.tmp.999999998.ZZ9zz9
: >t.st.tmp.backup-keep
: >other.st.tmp.999999999.abc123
run "6 save next to stale temporary files" 0 "" -- "$BPTT" train --resume t.st --epochs 2 --save t.st
[ -e t.st.tmp.999999999.abc123 ] || [ -e t.st.tmp.999999998.ZZ9zz9 ] && fail "stale t.st.tmp.* left: $(ls t.st.tmp.*)"
[ -e t.st.tmp.backup-keep ] || fail "a file that is not a bptt temporary was removed"
[ -e other.st.tmp.999999999.abc123 ] || fail "another target's temporary was removed"

# ---- 8: --checkpoint and --memory-budget on resume -------------------------------------------
LONG="--data text.txt --hidden 16 --batch 2 --steps 60 --optimizer momentum:lr=0.1,mu=0.9 --seed 5 --quiet"
run "8 train with --checkpoint 7" 0 "" -- "$BPTT" train $LONG --epochs 1 --checkpoint 7 --save ck.st
"$ST_COMPARE" ck.st ck.st --skip history --meta checkpoint_every=7 >cmp.txt 2>&1 || { fail "8 --checkpoint not stored"; cat cmp.txt; }
run "8 resume keeps --checkpoint 7" 0 "" -- "$BPTT" train --resume ck.st --epochs 2 --save ck2.st
run "8 the straight run with --checkpoint 7" 0 "" -- "$BPTT" train $LONG --epochs 2 --checkpoint 7 --save ck3.st
"$ST_COMPARE" ck2.st ck3.st --skip history --atol 0 --rtol 0 >cmp.txt 2>&1 ||
    { fail "8 a resumed --checkpoint 7 run differs from the straight one"; cat cmp.txt; }
run "8 train plain (q.st)" 0 "" -- "$BPTT" train $LONG --epochs 1 --save q.st
run "8 --resume q.st --memory-budget 0.0001 (the issue's case)" 1 "checkpointing needs at least" -- \
    "$BPTT" train --resume q.st --epochs 2 --memory-budget 0.0001
run "8 resume with a budget too small for a window, over --checkpoint 7" 1 "checkpointing needs at least" -- \
    "$BPTT" train --resume ck.st --epochs 2 --memory-budget 0.0001
run "8 train with --memory-budget 0.03" 0 "" -- "$BPTT" train $LONG --epochs 1 --memory-budget 0.03 --save mb.st
"$ST_COMPARE" mb.st mb.st --skip history --meta memory_budget_mb=0.029999999999999999 >cmp.txt 2>&1 ||
    { fail "8 --memory-budget not stored"; cat cmp.txt; }
run "8 resume with another spacing is allowed and said" 0 "--checkpoint" -- \
    "$BPTT" train --resume ck.st --epochs 2 --checkpoint sqrt
run "8 resume with a bad --checkpoint" 2 "use 'sqrt'" -- "$BPTT" train --resume ck.st --epochs 2 --checkpoint often

# ---- 9: long user strings, whole --------------------------------------------------------------
ZEROS=$(printf '0%.0s' $(seq 80))
TASK="adding:${ZEROS}20"
ADD="--cell linear --hidden 8 --batch 4 --optimizer adam:lr=0.01 --seed 5 --quiet"
run "9 a task spec of ${#TASK} characters" 0 "" -- "$BPTT" train --task "$TASK" $ADD --epochs 1 --save task.st
"$ST_COMPARE" task.st task.st --skip history --meta "task=$TASK" >cmp.txt 2>&1 || { fail "9 task spec not stored whole"; cat cmp.txt; }
run "9 resume the long task" 0 "epoch 2" -- "$BPTT" train --resume task.st --epochs 2 --save task2.st
run "9 the same task, straight" 0 "" -- "$BPTT" train --task "$TASK" $ADD --epochs 2 --save task3.st
"$ST_COMPARE" task2.st task3.st --skip history --atol 0 --rtol 0 >cmp.txt 2>&1 ||
    { fail "9 the resumed long task differs"; cat cmp.txt; }
# Long, though each of its items is within the option grammar's 127 bytes.
Z60=$(printf '0%.0s' $(seq 60))
OPT="adam:lr=0.02$Z60,beta1=0.9$Z60,beta2=0.999$Z60,eps=1e-8,weight_decay=0.0$Z60"
run "9 an optimizer spec of ${#OPT} characters" 0 "" -- \
    "$BPTT" train --data text.txt --hidden 8 --batch 4 --steps 8 --seed 3 --quiet --optimizer "$OPT" --epochs 1 --save opt.st
run "9 resume restating it" 0 "" -- "$BPTT" train --resume opt.st --optimizer "$OPT" --epochs 2
D=deep
for _ in $(seq 12); do D="$D/$(printf 'd%.0s' $(seq 95))"; done
mkdir -p "$D" && cp text.txt "$D/text.txt"
run "9 a data path of $(( ${#D} + 9 )) characters" 0 "" -- "$BPTT" train --data "$D/text.txt" $SMALL --epochs 1 --save deep.st
run "9 resume finds the long path" 0 "epoch 2" -- "$BPTT" train --resume deep.st --epochs 2

# ---- 10: a crafted checkpoint ---------------------------------------------------------------
# An older-format file (no checksums, so the settings are what is checked)
# claiming hidden 20000 over tensors of hidden 8.
OLD='"format": "bptt-lm-1", "checksum_header": null, "checksum_data": null'
st_edit m0.st crafted.st "{$OLD, \"hidden\": \"20000\"}" || fail "10 could not write the crafted file"
run "10 resume a file claiming hidden 20000" 1 "hidden 20000.*param\.|param\..*hidden 20000" -- \
    bash -c "$LIMIT exec \"\$0\" train --resume crafted.st --epochs 2" "$BPTT"
run "10 generate from it" 1 "hidden 20000.*param\.|param\..*hidden 20000" -- \
    bash -c "$LIMIT exec \"\$0\" generate --model crafted.st --prefix the" "$BPTT"
st_edit m0.st crafted_b.st "{$OLD, \"batch\": \"9\"}"
run "10 a batch the carried state does not have" 1 "batch 9.*state\.0|state\.0.*batch 9" -- \
    "$BPTT" train --resume crafted_b.st --epochs 2

# ---- 11: budgets below a byte; non-finite grad input ------------------------------------------
run "11 --memory-budget 5e-7 (0.5 bytes)" 2 "one byte" -- "$BPTT" train --data text.txt $SMALL --epochs 1 --memory-budget 5e-7
run "11 grad --memory-budget 5e-7" 2 "one byte" -- "$BPTT" grad --cell rnn_tanh --params p.st --out g.st --memory-budget 5e-7
st_edit p.st pinf.st '{}' W_hh 3 -inf
st_edit p.st pnan.st '{}' h0 0 nan
run "11 grad refuses a -inf parameter" 1 "W_hh.*not finite" -- "$BPTT" grad --cell rnn_tanh --params pinf.st --out g.st
run "11 grad refuses a NaN in h0" 1 "h0.*not finite" -- "$BPTT" grad --cell rnn_tanh --params pnan.st --out g.st
[ -e g.st ] && fail "grad wrote an output for non-finite input"

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
