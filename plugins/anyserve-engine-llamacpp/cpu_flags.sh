#!/usr/bin/env bash
# The compiler flags llama.cpp needs on this machine beyond its own; prints nothing when none.
#
#   flags="$(bash plugins/anyserve-engine-llamacpp/cpu_flags.sh)"
#
# llama.cpp compiles for the CPU it is built on (-march=native). Some virtual machines advertise
# Intel AMX (amx_tile in /proc/cpuinfo) and grant its permission, yet fault on its instructions:
# llama.cpp built there stops with "Illegal instruction" at its first matrix product. So where
# the CPU advertises AMX, a tiny program runs one tile instruction; if that faults, this prints
# the flags that leave AMX out (used by install.sh and bench/build_llama_server.sh).
set -u
grep -qw amx_tile /proc/cpuinfo 2>/dev/null || exit 0
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/amx.c" <<'C'
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    unsigned char config[64];
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) return 1;
    memset(config, 0, sizeof config);
    config[0] = 1, config[16] = 64, config[48] = 16; /* palette 1, tile 0: 16 rows of 64 bytes */
    _tile_loadconfig(config);
    _tile_zero(0);
    _tile_release();
    return 0;
}
C
# A compiler without AMX support cannot emit it under -march=native either: nothing to leave out.
"${CC:-cc}" -O2 -mamx-tile "$dir/amx.c" -o "$dir/amx" 2>/dev/null || exit 0
# run by a shell of its own whose stderr goes nowhere: it is that shell that reports the fault
if ! bash -c '"$1"; exit $?' amx "$dir/amx" >/dev/null 2>&1; then
    echo "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
