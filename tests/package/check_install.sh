#!/bin/sh
# check_install.sh — `meson install` into a temporary DESTDIR installs exactly the expected
# files: the daemon, the unit (whose ExecStart= and Documentation= name installed files),
# the configuration under sysconfdir (never overwritten by a later install), the man pages
# (which man renders without a warning), README.md and docs/ under the documentation
# directory and the example configurations under its examples/.
#
#   check_install.sh BUILD_ROOT SOURCE_ROOT SBINDIR CONFIG_FILE UNITDIR DOCDIR MANDIR MAN(yes|no) [MESON]
# Directories are absolute, as installed (without DESTDIR).
set -eu

build=$1 src=$2 sbindir=$3 config=$4 unitdir=$5 docdir=$6 mandir=$7 man=$8
meson=${9:-meson}
dest=$(mktemp -d "${TMPDIR:-/tmp}/check-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT INT TERM
status=0

fail() {
        echo "check_install: $*" >&2
        status=1
}

install_into() {
        if ! DESTDIR=$dest "$meson" install -C "$build" --no-rebuild --quiet > "$dest.log" 2>&1; then
                cat "$dest.log" >&2
                rm -f "$dest.log"
                echo "check_install: meson install failed" >&2
                exit 1
        fi
        rm -f "$dest.log"
}

install_into

# ---- The expected files, and nothing else ----
{
        echo "$sbindir/outaged"
        echo "$unitdir/outaged.service"
        echo "$config"
        echo "$docdir/README.md"
        for f in "$src"/docs/*; do echo "$docdir/docs/$(basename "$f")"; done
        for f in outaged.conf mosquitto.conf mosquitto.acl outaged-alerts.yml; do
                echo "$docdir/examples/$f"
        done
        if [ "$man" = yes ]; then
                echo "$mandir/man8/outaged.8"
                echo "$mandir/man5/outaged.conf.5"
        fi
} | sort > "$dest.expected"
(cd "$dest" && find . -type f -o -type l) | sed 's|^\.||' | sort > "$dest.found"
missing=$(comm -23 "$dest.expected" "$dest.found")
extra=$(comm -13 "$dest.expected" "$dest.found")
[ -z "$missing" ] || fail "not installed: $(echo $missing)"
[ -z "$extra" ] || fail "installed but not expected: $(echo $extra)"
[ -n "$missing$extra" ] || echo "installed: $(wc -l < "$dest.expected") files, as expected"
rm -f "$dest.expected" "$dest.found"

[ -x "$dest$sbindir/outaged" ] || fail "$sbindir/outaged is not executable"
cmp -s "$src/config/outaged.conf" "$dest$config" || fail "$config differs from config/outaged.conf"
if [ -x "$dest$sbindir/outaged" ] && ! "$dest$sbindir/outaged" --check-config -c "$dest$config" > /dev/null; then
        fail "the installed configuration does not pass --check-config"
fi

# ---- The unit names what was installed ----
unit=$dest$unitdir/outaged.service
if [ -f "$unit" ]; then
        grep -qx "ExecStart=$sbindir/outaged -c $config" "$unit" ||
                fail "the unit's ExecStart= is not '$sbindir/outaged -c $config': $(grep '^ExecStart=' "$unit")"
        # Installed with the Debian layout, the unit is the repository's, byte for byte.
        if [ "$sbindir" = /usr/sbin ] && [ "$config" = /etc/outaged/outaged.conf ] &&
           [ "$docdir" = /usr/share/doc/outaged ] && [ "$man" = yes ] &&
           ! cmp -s "$src/systemd/outaged.service" "$unit"; then
                fail "installed with --prefix=/usr --sysconfdir=/etc, the unit differs from systemd/outaged.service"
        fi
        docs=$(sed -n 's/^Documentation=//p' "$unit")
        [ -n "$docs" ] || fail "the unit has no Documentation="
        for d in $docs; do
                case $d in
                file:*)
                        [ -f "$dest${d#file:}" ] || fail "the unit's Documentation=$d is not installed" ;;
                man:*)
                        page=${d#man:}; name=${page%(*}; sect=${page#*(}; sect=${sect%)}
                        [ -f "$dest$mandir/man$sect/$name.$sect" ] ||
                                fail "the unit's Documentation=$d is not installed ($mandir/man$sect/$name.$sect)" ;;
                *)
                        fail "the unit's Documentation=$d is neither file: nor man:" ;;
                esac
        done
fi

# ---- The man pages render without a warning ----
if [ "$man" = yes ]; then
        for page in "$mandir/man8/outaged.8" "$mandir/man5/outaged.conf.5"; do
                [ -f "$dest$page" ] || continue
                if ! MANWIDTH=80 man --warnings -l "$dest$page" > "$dest.out" 2> "$dest.err"; then
                        fail "man -l $page failed: $(cat "$dest.err")"
                elif [ -s "$dest.err" ]; then
                        fail "man -l $page warns:"; cat "$dest.err" >&2
                elif ! grep -q '^NAME' "$dest.out"; then
                        fail "man -l $page shows no NAME section"
                fi
                rm -f "$dest.out" "$dest.err"
        done
        [ $status -ne 0 ] || echo "man pages: rendered without warnings"
fi

# ---- A second install keeps the operator's configuration, refreshes the example ----
echo "# changed by the operator" >> "$dest$config"
echo "# stale" >> "$dest$docdir/examples/outaged.conf"
install_into
tail -n 1 "$dest$config" | grep -qx "# changed by the operator" ||
        fail "a second meson install overwrote $config"
cmp -s "$src/config/outaged.conf" "$dest$docdir/examples/outaged.conf" ||
        fail "a second meson install did not refresh $docdir/examples/outaged.conf"
[ $status -ne 0 ] || echo "reinstall: $config kept, the example refreshed"

exit $status
