#!/usr/bin/env bash
# Build llama.cpp's C++ OpenAI-compatible server (llama-server) for bench/llm_bench.py.
#
#   bench/build_llama_server.sh            # prints the binary's path on its last line
#   bench/build_llama_server.sh --check    # exit status 0 when built for this CPU, 1 when not; builds nothing
#
# The source is the llama.cpp vendored in llama-cpp-python==0.3.36's sdist: the same llama.cpp
# the in-replica engine plugin (anyserve-engine-llamacpp) runs, so both sides of the benchmark
# compute with the same kernels. The sdist comes from the package index with pip (no other
# download); the build is CPU-only, without curl, tests or examples:
#
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
#         -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
#   cmake --build build --target llama-server -j$(nproc)
#
# about 8-10 minutes on 2 cores. Everything lives in bench/.cache/llama-server/ (git-ignored);
# bench/.cache/llama-server/llama-server is a link to the binary (which loads its libggml*.so
# from the build folder beside it, so the build folder stays where it is). A second run finds
# the link and returns at once; remove the folder to rebuild. The build is tuned to this CPU
# (-march=native), so a folder carried to a machine with another CPU is rebuilt.
#
# Shortcut: when a llama-server built the same way already exists at $LLAMA_SERVER_PREBUILT
# (default: /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server, where a
# developer's machine may already hold one) and runs, the link points at it instead of building.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${LLAMA_SERVER_CACHE:-$here/.cache/llama-server}"
version=0.3.36
link="$cache/llama-server"
prebuilt="${LLAMA_SERVER_PREBUILT:-/tmp/llsrc/llama_cpp_python-$version/vendor/llama.cpp/build/bin/llama-server}"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || python=python3
mkdir -p "$cache"

works() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }
# Flags this machine needs beyond -march=native (AMX left out where it is advertised but faults).
flags="$(bash "$here/../plugins/anyserve-engine-llamacpp/cpu_flags.sh")"
# What the build was tuned to: `--version` runs anywhere, but the kernels stop on an instruction another CPU lacks.
cpu="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cksum) $flags"

if [ "${1:-}" = --check ]; then
    works "$link" && [ "$(cat "$cache/cpu" 2>/dev/null)" = "$cpu" ]
    exit
fi
if works "$link"; then
    if [ "$(cat "$cache/cpu" 2>/dev/null)" = "$cpu" ]; then
        echo "build_llama_server.sh: already built" >&2
        readlink -f "$link"
        exit 0
    fi
    echo "build_llama_server.sh: built for another CPU, or with other flags; building again" >&2
    rm -rf "$cache/llama_cpp_python-$version/vendor/llama.cpp/build" "$link"
fi
if works "$prebuilt"; then
    echo "build_llama_server.sh: using the llama-server already built at $prebuilt" >&2
    ln -sfn "$prebuilt" "$link"
    echo "$cpu" >"$cache/cpu"
    readlink -f "$link"
    exit 0
fi

start=$SECONDS
src="$cache/llama_cpp_python-$version"
if [ ! -d "$src" ]; then
    echo "build_llama_server.sh: [1/3] the llama-cpp-python==$version sdist (pip download)" >&2
    "$python" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$cache" >&2
    tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
fi
llama="$src/vendor/llama.cpp"
jobs="$(nproc 2>/dev/null || echo 2)"
echo "build_llama_server.sh: [2/3] cmake configure ($llama)" >&2
[ -z "$flags" ] || echo "build_llama_server.sh: this CPU advertises AMX but faults on it: building with $flags" >&2
cmake -S "$llama" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >"$cache/cmake.log" 2>&1 \
    || { tail -40 "$cache/cmake.log" >&2; exit 1; }
echo "build_llama_server.sh: [3/3] cmake --build --target llama-server -j$jobs (several minutes; log: $cache/build.log)" >&2
cmake --build "$llama/build" --target llama-server -j"$jobs" >"$cache/build.log" 2>&1 \
    || { tail -40 "$cache/build.log" >&2; exit 1; }
ln -sfn "$llama/build/bin/llama-server" "$link"
works "$link" || { echo "build_llama_server.sh: $link does not run" >&2; exit 1; }
echo "$cpu" >"$cache/cpu"
echo "build_llama_server.sh: built in $((SECONDS - start))s" >&2
readlink -f "$link"
