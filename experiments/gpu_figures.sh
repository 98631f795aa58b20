#!/usr/bin/env bash
# The GPU figures of the README's performance section in one go, on a machine with a CUDA GPU:
# the exactness tests (on CUDA and the CPU), then the supernet benchmark at the paper's setting
# (F = 8, batch 2, 321x321, a weight and an architecture step): eager and from CUDA graphs
# (search.cuda_graphs), in each precision and variant, and the plain eq. 6 reference's weight
# step. Writes OUTDIR/gpu.txt (the GPU and the tests),
# OUTDIR/bench.log (the benchmarks' stderr) and OUTDIR/<variant>.json, and prints a table.
#
#     experiments/gpu_figures.sh OUTDIR
set -uo pipefail
out=${1:?usage: experiments/gpu_figures.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    python -m pytest -q -n 0 -p no:cacheprovider -W ignore tests/space/test_mixed.py \
        tests/space/test_supernet.py tests/search/test_graphs.py
} 2>&1 | tee "$out/gpu.txt"

bench() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$out/bench.log"
    timeout 300 python experiments/bench_supernet.py --device cuda --crop 321 "$@" \
        >"$out/$name.json" 2>>"$out/bench.log"
    echo "$name: exit $?"
}
bench fp32
bench fp32_graphs --cuda-graphs
bench bf16_graphs --precision bf16 --cuda-graphs
bench fp32_graphs_checkpoint --cuda-graphs --checkpoint
bench fp32_graphs_deterministic --cuda-graphs --deterministic
bench bf16_graphs_checkpoint --precision bf16 --cuda-graphs --checkpoint
bench bf16_graphs_pc4 --precision bf16 --cuda-graphs --partial-channels 4
bench fp32_reference --no-arch --reference

python - "$out" <<'EOF'
import json
import pathlib
import sys

rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        r = json.loads(path.read_text())
    except ValueError:
        print(f"{path.stem}: no result (see bench.log)")
        continue
    arch = r["arch_step_s"]
    rows.append(
        f"{path.stem:22} weight {r['weight_step_s'] * 1e3:7.1f} ms"
        + (f"  arch {arch * 1e3:7.1f} ms" if arch else "")
        + f"  reserved {r['peak_gpu_reserved_mib']:7.0f} MiB  allocated {r['peak_gpu_mib']:7.0f} MiB"
        + f"  {r['step_gflop_per_s']:7.0f} GFLOP/s ({100 * r['fraction_of_matmul_peak']:.2f}%)"
        + (f"  {r['projected_search_hours']:.2f} h" if "projected_search_hours" in r else "")
        + (f"  x{r['speedup_over_reference']:.1f} over eq. 6" if "speedup_over_reference" in r else "")
        + (f"  capture {r['capture_s']:.1f} s" if r.get("capture_s") else "")
    )
print("\n".join(rows))
EOF
