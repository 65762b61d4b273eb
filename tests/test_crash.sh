#!/usr/bin/env bash
# test_crash.sh: what a crash, a signal or a full disk leaves of a training
# run (issue 12; suite crash). Each resume is compared with a run never
# interrupted, tensor by tensor with no tolerance (st_compare --atol 0 --rtol
# 0): parameters, optimizer state, RNG, carried state; the history holds
# timings, so it is left out.
#  - kill -9 at random moments of `train --save --every 1` (KILLS times, 20 at
#    least): the checkpoint, when one was written, always loads, and resuming
#    it gives the uninterrupted run's final checkpoint; the lock a killed run
#    leaves never blocks, and its temporaries are gone after the next save.
#  - SIGINT at random moments (most within an epoch): exit 130 and a
#    checkpoint that resumes to the same final checkpoint; SIGTERM: 143.
#  - two SIGINTs: exit 130 at once, nothing written.
#  - a full disk (a small tmpfs, mounted when running as root; otherwise
#    skipped with a message): the save fails with a clear message, the old
#    checkpoint stays byte for byte, no temporary is left.
# The moments are drawn from $RANDOM seeded with CRASH_SEED (printed), so a
# failure can be replayed.
#
#   test_crash.sh BPTT ST_COMPARE   (BPTT_PLUGIN_PATH set by meson)
set -u
set -m # background jobs keep SIGINT (a shell without job control ignores it for them)
BPTT=$1
ST_COMPARE=$2
case $BPTT in /*) ;; *) BPTT=$(pwd)/$BPTT ;; esac
case $ST_COMPARE in /*) ;; *) ST_COMPARE=$(pwd)/$ST_COMPARE ;; esac
KILLS=${CRASH_KILLS:-24}
SIGINTS=${CRASH_SIGINTS:-6}
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
echo "seed $SEED (CRASH_SEED=$SEED replays these moments)"
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

for _ in $(seq 40); do
    printf 'the time traveller sat by the fire. the doctor read the paper.\n'
    printf 'a dog ran to the log and the cat sat on the mat, watching.\n'
done >text.txt
EPOCHS=8
RUN="--data text.txt --hidden 96 --batch 4 --steps 35 --optimizer adam:lr=0.01 --seed 11 --quiet"

now() { date +%s.%N; }
# after T FRACTION_LOW FRACTION_HIGH: a random moment within [low, high] of T seconds.
after() { awk -v t="$1" -v a="$2" -v b="$3" -v r="$RANDOM" 'BEGIN { printf "%.3f", t * (a + (b - a) * r / 32767) }'; }
# same_as_reference FILE WHAT: FILE is the uninterrupted run's final checkpoint, bit for bit.
same_as_reference() {
    "$ST_COMPARE" "$1" ref.st --atol 0 --rtol 0 --skip history --meta epoch=$EPOCHS >cmp.txt 2>&1 ||
        { fail "$2: the resumed run differs from the uninterrupted one"; sed 's/^/    /' cmp.txt | grep -v "^    ok"; }
}

t0=$(now)
"$BPTT" train $RUN --epochs $EPOCHS --save ref.st >ref.txt 2>&1 || { fail "the reference run failed"; cat ref.txt; }
T=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
echo "reference run: $EPOCHS epochs in ${T}s"

# ---- kill -9 at random moments -----------------------------------------------------------------
compared=0 empty=0 mid_write=0 locks=0
for i in $(seq "$KILLS"); do
    rm -f ck.st ck.st.*
    "$BPTT" train $RUN --epochs $EPOCHS --save ck.st --every 1 >run.txt 2>&1 &
    pid=$!
    sleep "$(after "$T" 0.05 1.0)"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    ls ck.st.tmp.* >/dev/null 2>&1 && mid_write=$((mid_write + 1))
    [ -e ck.st.lock ] && locks=$((locks + 1))
    if [ ! -e ck.st ]; then
        empty=$((empty + 1)) # killed before its first save
        continue
    fi
    if ! "$BPTT" train --resume ck.st --epochs $EPOCHS --save ck.st >resume.txt 2>&1; then
        fail "kill $i: the checkpoint left by kill -9 does not resume"
        sed 's/^/    /' resume.txt | tail -5
        continue
    fi
    ls ck.st.tmp.* >/dev/null 2>&1 && fail "kill $i: temporaries left after the next save: $(ls ck.st.tmp.*)"
    [ -e ck.st.lock ] && fail "kill $i: the lock file outlived the resumed run"
    same_as_reference ck.st "kill $i"
    compared=$((compared + 1))
done
echo "kill -9: $KILLS runs killed, $compared resumed and compared bit for bit with the uninterrupted run," \
     "$empty killed before their first save, $mid_write killed while writing (a temporary left)," \
     "$locks left their lock file"
[ "$compared" -ge $((KILLS / 2)) ] || fail "only $compared of $KILLS kills left a checkpoint to resume"

# ---- SIGINT and SIGTERM: save within the epoch, resume exactly ------------------------------
within=0 sig_compared=0
for i in $(seq "$((SIGINTS + 1))"); do
    sig=INT want=130
    [ "$i" -gt "$SIGINTS" ] && sig=TERM want=143
    rm -f ck.st ck.st.*
    "$BPTT" train $RUN --epochs $EPOCHS --save ck.st --every 1000 >run.txt 2>&1 &
    pid=$!
    sleep "$(after "$T" 0.2 0.8)"
    kill -$sig $pid 2>/dev/null
    wait $pid
    rc=$?
    if [ "$rc" = 0 ] && grep -q "^done:" run.txt; then
        echo "SIG$sig $i: the run finished first"
        continue
    fi
    if [ "$rc" != $want ]; then
        fail "SIG$sig $i: exit status $rc, expected $want"
        sed 's/^/    /' run.txt | tail -5
        continue
    fi
    grep -q "SIG$sig: stopped .* saved in ck.st" run.txt || { fail "SIG$sig $i: no message saying where the run is"; cat run.txt; }
    grep -q "minibatch" run.txt && within=$((within + 1))
    if ! "$BPTT" train --resume ck.st --epochs $EPOCHS --save ck.st >resume.txt 2>&1; then
        fail "SIG$sig $i: the checkpoint does not resume"
        sed 's/^/    /' resume.txt | tail -5
        continue
    fi
    same_as_reference ck.st "SIG$sig $i ($(grep -o 'stopped [^;]*' run.txt))"
    sig_compared=$((sig_compared + 1))
done
echo "SIGINT/SIGTERM: $sig_compared stops resumed and compared bit for bit, $within of them within an epoch"
[ "$within" -ge 1 ] || fail "no signal landed within an epoch"

# ---- a second Ctrl-C quits at once, unsaved ---------------------------------------------------
rm -f ck.st ck.st.*
"$BPTT" train $RUN --epochs $EPOCHS --save ck.st --every 1000 >run.txt 2>&1 &
pid=$!
sleep "$(after "$T" 0.3 0.3)"
kill -INT $pid
kill -INT $pid
wait $pid
rc=$?
if [ "$rc" = 130 ] && [ ! -e ck.st ]; then
    echo "ok: two SIGINTs: exit 130, nothing written"
else
    fail "two SIGINTs: exit status $rc$([ -e ck.st ] && echo ', and a checkpoint was written')"
    cat run.txt
fi

# ---- a full disk keeps the old checkpoint --------------------------------------------------
if [ "$(id -u)" != 0 ]; then
    echo "skip: full disk (mounting a small tmpfs needs root)"
elif ! mkdir mnt || ! mount -t tmpfs -o size=1m bptt-crash mnt 2>mount.txt; then
    echo "skip: full disk (cannot mount a tmpfs here: $(cat mount.txt))"
else
    MNT=$DIR/mnt
    "$BPTT" train $RUN --epochs 1 --save mnt/ck.st >run.txt 2>&1 || { fail "full disk: the first save failed"; cat run.txt; }
    cp mnt/ck.st kept.st
    avail=$(df --output=avail -k mnt | tail -1)
    dd if=/dev/zero of=mnt/fill bs=1k count=$((avail - 8)) 2>/dev/null
    "$BPTT" train --resume mnt/ck.st --epochs 2 --save mnt/ck.st >run.txt 2>&1
    rc=$?
    if [ "$rc" = 1 ] && grep -q "No space left on device" run.txt && grep -q "old file is untouched" run.txt; then
        echo "ok: full disk: $(grep -m1 'No space' run.txt)"
    else
        fail "full disk: exit status $rc, expected 1 with 'No space left on device'"
        cat run.txt
    fi
    cmp -s kept.st mnt/ck.st || fail "full disk: the old checkpoint changed"
    ls mnt/ck.st.tmp.* >/dev/null 2>&1 && fail "full disk: a temporary was left: $(ls mnt)"
    rm -f mnt/fill
    "$BPTT" train --resume mnt/ck.st --epochs 2 --save mnt/ck.st >run.txt 2>&1 ||
        { fail "full disk: with room again the run does not continue"; cat run.txt; }
    umount mnt && MNT=""
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed (seed $SEED)"
    exit 1
fi
echo "all checks passed"
