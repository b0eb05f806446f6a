#!/bin/sh
# check_alerts.sh — config/outaged-alerts.yml is valid (`promtool check rules`), every alert
# behaves as tests/package/alerts_test.yml expects (`promtool test rules`) and has a case
# there, and every outaged_* metric the rules name is one the daemon writes (a name in
# daemon/*.c; a histogram's _bucket, _sum and _count series count as its name).
#
#   tests/package/check_alerts.sh SOURCE_ROOT
set -eu

src=$1
rules=$src/config/outaged-alerts.yml
tests=$src/tests/package/alerts_test.yml
status=0

fail() {
        echo "check_alerts: $*" >&2
        status=1
}

# ---- Metric names ----
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-alerts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
grep -oh 'outaged_[a-z0-9_]*[a-z0-9]' "$src"/daemon/*.c "$src"/daemon/*.h | sort -u > "$tmp/daemon"
grep -v '^ *#' "$rules" | grep -o 'outaged_[a-z0-9_]*[a-z0-9]' | sort -u > "$tmp/rules"
n=0
while read -r m; do
        n=$((n + 1))
        grep -qx "$m" "$tmp/daemon" && continue
        base=$(echo "$m" | sed 's/_\(bucket\|sum\|count\)$//')
        [ "$base" != "$m" ] && grep -qx "$base" "$tmp/daemon" && continue
        fail "$m: named in $(basename "$rules") but the daemon writes no such metric (daemon/metrics.c)"
done < "$tmp/rules"
[ $status -ne 0 ] || echo "metrics: the $n names in the rules are the daemon's"

# ---- Every alert has a test case ----
sed -n 's/^ *- alert: *\([A-Za-z0-9]*\).*/\1/p' "$rules" | sort -u > "$tmp/alerts"
sed -n 's/^ *alertname: *\([A-Za-z0-9]*\).*/\1/p' "$tests" | sort -u > "$tmp/tested"
for a in $(comm -23 "$tmp/alerts" "$tmp/tested"); do fail "alert $a has no case in $(basename "$tests")"; done
for a in $(comm -13 "$tmp/alerts" "$tmp/tested"); do fail "$(basename "$tests") tests $a, which the rules do not define"; done

# ---- promtool ----
if ! command -v promtool > /dev/null; then
        echo "check_alerts: promtool not found (Debian package prometheus): rules not checked"
        [ $status -ne 0 ] || exit 77
        exit $status
fi
promtool check rules "$rules" || fail "promtool check rules failed"
promtool test rules "$tests" || fail "promtool test rules failed"
exit $status
