#!/usr/bin/env bash
# Install the all-MiniLM-L6-v2 capability plugin (editable) into a virtualenv.
#
#   plugins/anyserve-capability-minilm/install.sh [VENV]     (VENV defaults to .venv)
#
# Order matters: torch 2.13.0 (a CPU build) goes in first; the plugin install
# then runs under constraints.txt so nothing can swap torch for a CUDA build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv}"
pip="$venv/bin/pip"
[ -x "$pip" ] || { echo "install.sh: no pip at $pip (pass the virtualenv as \$1)" >&2; exit 2; }
start=$SECONDS
"$pip" install torch==2.13.0
"$pip" install -c "$here/constraints.txt" -e "$here"
echo "install.sh: installed anyserve-capability-minilm into $venv in $((SECONDS - start))s"
