#!/usr/bin/env bash
# Start JupyterLab as `make lab` does: loopback only, a token, nothing fetched from outside.
# Usage: lab.sh [PORT] [TOKEN]   (the browser tests call it with a free port and their own token)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-8888}"
TOKEN="${2:-$(python -c 'import secrets; print(secrets.token_hex(16))')}"
export JUPYTER_CONFIG_DIR="$PWD/.jupyter" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "JupyterLab: http://127.0.0.1:${PORT}/lab/tree/nbs?token=${TOKEN}"
exec jupyter lab --port="$PORT" --ServerApp.port_retries=0 --IdentityProvider.token="$TOKEN" \
  --ServerApp.default_url=/lab/tree/nbs
