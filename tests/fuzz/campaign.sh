#!/usr/bin/env bash
# campaign.sh: runs the libFuzzer targets (one per CPU at a time) and prints, per
# target, the executions, coverage (libFuzzer's cov: and ft:), the working
# corpus and the findings. Exit status 1 when any target found something.
#
#   tests/fuzz/campaign.sh MINUTES [TARGET...]       CPU-minutes per target
#   tests/fuzz/campaign.sh --seconds S [TARGET...]   S wall seconds per target (CI)
#
# Targets run FUZZ_JOBS at a time (default: one per CPU), each its whole
# budget; the table comes once all have run.
# Targets default to all five (fuzz_safetensors fuzz_checkpoint fuzz_spec
# fuzz_vocab fuzz_corpus). The build folder is $FUZZ_BUILD (default
# build-fuzz), configured and built here when missing (clang, ASan, UBSan).
# A CPU-minutes campaign runs each target in stretches until its CPU time
# reaches the budget, so a busy machine gets the same amount of fuzzing, only
# later. New inputs go to a working corpus in a temporary folder ($FUZZ_KEEP,
# if set, keeps it and starts from it next time); the committed seeds in
# tests/fuzz/corpus are read, never written (checked). Findings (crash-*,
# leak-*, oom-*, timeout-* inputs) are copied to $FUZZ_BUILD/fuzz-findings/
# with the log; reproduce one with $FUZZ_BUILD/tests/fuzz/TARGET FILE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
mode=cpu
if [ "${1:-}" = "--seconds" ]; then
    mode=wall
    shift
fi
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
budget=$(python3 -c "print(round($1 * (60 if '$mode' == 'cpu' else 1)))") # seconds
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_checkpoint fuzz_spec fuzz_vocab fuzz_corpus)

if [ ! -d "$build" ]; then
    CC=clang meson setup "$build" -Dfuzz=enabled -Db_sanitize=address,undefined -Db_lundef=false \
        >"$build.setup.log" 2>&1 || { cat "$build.setup.log"; exit 1; }
fi
ninja -C "$build" fuzz >"$build/fuzz-build.log" 2>&1 || { tail -40 "$build/fuzz-build.log"; exit 1; }

seeds_sum() { (cd "$here/corpus" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
seeds_before=$(seeds_sum)
work=$(mktemp -d)
# An interrupted campaign stops its fuzzers too: timeout gives each its own
# process group, so they would not see the terminal's signal.
kill_tree() { # PID: its descendants first, then itself
    local c
    for c in $(pgrep -P "$1" || true); do kill_tree "$c"; done
    kill -TERM "$1" 2>/dev/null || true
}
stop_jobs() { local p; for p in $(jobs -p); do kill_tree "$p"; done; }
trap 'stop_jobs; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
findings_dir=$build/fuzz-findings
# Sanitizer findings end the run with a report (UBSan is built not to recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# One libFuzzer run of target for `secs` wall seconds; appends its output to
# log and its CPU seconds to cpu; returns libFuzzer's status.
run_once() { # TARGET CORPUS ARTIFACTS SECS LOG
    local t=$1 corpus=$2 art=$3 secs=$4 log=$5 rc=0
    local args=(-max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -close_fd_mask=3
                -print_final_stats=1 -error_exitcode=1 -artifact_prefix="$art/"
                -dict="$here/$t.dict" "$corpus" "$here/corpus/$t")
    # A wall-clock bound in case one input outlives -max_total_time.
    /usr/bin/time -f '%U %S' -a -o "$work/$t.cpu" \
        timeout -k 10 $((secs + 120)) "$build/tests/fuzz/$t" "${args[@]}" >>"$log" 2>&1 || rc=$?
    return $rc
}

# A target's working corpus: kept in $FUZZ_KEEP if set, else temporary.
corpus_of() { # TARGET
    if [ -n "${FUZZ_KEEP:-}" ]; then echo "$FUZZ_KEEP/$1"; else echo "$work/corpus/$1"; fi
}

# One target's whole budget; its exit status and wall time go to $work/$t.rc.
fuzz_target() { # TARGET
    local t=$1 corpus art log rc=0 start=$SECONDS spent owed
    corpus=$(corpus_of "$t")
    art=$work/artifacts/$t
    log=$work/$t.log
    mkdir -p "$corpus" "$art"
    : >"$work/$t.cpu"
    if [ $mode = wall ]; then
        run_once "$t" "$corpus" "$art" "$budget" "$log" || rc=$?
    else
        # Stretches of at most the CPU time still owed, until it is spent.
        while :; do
            spent=$(awk '{s += $1 + $2} END {printf "%d", s}' "$work/$t.cpu")
            owed=$((budget - spent))
            [ $owed -ge 5 ] || break
            run_once "$t" "$corpus" "$art" "$owed" "$log" || { rc=$?; break; }
        done
    fi
    echo "$rc $((SECONDS - start))" >"$work/$t.rc"
}

# Its line of the table; the number of findings goes to $work/$t.found.
report_target() { # TARGET
    local t=$1 corpus art log rc wall cpu execs last cov ft files bytes found
    corpus=$(corpus_of "$t")
    art=$work/artifacts/$t
    log=$work/$t.log
    read -r rc wall <"$work/$t.rc" 2>/dev/null || { rc=1; wall=0; } # its job died early
    : >>"$log"
    : >>"$work/$t.cpu"
    cpu=$(awk '{s += $1 + $2} END {printf "%.0f", s}' "$work/$t.cpu")
    execs=$(awk '/^stat::number_of_executed_units/ {s += $2} END {print s + 0}' "$log")
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    found=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' \
            -o -name 'timeout-*' \) | wc -l)
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        found=1 # libFuzzer failed without leaving an input: the log says why
    fi
    if [ "$found" -gt 0 ]; then
        mkdir -p "$findings_dir/$t"
        cp "$art"/* "$log" "$findings_dir/$t/" 2>/dev/null || true
    fi
    echo "$found" >"$work/$t.found"
    printf '%-17s %8d %8d %11d %11d %6s %7s %16s %s\n' "$t" "$wall" "$cpu" "$execs" \
        $((execs / (cpu > 0 ? cpu : 1))) "${cov:-?}" "${ft:-?}" "$files/${bytes}b" \
        "$found$([ "$found" -gt 0 ] && echo " (see $findings_dir/$t)")"
    if [ "$found" -gt 0 ]; then
        { grep -E -m3 -A12 'invariant broken|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
            "$log" || true; } | head -40 | sed 's/^/    /'
    fi
}

# Each target is one single-threaded process: run $FUZZ_JOBS of them at once
# (default: one per CPU), so a 2-core CI machine fuzzes two targets at a time
# for the same time each. The table is printed once all have run.
jobs_max=${FUZZ_JOBS:-$(nproc)}
if ! [[ $jobs_max =~ ^[1-9][0-9]*$ ]]; then
    echo "campaign: FUZZ_JOBS must be a positive whole number, not '$jobs_max'" >&2
    exit 2
fi
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
        wait -n || true
    done
    fuzz_target "$t" &
done
wait
printf '%-17s %8s %8s %11s %11s %6s %7s %16s %s\n' target wall_s cpu_s executions execs/cpu_s cov ft \
    corpus findings
total_findings=0
for t in "${targets[@]}"; do
    report_target "$t"
    total_findings=$((total_findings + $(cat "$work/$t.found")))
done
if [ "$(seeds_sum)" != "$seeds_before" ]; then
    echo "campaign: the committed seed corpora in $here/corpus changed during the run" >&2
    exit 1
fi
[ "$total_findings" -eq 0 ]
