#!/usr/bin/env bash
# The full run's first GPU hour, as one prepared script: <= 5 minutes on one H100/H200.
#
#   bash bench/gpu_check.sh [--cpu] [OUT_DIR]          (OUT_DIR default: gpu_check_out)
#
# 1. dependencies: whatever the tree imports and the machine lacks (mup, pyyaml, tqdm, numpy) is
#    installed from wheels carried with the tree (bench/wheels, or $WINDTUNNEL_WHEELS) with
#    `pip install --no-index --find-links`; torch is never installed: the machine's own is used;
# 2. the 1.2B on one GPU at a reduced global batch: 4 micro-batches of 2 x 4096 tokens per step,
#    30 steps, stopped with a checkpoint at step 20 and resumed, then the same 30 steps uninterrupted
#    as the reference: tokens/s, MFU against the nominal dense bf16 peak (989.5 TFLOP/s on H100/H200
#    SXM) and against a measured bf16 matmul peak, peak memory against the estimate, and whether
#    the resumed losses continue the uninterrupted run's exactly (bench/full_run.py);
# 3. the fused-sweep ratio at width 256 (bench/fused_sweep.py).
#
# --cpu runs the same three steps at CPU size (the `cpu` target, 2 layers; the fused sweep at width
# 64 for 3 steps), so the script itself is tested without a GPU.
#
# Prepare the wheels once, on a machine with network access, for the GPU machine's Python:
#   python -m pip wheel --no-deps -w bench/wheels mup==1.0.0 tqdm     # pure Python
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d bench/wheels pyyaml numpy
# (bench/wheels is git-ignored; carry it with the tree to the GPU machine.)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
if [[ "${1:-}" == "--cpu" ]]; then MODE=cpu; shift; fi
OUT=${1:-gpu_check_out}
WHEELS=${WINDTUNNEL_WHEELS:-bench/wheels}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
START=$SECONDS
say() { echo "gpu_check [$((SECONDS - START)) s]: $*"; }

# --- 1. dependencies -------------------------------------------------------------------------
python -c "import torch" 2>/dev/null || { echo "gpu_check: no torch on this machine (it is never installed here)" >&2; exit 2; }
MISSING=$(python - <<'PY'
import importlib.util
need = {"mup": "mup", "yaml": "pyyaml", "tqdm": "tqdm", "numpy": "numpy"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PY
)
if [[ -n "$MISSING" ]]; then
    if [[ ! -d "$WHEELS" ]]; then
        echo "gpu_check: missing $MISSING and no wheel folder $WHEELS (see this script's header to prepare it)" >&2
        exit 2
    fi
    say "installing $MISSING from $WHEELS (no index, no dependencies: torch stays the machine's)"
    python -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps $MISSING
fi
say "$(python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"

# --- 2. the full run: speed, memory, checkpoint + resume ----------------------------------------
if [[ $MODE == gpu ]]; then
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "gpu_check: no CUDA device here; use --cpu to check the script on a CPU" >&2; exit 2; }
    FULL=(--target 1.2b --parallel ddp --ac off --attention auto --steps 30 --stop-at 20 --warmup 5
          --accum-per-gpu 4 --matmul-peak)
    FUSED=(--widths 256 --ks 8 --steps 20 --device cuda)
else
    FULL=(--cpu --parallel ddp --ac off --attention sdpa --steps 8 --stop-at 5 --warmup 2 --accum-per-gpu 2)
    FUSED=(--widths 64 --ks 8 --steps 3 --concurrency 1)
fi
say "full run: ${FULL[*]}"
python bench/full_run.py "${FULL[@]}" --reference --strict --json "$OUT/full_run.json" | tee "$OUT/full_run.txt"

# --- 3. the fused-sweep ratio -------------------------------------------------------------------
say "fused sweep: ${FUSED[*]}"
python bench/fused_sweep.py "${FUSED[@]}" | tee "$OUT/fused_sweep.txt"

# --- summary ------------------------------------------------------------------------------------
python - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
run = json.loads((out / "full_run.json").read_text())
r = run["results"][0]
mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a (no nominal peak for this device)"
vs = f", {r['mfu_vs_matmul_peak']:.1%} of the measured matmul peak ({run['matmul_tflops']:.0f} TFLOP/s)" \
    if r.get("mfu_vs_matmul_peak") is not None else ""
mem = (f"{r['peak_gib']:.1f} GiB measured, {r['estimate_gib']:.1f} GiB estimated "
       f"(ratio {r['estimate_gib'] / r['peak_gib']:.2f})") if r.get("peak_gib") else "not measurable on CPU"
ratios = re.findall(r"ratio ([0-9.]+)x", (out / "fused_sweep.txt").read_text())
print(f"summary: {run['device']}: {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu}{vs}")
print(f"summary: peak memory {mem}")
print(f"summary: resume: first resumed loss equal {r['first_step_equal']}, all equal {r['continues_exactly']}, "
      f"max relative difference {r['max_rel_diff']:.1e}")
print(f"summary: fused-sweep ratio {ratios[-1] if ratios else 'not found'}x")
PY
say "done"
