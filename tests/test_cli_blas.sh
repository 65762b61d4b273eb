#!/bin/sh
# test_cli_blas.sh: bptt runs on the BLAS kernel the CPU supports. Checked
# against blas_probe (the library alone, never re-executed): when OpenBLAS's
# own detection gives a generic kernel on a CPU with AVX2/AVX-512, `bptt`
# reports the better kernel, chosen and checked; otherwise OpenBLAS's own.
# A user's OPENBLAS_CORETYPE always wins. --threads sets the thread count.
# Usage: test_cli_blas.sh PATH/TO/bptt PATH/TO/blas_probe
set -u
BPTT=${1:?usage: test_cli_blas.sh BPTT BLAS_PROBE}
PROBE=${2:?usage: test_cli_blas.sh BPTT BLAS_PROBE}
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

unset OPENBLAS_CORETYPE BPTT_BLAS_KERNEL
set -- $("$PROBE")
own=$1 better=$2
echo "OpenBLAS alone: kernel $own; bptt would ask for: $better"
line=$("$BPTT" --version | grep "matrix products:")
echo "bptt --version: $line"
if "$BPTT" --version | grep -q "portable matrix products"; then
    echo "ok: portable build, nothing to choose"
    exit 0
elif [ "$better" != none ]; then
    case $line in
        *"kernel $better (chosen by bptt for this CPU (OpenBLAS detected $own) and checked)"*)
            echo "ok: generic $own replaced by $better" ;;
        *) fail "expected kernel $better chosen by bptt, got: $line" ;;
    esac
else
    case $line in
        *"kernel $own (OpenBLAS's own CPU detection)"*) echo "ok: OpenBLAS's own $own kept" ;;
        *) fail "expected OpenBLAS's own kernel $own, got: $line" ;;
    esac
fi

line=$(OPENBLAS_CORETYPE=Prescott "$BPTT" --version | grep "matrix products:")
case $line in
    *OpenBLAS*"kernel Prescott (from OPENBLAS_CORETYPE)"* | *portable*) echo "ok: the user's OPENBLAS_CORETYPE wins" ;;
    *) fail "OPENBLAS_CORETYPE=Prescott was overridden: $line" ;;
esac

line=$(BPTT_BLAS_KERNEL=rejected:SkylakeX:Prescott OPENBLAS_CORETYPE=Prescott "$BPTT" --version |
       grep "matrix products:")
case $line in
    *"SkylakeX failed bptt's product check"* | *portable*) echo "ok: a rejected kernel is reported" ;;
    *) fail "rejected kernel not reported: $line" ;;
esac

out=$("$BPTT" selfcheck --threads 1 2>&1)
echo "$out" | grep -q "^ok    matrix products: .*, 1 thread$" ||
    fail "selfcheck --threads 1 does not report one thread: $(echo "$out" | head -3)"
"$BPTT" selfcheck --threads 0x >/dev/null 2>&1
[ $? = 2 ] || fail "--threads 0x is not a usage error"

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all checks passed"
