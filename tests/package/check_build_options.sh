#!/bin/sh
# check_build_options.sh — the build options of meson_options.txt do what they say:
#   - -Dtests=disabled configures with no test at all and builds the daemon;
#   - on a host without Criterion (its pkg-config file hidden), the default tests=auto
#     configures, leaves the Criterion suites out and builds the daemon, which runs;
#   - -Dtests=enabled on that host is an error that names Criterion;
#   - warnings are not errors by default (werror is for development and CI builds);
#   - without -fsanitize=fuzzer (gcc), fuzz=auto builds no fuzzer and fuzz=enabled is an error;
#   - -Dpaho_dir=PREFIX links the paho.mqtt.c under PREFIX, and the daemon loads it from there;
#     a relative path is refused.
#
#   tests/package/check_build_options.sh SOURCE_ROOT [MESON]
set -eu

src=$1
meson=${2:-meson}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-build-options.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0

fail() {
        echo "check_build_options: $*" >&2
        status=1
}

# Names of the targets (or tests) of a configured build directory, one per line.
names() {
        "$meson" introspect "--$2" "$1" |
                python3 -c 'import json, sys; [print(t["name"]) for t in json.load(sys.stdin)]'
}

setup() {
        dir=$1; shift
        "$meson" setup "$dir" "$src" "$@" > "$dir.log" 2>&1
}

# 1. tests=disabled: no test, no test program, the daemon is still a target.
if setup "$tmp/off" -Dtests=disabled; then
        names "$tmp/off" targets > "$tmp/off.targets"
        grep -qx outaged "$tmp/off.targets" || fail "tests=disabled: no outaged target"
        if grep -q '^test_' "$tmp/off.targets"; then fail "tests=disabled still builds test programs"; fi
        [ -z "$(names "$tmp/off" tests)" ] || fail "tests=disabled still defines tests: $(names "$tmp/off" tests | tr '\n' ' ')"
        echo "tests=disabled: configures, no tests"
else
        fail "meson setup -Dtests=disabled failed:"; cat "$tmp/off.log" >&2
fi

# 2. A host without Criterion: a pkg-config search path holding every .pc file of this
# machine but criterion.pc.
mkdir "$tmp/pc"
pc_path=$(pkg-config --variable pc_path pkg-config)
IFS=:
for d in $pc_path; do
        for f in "$d"/*.pc; do
                [ -e "$f" ] || continue
                case $(basename "$f") in criterion.pc) continue ;; esac
                [ -e "$tmp/pc/$(basename "$f")" ] || ln -s "$f" "$tmp/pc/"
        done
done
unset IFS
unset PKG_CONFIG_PATH
if PKG_CONFIG_LIBDIR=$tmp/pc pkg-config --exists criterion; then
        fail "could not hide criterion.pc from pkg-config"
fi

if PKG_CONFIG_LIBDIR=$tmp/pc setup "$tmp/auto"; then
        grep -q 'dependency criterion found: NO' "$tmp/auto/meson-logs/meson-log.txt" ||
                fail "tests=auto without Criterion: meson did not report criterion as missing"
        names "$tmp/auto" tests > "$tmp/auto.tests"
        if grep -qx agg "$tmp/auto.tests"; then fail "tests=auto without Criterion defines the Criterion suites"; fi
        grep -qx unit-file "$tmp/auto.tests" || fail "tests=auto without Criterion dropped the unit-file check"
        if PKG_CONFIG_LIBDIR=$tmp/pc "$meson" compile -C "$tmp/auto" -j 2 outaged > "$tmp/auto.compile" 2>&1 &&
           "$tmp/auto/outaged" --version > "$tmp/auto.version"; then
                echo "tests=auto without Criterion: configures and builds $(cat "$tmp/auto.version")"
        else
                fail "tests=auto without Criterion: the daemon does not build:"; cat "$tmp/auto.compile" >&2
        fi
        werror=$("$meson" introspect --buildoptions "$tmp/auto" |
                 python3 -c 'import json, sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "werror"][0])')
        [ "$werror" = False ] || fail "werror is $werror by default (expected off unless -Dwerror=true)"
else
        fail "meson setup without Criterion (tests=auto) failed:"; cat "$tmp/auto.log" >&2
fi

if PKG_CONFIG_LIBDIR=$tmp/pc setup "$tmp/on" -Dtests=enabled; then
        fail "tests=enabled without Criterion configured anyway"
elif ! grep -qi criterion "$tmp/on.log"; then
        fail "tests=enabled without Criterion failed without naming Criterion:"; cat "$tmp/on.log" >&2
else
        echo "tests=enabled without Criterion: refused, naming Criterion"
fi

# 3. Fuzzers: only with a compiler that has libFuzzer.
if [ -f "$tmp/auto/meson-logs/meson-log.txt" ] &&
   grep -q 'Checking if "libFuzzer (-fsanitize=fuzzer)" : links: NO' "$tmp/auto/meson-logs/meson-log.txt"; then
        if names "$tmp/auto" targets | grep -q '^fuzz_'; then fail "fuzz=auto builds fuzzers without libFuzzer"; fi
        if PKG_CONFIG_LIBDIR=$tmp/pc setup "$tmp/fuzz" -Dfuzz=enabled; then
                fail "fuzz=enabled configured with a compiler that lacks -fsanitize=fuzzer"
        else
                echo "fuzz=enabled without libFuzzer: refused"
        fi
fi

# 4. paho_dir: a prefix of its own (here links to the system's paho), linked and loaded.
lib=$(${CC:-cc} -print-file-name=libpaho-mqtt3as.so)
if [ -e "$lib" ]; then
        mkdir -p "$tmp/paho/include" "$tmp/paho/lib"
        for h in /usr/include/MQTT*.h; do ln -s "$h" "$tmp/paho/include/"; done
        for l in "$(dirname "$(readlink -f "$lib")")"/libpaho-mqtt3as.so*; do ln -s "$l" "$tmp/paho/lib/"; done
        if setup "$tmp/pd" -Dtests=disabled -Dman=disabled "-Dpaho_dir=$tmp/paho" &&
           "$meson" compile -C "$tmp/pd" outaged > "$tmp/pd.compile" 2>&1; then
                loaded=$(ldd "$tmp/pd/outaged" | sed -n 's/.*libpaho-mqtt3as[^ ]* => \([^ ]*\).*/\1/p')
                case $loaded in
                "$tmp/paho/lib/"*) echo "paho_dir: linked and loaded from $loaded" ;;
                *) fail "paho_dir: the daemon loads paho from '$loaded', not $tmp/paho/lib" ;;
                esac
                "$tmp/pd/outaged" --version > /dev/null || fail "paho_dir: the daemon does not run"
        else
                fail "paho_dir: configure or build failed:"; cat "$tmp/pd.log" "$tmp/pd.compile" >&2
        fi
        if setup "$tmp/pr" -Dtests=disabled -Dman=disabled -Dpaho_dir=paho; then
                fail "paho_dir: a relative path was accepted"
        elif ! grep -q 'paho_dir must be an absolute path' "$tmp/pr.log"; then
                fail "paho_dir: a relative path failed without saying why:"; cat "$tmp/pr.log" >&2
        fi
else
        fail "paho_dir: no libpaho-mqtt3as.so to link ($lib)"
fi

exit $status
