#!/usr/bin/env bash
# Rebuild service/viewer/vendor/ from the pinned, locked npm packages (docs/viewer.md):
#   bash service/viewer/vendor-src/vendor.sh
# `npm ci` installs exactly package-lock.json into a throwaway folder; the dist files the viewer
# loads and each package's licence are copied next to the page. The result is committed, so the
# product, its image and CI never need npm or a network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --omit=optional --no-audit --no-fund --silent)
rm -rf "$out" && mkdir -p "$out"
cp "$work/node_modules/uplot/dist/uPlot.esm.js" "$work/node_modules/uplot/dist/uPlot.min.css" "$out/"
cp "$work/node_modules/@niivue/niivue/dist/niivue.umd.js" "$out/"  # one file, its deps bundled
# the licence of every package installed (NiiVue's bundle carries its dependencies)
for dir in $(cd "$work/node_modules" && ls -d */ @*/*/ | grep -v '^@[^/]*/$'); do
  name="${dir%/}"
  licence="$(ls "$work/node_modules/$name" | grep -iE '^(licen[cs]e|copying)' | head -1 || true)"
  if [ -n "$licence" ]; then
    cp "$work/node_modules/$name/$licence" "$out/LICENSE-${name//\//-}.txt"
  elif [ "$name" = "@niivue/niivue" ]; then  # its npm package ships none: the repository's
    cp "$here/LICENSE-niivue.txt" "$out/LICENSE-@niivue-niivue.txt"
  else
    echo "no licence file in $name" >&2; exit 1
  fi
done
python "$here/colormap.py" > "$out/colormap.js"
ls -l "$out"
