"""Size, compute and memory of a config without building it, and the peak FLOP/s behind MFU.

Parameter counts come from the real `Transformer` built on the meta device (no allocation), so they
can never drift from the model. Memory and FLOPs are estimates with their assumptions stated here:

* weights, gradients and AdamW's two moments are fp32 (16 bytes per parameter): replicated on every
  GPU by DDP, split over the N GPUs by FSDP;
* FSDP also holds what it has gathered: the root (embedding and final norm) in fp32 and the blocks
  in bf16 (`training.precision`). With one micro-batch per GPU that is two blocks (the one computing
  and the one prefetched) plus one block's unsharded fp32 gradients before its reduce-scatter; with
  several, accumulation keeps every block gathered and every gradient unsharded in fp32 until the
  last micro-batch's backward (`training.wrapping`): 2 + 4 bytes per parameter, ~7 GiB at 1.2B;
* one GPU and DDP under bf16 without compile keep autocast's bf16 copy of every matrix from the
  forward to its backward (2 bytes per non-embedding parameter); compiled blocks recompute the cast
  in the backward instead of keeping it (inductor's partitioner), so none is counted then;
* bf16 autocast keeps the residual stream in fp32 and stores matmul inputs in bf16;
* attention is memory-efficient (flash-attn or SDPA's fused kernels): no (T x T) matrix is kept;
* the logits cost 16 bytes per token per vocabulary entry at the loss (bf16 logits, their fp32
  copy, the log-softmax, and the fp32 + bf16 gradients that exist at the start of the backward);
  with `model.loss_chunk_tokens` only one chunk's (12 bytes: bf16 logits, fp32 copy and softmax),
  plus the readout weight's fp32 gradient.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import ModelConfig, RunConfig

if TYPE_CHECKING:
    import torch

__all__ = ["ParamCount", "MemoryEstimate", "count_params", "memory_per_gpu", "flops_per_token", "run_flops",
           "peak_flops", "peak_tflops_for", "mfu", "PEAK_TFLOPS_BF16"]

# Dense bf16 tensor-core peak, TFLOP/s (no sparsity), by the exact name torch.cuda.get_device_name()
# gives, less the "NVIDIA " prefix. Exact, never a substring: "L4" must not match "L40", and the
# PCIe/NVL parts of H100/H200/H800 run slower than SXM. Override with WINDTUNNEL_PEAK_TFLOPS.
PEAK_TFLOPS_BF16: dict[str, float] = {
    "GB200": 2500.0, "B200": 2250.0,
    "H100 80GB HBM3": 989.5, "H100 SXM5 80GB": 989.5, "H100 PCIe": 756.0, "H100 NVL": 835.0,
    "H200": 989.5, "H200 NVL": 835.0, "GH200 480GB": 989.5, "GH200 144G HBM3e": 989.5,
    "H800": 989.5, "H800 PCIe": 756.0,
    "A100-SXM4-80GB": 312.0, "A100-SXM4-40GB": 312.0, "A100-PCIE-40GB": 312.0, "A100 80GB PCIe": 312.0,
    "A800-SXM4-80GB": 312.0, "A800 80GB PCIe": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
}


def peak_tflops_for(name: str) -> float | None:
    """The table's dense bf16 peak for a device name, matched exactly (None when unlisted).

    Example:
        >>> peak_tflops_for("NVIDIA L4"), peak_tflops_for("NVIDIA L40"), peak_tflops_for("NVIDIA H200 NVL")
        (121.0, 181.0, 835.0)
    """
    key = " ".join(name.split())
    key = key[len("NVIDIA "):] if key.startswith("NVIDIA ") else key
    return PEAK_TFLOPS_BF16.get(key)


@dataclass(frozen=True)
class ParamCount:
    """Parameters counted once (the tied readout shares the embedding)."""

    total: int
    non_embedding: int

    @property
    def embedding(self) -> int:
        return self.total - self.non_embedding


def count_params(cfg: ModelConfig) -> ParamCount:
    """Count the parameters of `cfg`'s model on the meta device: exact, instant, no memory.

    Example:
        >>> count_params(load_target("1.2b").model).non_embedding   # Xmodel-2: 1.151B
        1151485440
    """
    import torch  # the one function here that builds the model; the rest is arithmetic, torch-free

    from .parametrization import multipliers
    from .transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg, multipliers(cfg))
    return ParamCount(total=model.num_params(), non_embedding=model.num_params(non_embedding=True))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU at the configured micro-batch (see the module docstring for the assumptions)."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    gathered: float = 0.0   # FSDP: parameters gathered for compute (0 under DDP)
    unsharded_grads: float = 0.0  # FSDP: fp32 gradients before their reduce-scatter
    casts: float = 0.0      # one GPU / DDP, bf16 eager: autocast's bf16 copies of the matrices
    parallel: str = "ddp"
    gathered_what: str = ""  # what `gathered` holds, for tables

    @property
    def total(self) -> float:
        return (self.weights + self.grads + self.optimizer + self.activations + self.logits + self.gathered
                + self.unsharded_grads + self.casts)


def memory_per_gpu(cfg: RunConfig, *, nproc: int = 1, parallel: str | None = None) -> MemoryEstimate:
    """Estimate the training memory of one GPU among `nproc` (`parallel`: ddp or fsdp, default
    `train.parallel`; one GPU is never sharded).

    Example:
        >>> mem = memory_per_gpu(cfg)          # 1.2b, micro-batch 2 x 4096, bf16
        >>> round(mem.total / 2**30)           # GiB
        54
    """
    m, t = cfg.model, cfg.train
    parallel = "ddp" if nproc == 1 else (parallel or t.parallel)
    n = count_params(m).total
    tokens = t.batch_size * t.seq_len  # one micro-batch: activations of one at a time
    per_layer = _activation_bytes_per_token_layer(m, bf16=t.precision == "bf16")
    if m.activation_checkpointing:
        # each block keeps only its fp32 input; one block is recomputed at a time in the backward
        activations = tokens * (m.n_layers * 4 * m.d_model + per_layer)
    else:
        activations = tokens * m.n_layers * per_layer
    if m.loss_chunk_tokens:
        logits = 12.0 * min(m.loss_chunk_tokens, tokens) * m.vocab_size + 4.0 * m.vocab_size * m.d_model
    else:
        logits = 16.0 * tokens * m.vocab_size
    shard = nproc if parallel == "fsdp" else 1
    gathered = unsharded_grads = casts = 0.0
    what = ""
    bf16 = t.precision == "bf16"
    if parallel == "fsdp":
        root, block = n - m.n_layers * _block_params(m), _block_params(m)
        accumulating = t.grad_accum // nproc > 1  # micro-batches per GPU per step
        blocks = m.n_layers if accumulating else 2
        gathered = 4.0 * root + (2 if bf16 else 4) * blocks * block
        unsharded_grads = 4.0 * (root + m.n_layers * block if accumulating else block)
        what = "root + all blocks, kept across micro-batches" if accumulating else "root + 2 blocks"
    elif bf16 and not t.compile:
        casts = 2.0 * (n - m.vocab_size * m.d_model)
    return MemoryEstimate(weights=4.0 * n / shard, grads=4.0 * n / shard, optimizer=8.0 * n / shard,
                          activations=float(activations), logits=logits, gathered=gathered,
                          unsharded_grads=unsharded_grads, casts=casts, parallel=parallel, gathered_what=what)


def _block_params(m: ModelConfig) -> int:
    """Parameters of one block: attention and SwiGLU matrices, and the two norm gains."""
    attn = m.d_model * m.d_head * (2 * m.n_heads + 2 * m.kv_heads)
    return attn + 3 * m.d_model * m.d_ffn + (2 * m.d_model if m.norm_gain else 0)


def _activation_bytes_per_token_layer(m: ModelConfig, *, bf16: bool) -> int:
    """Bytes one block keeps for its backward, per token.

    fp32: the two RMSNorms keep their input and normalised output (4 x d). Matmul-side (bf16 under
    autocast): the two norm outputs cast for the matmuls (2d); q, k before and after RoPE and v
    (3d + 3 d_kv, counting q, k, v, out kept by the attention kernel); the attention output (d); and
    SwiGLU's gate, silu(gate), up and their product (4 d_ffn).
    """
    d, d_kv, f = m.d_model, m.kv_heads * m.d_head, m.d_ffn
    fp32_elems = 4 * d
    matmul_elems = 2 * d + 3 * d + 3 * d_kv + 4 * f
    return 4 * fp32_elems + (2 if bf16 else 4) * matmul_elems


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding matmul params + readout) + attention scores.

    MFU counts causal attention FLOPs: the QK^T and AV products over the unmasked half of the T x T
    scores, 6 L T d per token, half of PaLM's 12 L T d (which counts the masked half too). The
    embedding lookup is not a matmul and is not counted."""
    d, L = cfg.d_model, cfg.n_layers
    attn = d * cfg.d_head * (cfg.n_heads * 2 + cfg.kv_heads * 2)
    mlp = 3 * d * cfg.d_ffn
    matmul_params = L * (attn + mlp) + d * cfg.vocab_size  # the tied readout is a matmul too
    attention_scores = L * 2 * seq_len * d / 2  # QK^T and AV, causal so half, per token (fwd)
    return 6.0 * matmul_params + 6.0 * attention_scores


def run_flops(cfg: RunConfig, tokens: float) -> float:
    """Training FLOPs of `tokens` tokens (6N plus causal attention; `model.flops_per_token`)."""
    return flops_per_token(cfg.model, cfg.train.seq_len) * tokens


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device, or None when unknown (CPU, an unlisted GPU).

    `WINDTUNNEL_PEAK_TFLOPS` overrides the table (e.g. for a GPU it does not list).

    Example:
        >>> peak_flops("cpu") is None
        True
    """
    override = os.environ.get("WINDTUNNEL_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    import torch

    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    tflops = peak_tflops_for(torch.cuda.get_device_name(device))
    return tflops * 1e12 if tflops is not None else None


def mfu(*, flops_per_token: float, tokens_per_s: float, peak: float | None, n_devices: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the devices' summed peak; None without a peak.

    Example:
        >>> mfu(flops_per_token=7.6e9, tokens_per_s=65_000, peak=989.5e12)
        0.4992...
    """
    if not peak or not math.isfinite(tokens_per_s):
        return None
    return flops_per_token * tokens_per_s / (peak * n_devices)
