#!/bin/sh
# check_unit.sh — checks the systemd unit: `systemd-analyze verify` reports nothing, the
# offline security review rates its exposure at 3.0 or below (SPEC section 7), and every
# command of an Exec*= line but the daemon's own comes from an Essential Debian package, so
# that it exists on a minimal Debian 12 root (verify only finds a missing binary on a host
# that happens to lack it). Works without systemd as PID 1. The unit is checked as a copy whose ExecStart= points at an
# existing binary, since the daemon is not installed where the unit expects it.
#
# verify also runs man(1) on each man: page of Documentation=: the pages given after the
# unit are looked up there (MANPATH), so they must be the ones the unit names; without
# pages the man: entries are not checked.
#
#   tests/check_unit.sh [UNIT_FILE [MAN_PAGE...]]   default: systemd/outaged.service
set -eu

unit=${1:-$(dirname "$0")/../systemd/outaged.service}
[ $# -eq 0 ] || shift
max_exposure=3.0
name=$(basename "$unit")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# Any existing executable will do for verify; keep the arguments as they are.
sed 's|^ExecStart=/usr/sbin/outaged |ExecStart=/bin/true |' "$unit" > "$tmp/$name"
grep -q '^ExecStart=/bin/true ' "$tmp/$name" || {
        echo "check_unit: no 'ExecStart=/usr/sbin/outaged ' line in $unit" >&2
        exit 1
}

if ! command -v systemd-analyze > /dev/null; then
        echo "check_unit: systemd-analyze not found (package systemd): skipped"
        exit 77
fi

man_check=--man=no
if [ $# -gt 0 ]; then
        for page in "$@"; do
                sect=${page##*.}
                mkdir -p "$tmp/man/man$sect"
                cp "$page" "$tmp/man/man$sect/"
        done
        man_check=--man=yes
        export MANPATH="$tmp/man"
fi

status=0
if ! systemd-analyze verify "$man_check" "$tmp/$name" > "$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
        echo "check_unit: systemd-analyze verify reported problems:" >&2
        cat "$tmp/verify.out" >&2
        status=1
else
        echo "verify: OK$([ "$man_check" = --man=yes ] && echo ", man pages found" || echo ", man pages not checked")"
fi

# The program of each Exec*= line (after the special prefixes), with its key.
exec_programs() {
        sed -n 's/^\(Exec[A-Za-z]*\)=[-@:+!]*\([^ ]*\).*/\1 \2/p' "$1"
}

# The package that ships path, also across the /usr merge (files are registered under the
# path the package uses, /bin/sh or /usr/bin/sh).
owner_package() {
        for p in "$1" "${1#/usr}" "/usr$1"; do
                dpkg-query -S "$p" 2>/dev/null | sed -n "s|^\([^ :]*\)\(:[^ ]*\)\{0,1\}: $p\$|\1|p" | head -n 1 | grep . && return 0
        done
        return 1
}

if command -v dpkg-query > /dev/null; then
        essential_ok=1
        exec_programs "$unit" > "$tmp/programs"
        while read -r key prog; do
                [ "$prog" = /usr/sbin/outaged ] && continue
                case $prog in
                /*) ;;
                *) echo "check_unit: $key=$prog: not an absolute path" >&2; essential_ok=0; continue ;;
                esac
                if ! pkg=$(owner_package "$prog"); then
                        echo "check_unit: $key=$prog: no Debian package ships it" >&2
                        essential_ok=0
                elif [ "$(dpkg-query -W -f='${Essential}' "$pkg")" != yes ]; then
                        echo "check_unit: $key=$prog: shipped by $pkg, which is not Essential: a minimal" \
                             "Debian root lacks it (use a program of an Essential package, or depend on $pkg)" >&2
                        essential_ok=0
                fi
        done < "$tmp/programs"
        if [ $essential_ok -eq 1 ]; then
                echo "commands: from Essential packages ($(cut -d' ' -f2 "$tmp/programs" | grep -v '^/usr/sbin/outaged$' | tr '\n' ' '| sed 's/ $//'))"
        else
                status=1
        fi
else
        echo "commands: not checked (no dpkg-query)"
fi

systemd-analyze security --offline=true --no-pager "$tmp/$name" > "$tmp/security.out" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' "$tmp/security.out")
if [ -z "$score" ]; then
        echo "check_unit: no exposure level in the security review:" >&2
        cat "$tmp/security.out" >&2
        exit 1
fi
if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
        echo "check_unit: exposure $score is above $max_exposure:" >&2
        grep '✗' "$tmp/security.out" >&2 || true
        status=1
else
        echo "security: exposure $score (at most $max_exposure)"
fi
exit $status
