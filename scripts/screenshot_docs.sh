#!/usr/bin/env bash
# Screenshots of the built documentation in a real headless browser (Chromium):
# the landing page and one executed example.
#
#   scripts/screenshot_docs.sh [HTML_DIR] [OUT_DIR]
#
# HTML_DIR defaults to docs/_build/html (build it first with docs/build.sh); the PNGs go
# to OUT_DIR (default: a new temporary directory, printed at the end).  Chromium comes
# from the system (Debian/Ubuntu: apt-get update && apt-get install -y chromium).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
html="$(cd "${1:-$root/docs/_build/html}" && pwd)"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    echo "no Chromium found; install it (apt-get install -y chromium)" >&2
    exit 1
fi

shoot() {  # shoot PAGE PNG [HEIGHT]
    local profile
    profile="$(mktemp -d)"
    "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$profile" --virtual-time-budget=5000 \
        --screenshot="$2" --window-size="1280,${3:-1600}" "file://$1" >/dev/null 2>&1
    rm -rf "$profile"
    test -s "$2" || { echo "screenshot of $1 failed" >&2; exit 1; }
    echo "$2"
}

example="$(ls "$html"/auto_examples/plot_01_*.html 2>/dev/null | head -n 1)"
example="${example:-$(ls "$html"/auto_examples/plot_*.html | head -n 1)}"
shoot "$html/index.html" "$out/landing.png"
shoot "$example" "$out/example.png" 3200
shoot "$html/generated/kalmandiff.EnKGSolver.html" "$out/api_enkg.png"
