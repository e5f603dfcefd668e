#!/usr/bin/env bash
# Build the docs site offline into docs/_build/html (`make docs` runs this with the venv on PATH).
# npm installs MathJax, require.js and the widget manager (docs/package-lock.json) once; build.py does the rest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
fi
exec python build.py "$@"
