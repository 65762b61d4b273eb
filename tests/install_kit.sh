#!/bin/sh
# install_kit.sh [SOURCE_DIR]: the out-of-tree kit, end to end. Configures a fresh
# build with a temporary --prefix, installs it, then builds docs/example-plugin
# (an optimizer, a cell, a truncation policy) using nothing but `pkg-config bptt`
# from that prefix, and loads the plugins (and an installed one) with a small
# program linked against the installed libbptt; the installed bptt
# gradient-checks the example cell, under the example policy too, and trains
# with both for an epoch; the example's own Makefile (`make check`) does the same;
# builds and runs a small program with `pkg-config bptt-train`; checks that the
# core library needs nothing from the layers above it. Then, with no
# environment variable set (no LD_LIBRARY_PATH, no BPTT_PLUGIN_PATH), the
# installed bptt runs the demo and lists only installed plugins, the README's
# C example builds with `pkg-config bptt` and runs, and no installed file
# contains the build tree's path.
# Exit 0: the kit works; 77: a tool is missing (meson's "skipped"); else failure.
set -eu

src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
for tool in meson ninja cc pkg-config python3 readelf nm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install_kit: $tool not found, skipping"; exit 77; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/bptt_kit_XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
prefix=$work/prefix
# Plugin scan verdicts of the kit's runs stay in the kit's folder, not ~/.cache.
BPTT_PLUGIN_CACHE=$work/plugins.cache
export BPTT_PLUGIN_CACHE
fail() { echo "install_kit: FAIL: $*" >&2; exit 1; }
run() { # run LOG CMD...: quiet unless it fails
    log=$1; shift
    "$@" >"$work/$log" 2>&1 || { cat "$work/$log" >&2; fail "$*"; }
}

echo "== configure and install $src into $prefix"
run setup.log meson setup "$work/build" "$src" --prefix "$prefix" -Dbuildtype=release
# Build only what gets installed, so a half-written test elsewhere in the tree
# does not stop the kit check.
targets=$(meson introspect "$work/build" --targets | python3 -c '
import json, os, sys
build = sys.argv[1]
for t in json.load(sys.stdin):
    if t.get("installed"):
        for f in t["filename"]:
            print(os.path.relpath(f, build))
' "$work/build")
# shellcheck disable=SC2086 # one target per word
run build.log ninja -C "$work/build" $targets
run install.log meson install -C "$work/build" --no-rebuild

pc=$(find "$prefix" -name bptt.pc | head -n 1)
[ -n "$pc" ] || fail "no bptt.pc under $prefix"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
cflags=$(pkg-config --cflags bptt) || fail "pkg-config --cflags bptt"
libs=$(pkg-config --libs bptt) || fail "pkg-config --libs bptt"
libdir=$(pkg-config --variable=libdir bptt)
plugindir=$(pkg-config --variable=plugindir bptt)
echo "== pkg-config: $cflags | $libs | plugindir $plugindir"
for h in bptt.h bptt_op.h bptt_plugin.h registry.h options.h vector_clones.h bptt_config.h corpus.h safetensors.h checkpoint.h lm.h; do
    [ -f "$prefix/include/bptt/$h" ] || fail "header $h not installed"
done
# Internal headers stay in the tree: the program's presentation (SVG charts),
# the UTF-8 codec, the weight-gradient batching.
for h in svg.h analysis_report.h utf8.h wgrad.h; do
    [ ! -e "$prefix/include/bptt/$h" ] || fail "internal header $h is installed"
done
for p in optim_sgd optim_momentum optim_adam; do
    [ -f "$plugindir/$p.so" ] || fail "plugin $p.so not installed in $plugindir"
done

echo "== build docs/example-plugin against the installed bptt"
ex=$src/docs/example-plugin
for p in signsgd mgu geoseg; do
    # shellcheck disable=SC2086 # pkg-config output is a list of flags
    run "plugin_$p.log" cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden \
        $cflags "$ex/$p.c" -o "$work/$p.so"
    if readelf -d "$work/$p.so" | grep NEEDED | grep -q bptt; then
        fail "the example plugin $p links against libbptt; it should not need to"
    fi
    exported=$(nm -D --defined-only "$work/$p.so" | awk '{print $3}' | grep -v '^_' | tr '\n' ' ')
    [ "$exported" = "bt_plugin_entry " ] || fail "the example plugin $p exports: $exported"
done
# The shipped optimizers are templates too: one builds from the installed
# headers alone (it uses vector_clones.h).
# shellcheck disable=SC2086
run plugin_sgd.log cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden \
    $cflags "$src/plugins/optim_sgd.c" -o "$work/optim_sgd.so"
# shellcheck disable=SC2086
run try.log cc -std=c11 -O2 -Wall -Wextra -Werror $cflags "$ex/try_plugin.c" -o "$work/try_plugin" \
    $libs -lm

echo "== the core links nothing from the layers above"
if readelf -d "$libdir/libbptt.so" | grep NEEDED | grep -Eq 'jansson|lapack|bptt-train'; then
    fail "libbptt needs: $(readelf -d "$libdir/libbptt.so" | grep NEEDED | tr -s ' ' | cut -d' ' -f6 | tr '\n' ' ')"
fi

echo "== build a training-layer program against the installed bptt-train"
cat >"$work/train_kit.c" <<'PROGRAM'
/* A corpus, its vocabulary stored in a safetensors file and read back. */
#include <stdio.h>
#include <string.h>

#include <corpus.h>
#include <safetensors.h>

int main(int argc, char **argv)
{
    char err[BT_ERRMSG_LEN] = "";
    const char *text = "the time traveller smiled";
    bt_corpus *c = NULL;
    bt_st_file *f = bt_st_new(), *g = NULL;
    bt_vocab *v = NULL;
    char *json = NULL;
    if (argc != 2 || !f ||
        bt_corpus_from_string(text, strlen(text), BT_TOKENS_CHARS, 0, &c, err, sizeof err) != BT_OK ||
        !(json = bt_vocab_to_json(c->vocab)) || bt_st_set_meta(f, "vocab", json) != BT_OK ||
        bt_st_write(f, argv[1], err, sizeof err) != BT_OK ||
        bt_st_read(argv[1], &g, err, sizeof err) != BT_OK ||
        bt_vocab_from_json(bt_st_meta(g, "vocab"), BT_TOKENS_CHARS, &v, err, sizeof err) != BT_OK ||
        !bt_vocab_equal(v, c->vocab)) {
        fprintf(stderr, "train_kit: %s\n", err);
        return 1;
    }
    printf("vocabulary of %d tokens stored and read back\n", bt_vocab_size(v));
    bt_free(json);
    bt_vocab_free(v);
    bt_st_free(g);
    bt_st_free(f);
    bt_corpus_free(c);
    return 0;
}
PROGRAM
tcflags=$(pkg-config --cflags bptt-train) || fail "pkg-config --cflags bptt-train"
tlibs=$(pkg-config --libs bptt-train) || fail "pkg-config --libs bptt-train"
# shellcheck disable=SC2086 # pkg-config output is a list of flags
run train_kit.log cc -std=c11 -O2 -Wall -Wextra -Werror $tcflags "$work/train_kit.c" \
    -o "$work/train_kit" $tlibs
"$work/train_kit" "$work/vocab.safetensors" || fail "a program built with pkg-config bptt-train"

echo "== load and run the example plugin"
"$work/try_plugin" "$work/signsgd.so" "signsgd:lr=0.01,mu=0.9" || fail "signsgd plugin"
# A relative path works too (dlopen alone would search the library path).
(cd "$work" && ./try_plugin signsgd.so) || fail "signsgd plugin by relative path"
"$work/try_plugin" "$work/geoseg.so" "geoseg:mean=6,min=2" || fail "geoseg plugin"
echo "== load an installed plugin"
"$work/try_plugin" "$plugindir/optim_adam.so" "adam:lr=0.05" || fail "installed adam plugin"
if [ -x "$prefix/bin/bptt" ] && "$prefix/bin/bptt" plugins --help >/dev/null 2>&1; then
    echo "== bptt plugins --plugin"
    "$prefix/bin/bptt" plugins --plugin "$work/signsgd.so" | grep -q signsgd || fail "bptt plugins --plugin"
fi
echo "== the installed files name no build-tree path"
if grep -r -l -F "$work/build" "$prefix" >"$work/leaks.txt" 2>/dev/null; then
    fail "installed files contain the build tree's path $work/build: $(tr '\n' ' ' <"$work/leaks.txt")"
fi

echo "== the installed bptt and the README's C example, with no environment help"
clean() { env -u LD_LIBRARY_PATH -u BPTT_PLUGIN_PATH -u PKG_CONFIG_PATH "$@"; }
listed=$(cd "$work" && clean "$prefix/bin/bptt" plugins) || fail "installed bptt plugins"
echo "$listed" | grep "file:" | grep -v -F "$plugindir/" &&
    fail "the installed bptt lists plugins from outside $plugindir"
echo "$listed" | grep -q "rnn_tanh" || fail "the installed bptt does not list rnn_tanh"
(cd "$work" && clean "$prefix/bin/bptt" demo --out "$work/demo" >"$work/demo.log" 2>&1) ||
    { tail -20 "$work/demo.log" >&2; fail "installed bptt demo"; }
[ -f "$work/demo/influence.svg" ] || fail "the installed demo wrote no influence.svg"
# shellcheck disable=SC2086 # pkg-config output is a list of flags
run example.log cc -std=c11 -O2 $cflags "$src/docs/example.c" -o "$work/example" $libs
clean "$work/example" | grep -q "loss" || fail "the README's C example built with pkg-config bptt"

echo "== the installed bptt checks and trains the example cell and policy"
for policy in fixed:2 geoseg:mean=3,min=1; do
    run "gradcheck_$policy.log" clean "$prefix/bin/bptt" gradcheck --plugin "$work/mgu.so" \
        --plugin "$work/geoseg.so" --cell mgu --truncation "$policy" --steps 10
    grep -q "^PASS" "$work/gradcheck_$policy.log" || fail "gradcheck mgu under $policy: no PASS"
done
i=0
: >"$work/text.txt"
while [ $i -lt 40 ]; do
    echo "the time traveller smiled at us. the fire burned brightly." >>"$work/text.txt"
    i=$((i + 1))
done
run train_example.log clean "$prefix/bin/bptt" train --plugin "$work/mgu.so" --plugin "$work/geoseg.so" \
    --cell mgu --truncation geoseg:mean=6,min=2 --data "$work/text.txt" --hidden 16 --batch 4 \
    --steps 16 --optimizer adam:lr=0.02 --epochs 1
grep -q "truncation geoseg:mean=6,min=2" "$work/train_example.log" || fail "train with the examples"
if command -v make >/dev/null 2>&1; then
    echo "== docs/example-plugin/Makefile: make check (in a copy of the folder)"
    mkdir "$work/make"
    cp "$ex"/*.c "$ex/Makefile" "$work/make/"
    run make.log env -u LD_LIBRARY_PATH -u BPTT_PLUGIN_PATH make -C "$work/make" check BPTT="$prefix/bin/bptt" CFLAGS="-O2 -Wall -Wextra -Werror"
else
    echo "== make not found: docs/example-plugin/Makefile not tried"
fi
echo "install_kit: OK"
