#!/usr/bin/env bash
# Build the HTML documentation, executing every example, with warnings as errors.
#
#   docs/build.sh            # into docs/_build/html
#   docs/build.sh OUTDIR     # into OUTDIR
#
# Needs the docs extra: pip install -e ".[docs]".  Generated sources (the API stubs in
# docs/generated/ and the gallery in docs/auto_examples/) are rebuilt each time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/_build/html}"
python="${PYTHON:-python}"
if [ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then python="$here/../.venv/bin/python"; fi
rm -rf "$here/generated" "$here/auto_examples"
export CI="${CI:-1}"  # no progress bars in the build log
start=$(date +%s)
"$python" -m sphinx -W --keep-going -b html -d "$out/../doctrees" "$here" "$out"
echo "docs built in $(( $(date +%s) - start )) s: $out/index.html"
