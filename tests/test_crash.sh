#!/usr/bin/env bash
# test_crash.sh: what a crash, a signal or a full disk leaves of a training
# run (issue 12; suite crash). Each resume is compared with a run never
# interrupted, exactly: every tensor byte for byte (st_compare --bitwise:
# parameters, optimizer state, RNG, carried state), the counters in the
# metadata (epoch, updates, optimizer steps), and the history's figures but
# its timings.
#  - kill -9 during `train --save --every 1` (CRASH_KILLS times, 21 by
#    default): a third at random moments, a third within 20 ms of a save's
#    start, a third while a save is being written. The checkpoint, when one
#    was written, always loads, and resuming it ends where the uninterrupted
#    run ends; the lock a killed run leaves never blocks, and its
#    temporaries are gone after the next save.
#  - SIGINT during training (CRASH_SIGINTS times, 5 by default, after a
#    random epoch, most within the next): exit 130, a message saying where
#    the run is, and a checkpoint that resumes to the same end; SIGTERM
#    once: exit 143, the same.
#  - two SIGINTs (the second while the minibatch under way still runs):
#    exit 130, nothing written, no temporary left. Without --save: exit
#    130 and a message that nothing is kept.
#  - a SIGINT after training, during the cleanup (raised by the preloaded
#    SHIM, tests/sigint_at_cleanup.c): the "done:" line is out, the
#    checkpoint whole.
#  - a SIGINT right after training ends, before the output is finished
#    (SHIM_LATE, tests/sigint_after_training.c): the run is not reported as
#    stopping, its "done:" line is out, exit 130.
#  - a full disk: a 4 MB tmpfs filled up (mounted when running as root and
#    allowed; otherwise skipped with a message), and a file-size limit
#    (RLIMIT_FSIZE, with SIGXFSZ ignored: write fails with EFBIG), which
#    needs no privilege: the save fails with a clear message and exit 1, the
#    old checkpoint stays byte for byte, no temporary is left, and with room
#    again the run continues.
# The moments are drawn from $RANDOM seeded with CRASH_SEED (printed), so a
# failure can be replayed. They follow the run's own epoch lines and files
# where they can, and fractions of a warm reference run's duration where
# they must, so a slow build or a busy machine gets the same spread.
#
#   test_crash.sh BPTT ST_COMPARE [SHIM [SHIM_LATE]]   (BPTT_PLUGIN_PATH set by meson)
set -u
set -m # background jobs keep SIGINT (a shell without job control ignores it for them)
BPTT=$1
ST_COMPARE=$2
SHIM=${3:-}
SHIM_LATE=${4:-}
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
case $SHIM in /* | "") ;; *) SHIM=$(pwd)/$SHIM ;; esac
case $SHIM_LATE in /* | "") ;; *) SHIM_LATE=$(pwd)/$SHIM_LATE ;; esac
KILLS=${CRASH_KILLS:-21}
SIGINTS=${CRASH_SIGINTS:-5}
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
echo "seed $SEED (CRASH_SEED=$SEED replays these moments); $KILLS kills, $SIGINTS SIGINTs"
DIR=$(mktemp -d /tmp/bptt-crash-XXXXXX)
MNT=""
cleanup() {
    [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
cd "$DIR" || exit 1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for _ in $(seq 80); do
    printf 'the time traveller sat by the fire. the doctor read the paper.\n'
    printf 'a dog ran to the log and the cat sat on the mat, watching.\n'
done >text.txt
EPOCHS=6
BASE="--data text.txt --hidden 192 --batch 4 --steps 35 --optimizer adam:lr=0.01 --seed 11"
RUN="$BASE --quiet"

now() { date +%s.%N; }
# after T FRACTION_LOW FRACTION_HIGH: a random moment within [low, high] of T seconds.
after() { awk -v t="$1" -v a="$2" -v b="$3" -v r="$RANDOM" 'BEGIN { printf "%.3f", t * (a + (b - a) * r / 32767) }'; }
# launch ARGS...: bptt with ARGS in the background, output in run.txt, pid in
# $pid. run.txt is emptied here first: the job's own redirection happens in
# the child, so a wait_for started at once could read the last run's lines
# (a SIGINT meant for epoch 2 once landed before training began).
launch() {
    : >run.txt
    "$BPTT" "$@" >run.txt 2>&1 &
    pid=$!
}
# wait_for PATTERN FILE PID: until a line of FILE matches or PID has ended
# (30 s at most); false if it never matched.
wait_for() {
    for _ in $(seq 3000); do
        grep -q "$1" "$2" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { grep -q "$1" "$2" 2>/dev/null; return; }
        sleep 0.01
    done
    return 1
}
# history FILE: the history's rows without the timing columns (tokens/s,
# seconds, elapsed), as text.
history() {
    python3 - "$1" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])["history"]
b, e = h["data_offsets"]
rows, cols = h["shape"]
v = struct.unpack("<%dd" % (rows * cols), raw[8 + n + b:8 + n + e])
for r in range(rows):
    print(" ".join(repr(v[r * cols + c]) for c in range(cols) if c not in (3, 8, 9)))
PY
}
meta() { # FILE KEY
    python3 -c 'import json, struct, sys; raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; print(json.loads(raw[8:8 + n])["__metadata__"][sys.argv[2]])' "$1" "$2"
}
# same_as_reference FILE WHAT: FILE ends where the uninterrupted run ended.
same_as_reference() {
    if ! "$ST_COMPARE" "$1" ref.st --bitwise --skip history --meta epoch=$EPOCHS \
         --meta updates="$REF_UPDATES" --meta optimizer_steps="$REF_STEPS" >cmp.txt 2>&1; then
        fail "$2: the resumed run differs from the uninterrupted one"
        grep -v "^ok" cmp.txt | sed 's/^/    /' | head -10
    elif [ "$(history "$1")" != "$REF_HISTORY" ]; then
        fail "$2: the resumed run's history differs from the uninterrupted one's"
        diff <(history "$1") <(echo "$REF_HISTORY") | sed 's/^/    /' | head -10
    else
        return 0
    fi
    return 1
}
# resume_and_compare WHAT: resumes ck.st to the end and compares it.
resume_and_compare() {
    if ! "$BPTT" train --resume ck.st --epochs $EPOCHS --save ck.st >resume.txt 2>&1; then
        fail "$1: the checkpoint does not resume"
        sed 's/^/    /' resume.txt | tail -5
        return 1
    fi
    ls ck.st.tmp.* >/dev/null 2>&1 && fail "$1: temporaries left after the next save: $(ls ck.st.tmp.*)"
    same_as_reference ck.st "$1"
}

# A first run fills the plugin cache, so the reference is timed warm.
"$BPTT" train $RUN --epochs 1 --save warm.st >/dev/null 2>&1 || fail "the warm-up run failed"
t0=$(now)
"$BPTT" train $RUN --epochs $EPOCHS --save ref.st >ref.txt 2>&1 || { fail "the reference run failed"; cat ref.txt; }
T=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
REF_UPDATES=$(meta ref.st updates)
REF_STEPS=$(meta ref.st optimizer_steps)
REF_HISTORY=$(history ref.st)
echo "reference run: $EPOCHS epochs in ${T}s, $REF_UPDATES updates"

# ---- kill -9 at random moments -----------------------------------------------------------------
compared=0 empty=0 mid_write=0 locks=0
for i in $(seq "$KILLS"); do
    rm -f ck.st ck.st.*
    # A third at any moment; a third within 20 ms of a save's start (an
    # epoch's line is printed just before it is saved); a third while a save
    # is under way (its temporary exists), after a random epoch but the first.
    launch train $BASE --epochs $EPOCHS --save ck.st --every 1
    case $((i % 3)) in
    1) sleep "$(after "$T" 0.1 1.05)" ;;
    2) wait_for "^epoch $((1 + RANDOM % (EPOCHS - 1)))/" run.txt $pid
       sleep "$(after 0.02 0 1)" ;;
    0) wait_for "^epoch $((2 + RANDOM % (EPOCHS - 3)))/" run.txt $pid
       while kill -0 $pid 2>/dev/null && ! compgen -G "ck.st.tmp.*" >/dev/null; do :; done ;;
    esac
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    ls ck.st.tmp.* >/dev/null 2>&1 && mid_write=$((mid_write + 1))
    [ -e ck.st.lock ] && locks=$((locks + 1))
    if [ ! -e ck.st ]; then
        empty=$((empty + 1)) # killed before its first save
        continue
    fi
    resume_and_compare "kill $i (at epoch $(meta ck.st epoch))" && compared=$((compared + 1))
done
echo "kill -9: $KILLS runs killed, $compared resumed and compared exactly with the uninterrupted run," \
     "$empty killed before their first save, $mid_write killed while writing (a temporary left)," \
     "$locks left their lock file"
[ "$compared" -ge $((KILLS / 2)) ] || fail "only $compared of $KILLS kills left a checkpoint that resumed exactly"

# ---- SIGINT and SIGTERM: save within the epoch, resume exactly ------------------------------
within=0 sig_compared=0
for i in $(seq "$((SIGINTS + 1))"); do
    sig=INT want=130
    [ "$i" -gt "$SIGINTS" ] && sig=TERM want=143
    rm -f ck.st ck.st.*
    # Within epoch K + 1 or so: the moment follows the epoch lines, not a
    # duration measured once (the machine's load changes).
    launch train $BASE --epochs $EPOCHS --save ck.st --every 1000
    wait_for "^epoch $((1 + RANDOM % (EPOCHS - 2)))/" run.txt $pid ||
        fail "SIG$sig $i: the run never finished an epoch"
    sleep "$(after "$T" 0 $(awk -v e=$EPOCHS 'BEGIN { print 0.9 / e }'))"
    kill -$sig $pid 2>/dev/null
    wait $pid
    rc=$?
    # A signal during the last minibatch comes too late to stop the run: it
    # finishes ("done:") and exits 128 + the signal to say one came.
    if { [ "$rc" = 0 ] || [ "$rc" = $want ]; } && grep -q "^done:" run.txt; then
        echo "SIG$sig $i: the run finished first"
        continue
    fi
    if [ "$rc" != $want ]; then
        fail "SIG$sig $i: exit status $rc, expected $want"
        sed 's/^/    /' run.txt | tail -5
        continue
    fi
    grep -q "SIG$sig: stopped .* saved in ck.st" run.txt || { fail "SIG$sig $i: no message saying where the run is"; cat run.txt; }
    grep -q "stopped in epoch .* after minibatch" run.txt && within=$((within + 1))
    resume_and_compare "SIG$sig $i ($(grep -o 'stopped [^;]*' run.txt))" && sig_compared=$((sig_compared + 1))
done
echo "SIGINT/SIGTERM: $sig_compared stops resumed and compared exactly, $within of them within an epoch"
[ "$within" -ge 1 ] || fail "no signal landed within an epoch"

# ---- a second Ctrl-C quits at once, unsaved ---------------------------------------------------
# Minibatches of about a second (32 x 200 steps at hidden 1024), so the
# second SIGINT surely arrives while the first minibatch still runs.
for _ in $(seq 3); do cat text.txt; done >long.txt
rm -f ck.st ck.st.*
launch train --data long.txt --hidden 1024 --batch 32 --steps 200 --epochs 20 --save ck.st \
    --every 1000 --quiet
wait_for "^training:" run.txt $pid || fail "two SIGINTs: the run never started training"
sleep 0.2
kill -INT $pid
wait_for "stopping after this minibatch" run.txt $pid || fail "two SIGINTs: the first one was not acknowledged"
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
if [ "$rc" = 130 ] && [ ! -e ck.st ] && ! ls ck.st.tmp.* >/dev/null 2>&1; then
    echo "ok: two SIGINTs: exit 130, nothing written"
else
    fail "two SIGINTs: exit status $rc$([ -e ck.st ] && echo ', and a checkpoint was written')"
    cat run.txt
fi

# ---- without --save: exit 130, and the message says nothing is kept ----------------------------
launch train $BASE --epochs $EPOCHS
wait_for "^epoch 1/" run.txt $pid || fail "SIGINT without --save: the run never finished an epoch"
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
if [ "$rc" = 130 ] && grep -q "without --save nothing is kept" run.txt; then
    echo "ok: SIGINT without --save: $(grep -o 'SIGINT: .*' run.txt)"
else
    fail "SIGINT without --save: exit status $rc, expected 130 and a message"
    cat run.txt
fi

# ---- a SIGINT raised by a preloaded shim at a moment timed signals rarely hit ---------------
# shim_run SHIM: one saved epoch of training with SHIM preloaded, in the
# background and waited for (a foreground child that dies of SIGINT makes
# bash act as if it had been interrupted itself); its exit status in $rc.
# A sanitized build wants its runtime first among the preloads; the shims
# are built with it, so the order check can go.
shim_run() {
    rm -f ck.st ck.st.* resume.txt
    LD_PRELOAD=$1 ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 \
        launch train $BASE --epochs 1 --save ck.st
    wait $pid
    rc=$?
}
# saved_whole: the run printed its "done:" line and left a whole checkpoint that loads.
saved_whole() {
    grep -q "^done: epoch 1, .*saved ck.st" run.txt && [ -s ck.st ] &&
        ! ls ck.st.tmp.* >/dev/null 2>&1 && "$BPTT" train --resume ck.st --epochs 1 >resume.txt 2>&1
}

# During the cleanup after a saved run (timed signals land there rarely, once
# in CI): what it printed is out. 130: the shim's signal arrived (exit 0
# would mean it never fired).
if [ -n "$SHIM" ]; then
    shim_run "$SHIM"
    if [ "$rc" = 130 ] && saved_whole; then
        echo "ok: SIGINT during the cleanup: exit $rc, $(grep -o '^done: epoch 1' run.txt), the checkpoint loads"
    else
        fail "SIGINT during the cleanup: exit status $rc, or no 'done:' line, or no whole checkpoint"
        cat run.txt resume.txt 2>/dev/null | sed 's/^/    /'
    fi
fi

# Right after training: the finished run is not "stopping", nor saved again.
if [ -n "$SHIM_LATE" ]; then
    shim_run "$SHIM_LATE"
    if [ "$rc" = 130 ] && grep -q "bptt train: training has ended" run.txt &&
        ! grep -q "stopping after this minibatch\|SIGINT: stopped\|the run is saved in" run.txt &&
        saved_whole; then
        echo "ok: SIGINT right after training: exit $rc, $(grep -o 'training has ended[^(]*' run.txt)"
    else
        fail "SIGINT right after training: exit status $rc, no 'done:' line, the wrong message, or no whole checkpoint"
        cat run.txt resume.txt 2>/dev/null | sed 's/^/    /'
    fi
fi

# ---- a full disk keeps the old checkpoint --------------------------------------------------
# full_disk WHAT DIR PREFIX...: DIR/ck.st holds one epoch; a resume to epoch 2
# run through PREFIX (a command that makes writing fail) must fail cleanly.
full_disk() {
    local what=$1 dir=$2
    shift 2
    "$BPTT" train $RUN --epochs 1 --save "$dir/ck.st" >run.txt 2>&1 || { fail "$what: the first save failed"; cat run.txt; return; }
    cp "$dir/ck.st" kept.st
    "$@" "$BPTT" train --resume "$dir/ck.st" --epochs 2 --save "$dir/ck.st" >run.txt 2>&1
    local rc=$?
    if [ "$rc" = 1 ] && grep -q "$FULL_MESSAGE" run.txt && grep -q "old file is untouched" run.txt; then
        echo "ok: $what: $(grep -m1 "$FULL_MESSAGE" run.txt)"
    else
        fail "$what: exit status $rc, expected 1 with '$FULL_MESSAGE' and the old file untouched"
        cat run.txt
    fi
    cmp -s kept.st "$dir/ck.st" || fail "$what: the old checkpoint changed"
    ls "$dir"/ck.st.tmp.* >/dev/null 2>&1 && fail "$what: a temporary was left: $(ls "$dir")"
}
size_kb=$(($(stat -c %s ref.st) / 1024))
if [ "$(id -u)" != 0 ]; then
    echo "skip: full tmpfs (mounting one needs root)"
elif ! mkdir mnt || ! mount -t tmpfs -o size=4m bptt-crash mnt 2>mount.txt; then
    echo "skip: full tmpfs (cannot mount a tmpfs here: $(cat mount.txt))"
else
    MNT=$DIR/mnt
    fill() { # leaves a third of a checkpoint free, then runs "$@"
        local avail
        avail=$(df --output=avail -k mnt | tail -1)
        dd if=/dev/zero of=mnt/fill bs=1k count=$((avail - size_kb / 3)) 2>/dev/null
        "$@"
    }
    FULL_MESSAGE="No space left on device"
    full_disk "full disk" mnt fill
    rm -f mnt/fill
    "$BPTT" train --resume mnt/ck.st --epochs 2 --save mnt/ck.st >run.txt 2>&1 ||
        { fail "full disk: with room again the run does not continue"; cat run.txt; }
    umount mnt && MNT=""
fi
# A file-size limit below the checkpoint's size: write(2) fails with EFBIG.
mkdir lim
limited() { (trap '' XFSZ; ulimit -f $((size_kb / 2)); exec "$@"); }
FULL_MESSAGE="File too large"
full_disk "file-size limit" lim limited

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed (seed $SEED)"
    exit 1
fi
echo "all checks passed"
