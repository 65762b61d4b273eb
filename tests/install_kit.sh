#!/bin/sh
# install_kit.sh [SOURCE_DIR]: the out-of-tree kit, end to end. Configures a fresh
# build with a temporary --prefix, installs it, then builds docs/example-plugin
# using nothing but `pkg-config bptt` from that prefix, and loads the plugin (and
# an installed one) with a small program linked against the installed libbptt;
# builds and runs a small program with `pkg-config bptt-train`; checks that the
# core library needs nothing from the layers above it.
# Exit 0: the kit works; 77: a tool is missing (meson's "skipped"); else failure.
set -eu

src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
for tool in meson ninja cc pkg-config python3 readelf nm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install_kit: $tool not found, skipping"; exit 77; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/bptt_kit_XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
prefix=$work/prefix
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
for h in bptt.h bptt_op.h bptt_plugin.h registry.h options.h bptt_config.h corpus.h safetensors.h checkpoint.h lm.h; do
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
# shellcheck disable=SC2086 # pkg-config output is a list of flags
run plugin.log cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden $cflags \
    "$ex/signsgd.c" -o "$work/signsgd.so"
# shellcheck disable=SC2086
run try.log cc -std=c11 -O2 -Wall -Wextra -Werror $cflags "$ex/try_plugin.c" -o "$work/try_plugin" \
    $libs -lm "-Wl,-rpath,$libdir"
if readelf -d "$work/signsgd.so" | grep NEEDED | grep -q bptt; then
    fail "the example plugin links against libbptt; it should not need to"
fi
exported=$(nm -D --defined-only "$work/signsgd.so" | awk '{print $3}' | grep -v '^_' | tr '\n' ' ')
[ "$exported" = "bt_plugin_entry " ] || fail "the example plugin exports: $exported"

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
    -o "$work/train_kit" $tlibs "-Wl,-rpath,$libdir"
"$work/train_kit" "$work/vocab.safetensors" || fail "a program built with pkg-config bptt-train"

echo "== load and run the example plugin"
"$work/try_plugin" "$work/signsgd.so" "signsgd:lr=0.01,mu=0.9" || fail "signsgd plugin"
# A relative path works too (dlopen alone would search the library path).
(cd "$work" && ./try_plugin signsgd.so) || fail "signsgd plugin by relative path"
echo "== load an installed plugin"
"$work/try_plugin" "$plugindir/optim_adam.so" "adam:lr=0.05" || fail "installed adam plugin"
if [ -x "$prefix/bin/bptt" ] && "$prefix/bin/bptt" plugins --help >/dev/null 2>&1; then
    echo "== bptt plugins --plugin"
    "$prefix/bin/bptt" plugins --plugin "$work/signsgd.so" | grep -q signsgd || fail "bptt plugins --plugin"
fi
echo "install_kit: OK"
