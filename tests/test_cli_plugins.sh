#!/usr/bin/env bash
# test_cli_plugins.sh: misbehaving plugins through the real `bptt` binary
# (issue 12). Each case runs one command with one plugin of tests/plugins and
# expects an exit status and a message (grep -E) on stderr: the host survives
# every one and says what happened. With --table it also prints, per case,
# the plugin and the host's first line of stderr (the closing note's table).
#
#   test_cli_plugins.sh BPTT TEST_PLUGIN_DIR TEXT_FILE [--table]
set -u

BPTT=$1
DIR=$2
TEXT=$3
TABLE=${4:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
# A cache of this run's own, and a short time-out for hang_init.so.
export BPTT_PLUGIN_CACHE=$TMP/scan.cache
export BPTT_PLUGIN_SCAN_TIMEOUT=2

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# expect PLUGIN STATUS PATTERN CMD...: CMD exits with STATUS and stderr matches PATTERN.
expect() {
    local plugin=$1 want=$2 pattern=$3
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$plugin: exit $rc, expected $want"
        cat "$TMP/err"
    elif ! grep -Eq -- "$pattern" "$TMP/err"; then
        fail "$plugin: stderr does not match '$pattern':"
        cat "$TMP/err"
    else
        echo "ok   $plugin (exit $rc)"
    fi
    if [ -n "$TABLE" ]; then
        printf 'TABLE\t%s\t%s\t%s\n' "$plugin" "$rc" "$(grep -E -m1 -- "$pattern" "$TMP/err")"
    fi
}

plugins() { "$BPTT" plugins --plugin "$DIR/$1.so"; }
gradcheck() { "$BPTT" gradcheck --plugin "$DIR/$1.so" --cell "$1" --hidden 8; }
train() { # train PLUGIN [options]
    local p=$1
    shift
    "$BPTT" train --plugin "$DIR/$p.so" --data "$TEXT" --max-tokens 2000 --hidden 8 --batch 4 \
        --steps 5 --epochs 1 "$@"
}

# ---- crash, hang or exit while registering: refused after a scan process ------------
scan="registering it in a separate scan process"
expect crash_init 1 "$scan, it crashed with SIGSEGV \(segmentation fault\) in its init function" plugins crash_init
expect crash_entry_data 1 "crashed with SIGSEGV .* in its entry symbol bt_plugin_entry" plugins crash_entry_data
expect crash_bad_desc 1 "crashed with SIGSEGV .* while bptt read the descriptor" plugins crash_bad_desc
expect crash_ctor 1 "crashed with SIGBUS \(bus error\) while dlopen ran its constructors" plugins crash_ctor
expect crash_def_pointer 1 "crashed with SIGSEGV .* while bptt read a cell definition" plugins crash_def_pointer
expect crash_abort 1 "crashed with SIGABRT \(abort\) in its init function" plugins crash_abort
expect crash_term 1 "that process was ended by SIGTERM \(terminated\) in its init function; bptt did not load it this time" plugins crash_term
expect hang_init 1 "still running in its init function after 2 s \(a hang\?\), so bptt killed it" plugins hang_init
expect exit_init 1 "ended the process with exit status 3 in its init function" plugins exit_init

# ---- strings that never end -------------------------------------------------------------
expect str_name 1 "optimizer name 'x+\.\.\.' is invalid \(longer than 31 bytes, or not NUL-terminated\)" plugins str_name
expect str_summary 1 "has a summary that does not end within 255 bytes" plugins str_summary
expect str_summary_escape 1 "has a summary with control characters" plugins str_summary_escape
expect str_plugin_name 1 "has an invalid name 'x+\.\.\.' \(longer than 31 bytes" plugins str_plugin_name
expect str_version 1 "has a version string that does not end within 63 bytes" plugins str_version
expect str_init_err 1 "init failed: e{100}" plugins str_init_err
expect str_describe 1 "^bptt train: --optimizer endless_opt:fail: e{100}" train str_describe --optimizer endless_opt:fail
expect str_describe 1 "^bptt train: --truncation endless_policy:fail: e{100}" train str_describe --truncation endless_policy:fail
# describe() filled the buffer without a NUL: the header shows a bounded string.
train str_describe --optimizer endless_opt --truncation endless_policy >"$TMP/out" 2>&1 ||
    fail "str_describe: train failed: $(tail -n 2 "$TMP/out")"
line=$(grep -m1 "optimizer d" "$TMP/out")
if [ -z "$line" ] || [ ${#line} -gt 1200 ]; then
    fail "str_describe: header line missing or unbounded (${#line} bytes)"
else
    echo "ok   str_describe: describe shown in ${#line} bytes"
fi

# ---- cells that break their promises -------------------------------------------------
cell="the step of cell '%s' \(plugin [^)]*/%s.so\)"
c() { printf "$cell" "$1" "$1"; }
expect cell_step_null 2 "$(c cell_step_null) returned no output and reported no error" gradcheck cell_step_null
expect cell_step_null 1 "$(c cell_step_null) returned no output and reported no error" train cell_step_null --cell cell_step_null
expect cell_next_unset 2 "$(c cell_next_unset) left next_state\[0\] unset" gradcheck cell_next_unset
expect cell_next_wide 2 "$(c cell_next_wide) returned next_state\[0\] of shape \[2,16\], but states\(\) declared \[2,8\]" gradcheck cell_next_wide
expect cell_next_wide 1 "$(c cell_next_wide) returned next_state\[0\] of shape \[4,16\]" train cell_next_wide --cell cell_next_wide
expect cell_next_is_output 2 "$(c cell_next_is_output) returned next_state\[0\] of shape \[2,5\]" gradcheck cell_next_is_output
expect cell_output_width 2 "$(c cell_output_width) returned an output of shape \[2,8\] where \[2,5\]" gradcheck cell_output_width
expect cell_state_huge 1 "cell 'cell_state_huge' \(plugin [^)]*\).* more than the .* GiB this process may use" train cell_state_huge --cell cell_state_huge
expect cell_state_zero 2 "cell 'cell_state_zero' \(plugin [^)]*\), for input 5, hidden 8, output 5: states\(\) declared state 0 of width 0" gradcheck cell_state_zero
expect cell_state_count 2 "states\(\) declared 7 states; a cell has 1 to 4" gradcheck cell_state_count
expect cell_param_negative 2 "parameter 3 \('C'\) dimension 1 has size -5" gradcheck cell_param_negative
expect cell_param_name 2 "parameter 1 \('U{31}'\) has a name that does not end within 31 bytes" gradcheck cell_param_name
expect cell_param_huge 2 "1099511627864 parameter values .* more than the .* GiB this process may use" gradcheck cell_param_huge
expect cell_param_count 2 "params\(\) declared 17 parameters; a cell has 1 to 16" gradcheck cell_param_count
expect cell_param_error 2 "params\(\) refused these sizes: !{100}" gradcheck cell_param_error

# ---- a crashing and a hanging plugin on the search path: the host goes on -------------
mkdir "$TMP/folder"
cp "$DIR/crash_init.so" "$DIR/hang_init.so" "$TMP/folder/"
# The second run answers from the cache (test_misbehaving.c counts the scans).
for run in scanned cached; do
    BPTT_PLUGIN_PATH=$TMP/folder "$BPTT" plugins >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ "$rc" -ne 0 ] || ! grep -Eq "^cell +rnn_tanh " "$TMP/out"; then
        fail "search path ($run): exit $rc, shipped plugins not listed"
    elif ! grep -q "warning: cannot load plugin $TMP/folder/crash_init.so: $scan, it crashed with SIGSEGV" "$TMP/err" ||
         ! grep -q "cannot load plugin $TMP/folder/hang_init.so: $scan, it was still running" "$TMP/err"; then
        fail "search path ($run): warnings missing:"
        cat "$TMP/err"
    else
        echo "ok   search path ($run): shipped plugins listed, both refused with a warning"
    fi
done

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all misbehaving plugins refused with their messages"
