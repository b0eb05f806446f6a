#!/bin/sh
# check_diagram.sh — docs/diagram.svg was rendered from docs/diagram.puml as it is now: the
# SHA-256 that scripts/render-diagram records in the SVG is the source's. Needs no
# plantuml; when it fails, `meson compile -C build diagram` renders the SVG again.
#
#   tests/package/check_diagram.sh SOURCE_ROOT
set -eu

src=$1/docs/diagram.puml
svg=$1/docs/diagram.svg

[ -f "$src" ] || { echo "check_diagram: $src is missing" >&2; exit 1; }
[ -f "$svg" ] || { echo "check_diagram: $svg is missing: meson compile -C build diagram" >&2; exit 1; }
want=$(sha256sum < "$src" | cut -d' ' -f1)
have=$(head -c 4096 "$svg" | sed -n 's/.*<!-- rendered from diagram.puml sha256=\([0-9a-f]\{64\}\) -->.*/\1/p')
if [ -z "$have" ]; then
        echo "check_diagram: $svg does not say which source it was rendered from (not made by scripts/render-diagram?)" >&2
        exit 1
fi
if [ "$have" != "$want" ]; then
        echo "check_diagram: $svg is out of date: it was rendered from another version of diagram.puml." >&2
        echo "check_diagram: run 'meson compile -C build diagram' (needs plantuml) and commit both files" >&2
        exit 1
fi
python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$svg" ||
        { echo "check_diagram: $svg is not well-formed XML" >&2; exit 1; }
echo "diagram.svg: rendered from the current diagram.puml"
