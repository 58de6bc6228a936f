"""What a reader calls each swept key: titles and axes must make sense without the spec.

    >>> label_of("train.lr")
    'peak learning rate (train.lr)'
"""

from __future__ import annotations

__all__ = ["LABELS", "label_of"]

LABELS = {
    "train.lr": "peak learning rate",
    "model.init_std": "init std",
    "model.hidden_init_std": "hidden init std",
    "model.emb_init_std": "embedding init std",
    "model.d_model": "width d_model",
    "model.scale_emb": "embedding multiplier",
    "model.scale_depth": "residual-branch scale",
    "model.dim_model_base": "muP base width",
    "model.parametrization": "parametrization",
    "model.attn_mult": "attention multiplier",
    "model.n_layers": "depth (layers)",
    "train.weight_decay": "weight decay",
    "train.batch_size": "batch size (sequences)",
    "train.warmup_steps": "warmup steps",
    "train.warmup_fraction": "warmup fraction",
    "train.steps": "training steps",
}


def label_of(key: str) -> str:
    """`peak learning rate (train.lr)`: a reader's name and the key it comes from."""
    name = LABELS.get(key)
    return f"{name} ({key})" if name else key
