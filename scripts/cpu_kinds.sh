#!/usr/bin/env bash
# Runs a command once per CPU kind that this CPU can imitate other than its own, so float
# tolerances that only hold on one CPU show up here instead of on another machine.
#
#   bash scripts/cpu_kinds.sh PYTHON list           kinds to run here (one a line)
#   bash scripts/cpu_kinds.sh PYTHON run CMD ARG... CMD under each kind, with timings
#
# PYTHON is the interpreter whose torch decides the native kind:
# torch.backends.cpu.get_cpu_capability() with ATEN_CPU_CAPABILITY unset. The kinds, in
# order, are default < avx2 < avx512; every kind below the native one is run (AVX-512:
# default and avx2; AVX2, e.g. AMD EPYC without AVX-512: default; anything else, e.g. an
# ARM CPU: nothing, the main suite already covers its only kind).
#
# ATEN_CPU_CAPABILITY alone switches torch's own vectorised kernels (softmax, layer norm,
# reductions, CPU attention) but not the BLAS libraries, whose float32 matmuls round
# differently per instruction set too. Each kind therefore also caps those:
#   avx2:    MKL_ENABLE_INSTRUCTIONS=AVX2    ONEDNN_MAX_CPU_ISA=AVX2  OPENBLAS_CORETYPE=Haswell
#   default: MKL_ENABLE_INSTRUCTIONS=SSE4_2  ONEDNN_MAX_CPU_ISA=SSE41 OPENBLAS_CORETYPE=Nehalem
# (MKL: torch's float32 matmuls; oneDNN: its bf16 matmuls and convolutions; OpenBLAS:
# numpy's). Before running CMD under a kind, `run` prints what torch, MKL and oneDNN
# dispatch to, and stops if torch did not switch, so a setting that stopped working fails
# loudly instead of passing silently (MKL and oneDNN not switching is a warning: see below).
# What no variable can change: /proc/cpuinfo still lists this CPU's flags, so code that
# reads them (backbone_dtype: auto) decides as on this CPU.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 PYTHON list | PYTHON run CMD [ARG...]" >&2
    exit 2
fi
python=$1
action=$2
shift 2

native=$(env -u ATEN_CPU_CAPABILITY "$python" -c \
    'import torch; print(torch.backends.cpu.get_cpu_capability())')

kinds() {
    case $native in
        AVX512) echo default; echo avx2 ;;
        AVX2) echo default ;;
        *) ;;
    esac
}

kind_env() {  # the environment assignments of one kind
    case $1 in
        avx2) echo ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell ;;
        default) echo ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 OPENBLAS_CORETYPE=Nehalem ;;
        *) echo "unknown kind $1" >&2; return 1 ;;
    esac
}

# Prints what torch, MKL and oneDNN dispatch to under the current environment; fails unless
# torch's matches the kind ($1), warns if MKL's or oneDNN's does not.
check_dispatch() {
    local want=$1 report
    report=$(MKL_VERBOSE=1 ONEDNN_VERBOSE=1 "$python" - "$want" 2>&1 <<'EOF'
import sys

import torch

want = sys.argv[1]
capability = torch.backends.cpu.get_cpu_capability()
print(f"torch capability: {capability}")
a = torch.ones(8, 8)
a @ a  # MKL sgemm: MKL_VERBOSE names the instruction set
torch.nn.functional.conv2d(torch.ones(1, 64, 56, 56), torch.ones(64, 64, 3, 3))  # oneDNN names its ISA
sys.exit(0 if capability == want.upper() else 1)
EOF
    ) || { echo "$report" | grep -iv "^MKL_VERBOSE [A-Z]*GEMM\|^onednn_verbose.*exec" >&2
           echo "ATEN_CPU_CAPABILITY=$want did not change torch's dispatch" >&2; return 1; }
    local mkl onednn
    mkl=$(echo "$report" | grep -m1 "enabled processors" | grep -oE "architecture .* enabled processors" || true)
    onednn=$(echo "$report" | grep -o "isa:[^,]*" | head -1 || true)
    echo "  $(echo "$report" | grep '^torch capability') | MKL: ${mkl:-not reported} | oneDNN ${onednn:-isa: not reported}"
    # MKL documents its cap for Intel CPUs; elsewhere it may keep its own choice. That leaves
    # the run valid (torch's kernels did switch), so it is a warning, not a failure.
    case $want in
        avx2) [[ $mkl == *"AVX2"* && $onednn == *"AVX2"* ]] ;;
        default) [[ $mkl == *"SSE4.2"* && $onednn == *"SSE4.1"* ]] ;;
    esac || echo "warning: MKL / oneDNN did not report $want (MKL: '$mkl', oneDNN: '$onednn');" \
        "their matmuls run as on the native kind" >&2
}

case $action in
    list)
        kinds
        ;;
    run)
        [[ $# -ge 1 ]] || { echo "run needs a command" >&2; exit 2; }
        echo "native CPU kind: $native"
        mapfile -t todo < <(kinds)
        if [[ ${#todo[@]} -eq 0 ]]; then
            echo "no other CPU kind to imitate on this CPU; nothing to run"
            exit 0
        fi
        status=0
        summary=()
        for kind in "${todo[@]}"; do
            read -r -a assignments <<<"$(kind_env "$kind")"
            echo "=== CPU kind $kind: ${assignments[*]}"
            export "${assignments[@]}"
            check_dispatch "$kind"
            start=$SECONDS
            if "$@"; then result=passed; else result=FAILED; status=1; fi
            summary+=("$kind: $result in $((SECONDS - start)) s")
            unset ATEN_CPU_CAPABILITY MKL_ENABLE_INSTRUCTIONS ONEDNN_MAX_CPU_ISA OPENBLAS_CORETYPE
        done
        echo "=== CPU kinds (native $native): ${summary[*]}"
        exit $status
        ;;
    *)
        echo "unknown action $action (list or run)" >&2
        exit 2
        ;;
esac
