"""The model under evaluation: a windtunnel run folder or checkpoint, or a Hugging Face causal LM.

- a run folder (`runs/xs`): its newest checkpoint under `checkpoints/`, the model rebuilt from the
  run's `config.yaml`;
- a checkpoint file (`runs/xs/checkpoints/step_00000200.pt`): the model rebuilt from the config
  saved inside it (else from the run folder's `config.yaml`); read with `weights_only=True`;
- `hf:PATH_OR_NAME`: `transformers.AutoModelForCausalLM` and its tokenizer, from local files only
  (a folder, or a model already in the user's Hugging Face cache); needs the `hf` extra.

The tokenizer is the run's (its prepared data folder's `tokenizer.json`, or bytes) or the HF model's.
Evaluation runs on CUDA under bf16 autocast when a GPU is there, else on the CPU in fp32.

Example:
    >>> m = load_model("runs/xs")                          # doctest: +SKIP
    >>> m.logits(torch.tensor([[1, 2, 3]])).shape          # doctest: +SKIP
    torch.Size([1, 3, 256])
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import RunConfig, config_from_dict
from ..errors import WindtunnelError
from ..provenance import check_format
from ..run_folder import CHECKPOINT_DIR, config_path

__all__ = ["HF_PREFIX", "EvalModel", "load_model", "pick_device"]

HF_PREFIX = "hf:"


@dataclass
class EvalModel:
    """A causal LM ready to score tokens: `logits(ids)` maps (B, T) token ids to (B, T, vocab) logits."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    vocab_size: int
    max_seq_len: int
    device: torch.device
    encode: Callable[[str], np.ndarray]
    prefix_ids: list[int] = field(default_factory=list)  # prepended to every prompt (an HF model's BOS)
    config: RunConfig | None = None
    run_dir: Path | None = None
    checkpoint: Path | None = None

    @property
    def precision(self) -> str:
        return "bf16" if self.device.type == "cuda" else "fp32"

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a (B, T) batch of token ids (bf16 autocast on CUDA)."""
        amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
               else contextlib.nullcontext())
        with amp:
            return self.forward(ids.to(self.device)).float()

    def describe(self) -> dict[str, Any]:
        """What the reports record about the model."""
        return {"model": self.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "vocab_size": self.vocab_size, "max_seq_len": self.max_seq_len, "device": str(self.device),
                "precision": self.precision}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto": CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(spec: str | os.PathLike, *, device: str | torch.device | None = None) -> EvalModel:
    """Load a run folder, a checkpoint file or `hf:PATH_OR_NAME` for evaluation (see the module doc).

    Example:
        >>> load_model("runs/xs/checkpoints/step_00000200.pt").max_seq_len   # doctest: +SKIP
        128
    """
    dev = pick_device(device)
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return _load_hf(text[len(HF_PREFIX):], dev)
    path = Path(text).expanduser()
    if path.is_dir():
        from ..training.checkpoint_file import latest_checkpoint
        if not config_path(path).is_file():
            raise WindtunnelError(f"{path}: not a run folder; expected {config_path(path)} (or give a "
                                  "checkpoint file, or hf:PATH_OR_NAME)")
        check_format(path)  # a newer, unknown run-folder format: one line, not a misread
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise WindtunnelError(f"{path}: no checkpoint under {path / CHECKPOINT_DIR}; expected step_*.pt "
                                  "(the run kept no weights: train it with train.final_checkpoint true, the "
                                  "default outside sweeps)")
        return _load_windtunnel(ckpt, run_dir=path, device=dev)
    if not path.exists():
        raise WindtunnelError(f"{path}: no such run folder or checkpoint")
    return _load_windtunnel(path, run_dir=path.parent.parent, device=dev)


def _load_windtunnel(ckpt_path: Path, *, run_dir: Path, device: torch.device) -> EvalModel:
    from ..model.parametrization import build_model
    from ..training.checkpoint_file import load_checkpoint

    ckpt = load_checkpoint(ckpt_path, map_location="cpu")  # weights_only=True inside
    cfg = _run_config(ckpt, ckpt_path, run_dir)
    # base shapes only steer init and lr groups; the forward pass depends on the config's multipliers,
    # so shapes made in memory serve even where the run's .bsh file is not on this machine
    model_cfg = dataclasses.replace(cfg.model, base_shapes=None)
    model = build_model(model_cfg, seed=0, device="cpu", source=cfg.source)
    _load_weights(ckpt, model, source=str(ckpt_path))
    model.to(device).eval()
    return EvalModel(name=str(ckpt_path), forward=model, vocab_size=cfg.model.vocab_size,
                     max_seq_len=cfg.model.max_seq_len, device=device, encode=_run_tokenizer(cfg).encode,
                     config=cfg, run_dir=run_dir if config_path(run_dir).is_file() else None,
                     checkpoint=ckpt_path)


def _load_weights(ckpt: dict, model, *, source: str) -> None:
    """The weights only: no optimizer, and no RNG states (evaluating must not reseed the caller)."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise WindtunnelError(f"{source}: does not match its config ({' '.join(str(e).split())[:300]}); "
                              "expected weights of the model the config describes") from None


def _run_config(ckpt: dict, ckpt_path: Path, run_dir: Path) -> RunConfig:
    text, source = ckpt.get("config") or "", f"{ckpt_path} (its config)"
    if not text:
        config_file = config_path(run_dir)
        if not config_file.is_file():
            raise WindtunnelError(f"{ckpt_path}: holds no config and {config_file} does not exist; expected "
                                  "the run's config.yaml beside its checkpoints/ folder")
        text, source = config_file.read_text(encoding="utf-8"), str(config_file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WindtunnelError(f"{source}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise WindtunnelError(f"{source}: expected a mapping with model, train, data")
    return config_from_dict(data, source=source)


def _run_tokenizer(cfg: RunConfig):
    """The tokenizer of the run's data: its prepared folder's (first source of a mixture), else bytes."""
    from ..data.tokenizers import ByteTokenizer, load_tokenizer

    folder = cfg.data.path or (next(iter(cfg.data.sources.values())) if cfg.data.sources else None)
    if folder is None:
        return ByteTokenizer()
    if not Path(folder).is_dir():
        raise WindtunnelError(f"{cfg.source}: data.path: {folder} not found; the run's tokenizer lives in its "
                              "prepared data folder (meta.json, tokenizer.json)")
    return load_tokenizer(folder)


def _load_hf(name: str, device: torch.device) -> EvalModel:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise WindtunnelError(f"hf:{name}: needs the transformers package; install the extra with "
                              "pip install 'windtunnel[hf]'") from None
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:  # local files only: a folder, or the user's Hugging Face cache; never a download
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        raise WindtunnelError(f"hf:{name}: cannot load from local files ({' '.join(str(e).split())[:200]}); "
                              "expected a model folder or a model in the Hugging Face cache") from None
    model.to(device).eval()
    cfg = model.config
    max_len = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    prefix = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []

    def encode(text: str) -> np.ndarray:
        return np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    return EvalModel(name=f"hf:{name}", forward=lambda ids: model(input_ids=ids).logits,
                     vocab_size=int(cfg.vocab_size), max_seq_len=int(max_len), device=device,
                     encode=encode, prefix_ids=prefix)
