#!/bin/sh
# check_unit.sh — checks the systemd unit: `systemd-analyze verify` reports nothing, and the
# offline security review rates its exposure at 3.0 or below (SPEC section 7).
# Works without systemd as PID 1. The unit is checked as a copy whose ExecStart= points at an
# existing binary, since the daemon is not installed where the unit expects it.
#
#   tests/check_unit.sh [UNIT_FILE]     default: systemd/outaged.service beside this script
set -eu

unit=${1:-$(dirname "$0")/../systemd/outaged.service}
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

status=0
if ! systemd-analyze verify "$tmp/$name" > "$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
        echo "check_unit: systemd-analyze verify reported problems:" >&2
        cat "$tmp/verify.out" >&2
        status=1
else
        echo "verify: OK"
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
