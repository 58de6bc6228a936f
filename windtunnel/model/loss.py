"""Cross-entropy through the tied readout, a chunk of tokens at a time, never holding the full logits.

With a 65,280-token vocabulary, 8k tokens of fp32 logits are 2 GiB, and the plain loss keeps several
such tensors alive at once (bf16 logits, their fp32 copy, the log-softmax, the gradients). Here the
forward pass walks over the tokens in chunks: for each chunk it computes the logits, the loss and, at
once, the chunk's gradients with respect to the hidden states and the readout weight, then frees the
logits. The backward pass only scales the stored gradients by the incoming one. Peak extra memory:
one chunk of logits plus an fp32 gradient of the weight (the same idea as Liger's fused linear
cross-entropy, in plain torch).

Example:
    >>> loss = chunked_cross_entropy(h, weight, targets, scale=1 / m, chunk=4096)   # doctest: +SKIP
    >>> loss.backward()                     # h.grad and weight.grad as with the plain loss
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["chunked_cross_entropy"]


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, scale: float,
                          chunk: int) -> torch.Tensor:
    """Mean cross-entropy of logits = (h * scale) @ weight.T against `targets`, `chunk` tokens at a time.

    `h`: (..., d) hidden states, `weight`: (vocab, d), `targets`: (...) token ids. Equals
    `F.cross_entropy(F.linear(h * scale, weight).float().flatten(0, -2), targets.flatten())` in
    value and gradients (matmuls in the autocast dtype when autocast is on, softmax in fp32).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not torch.is_grad_enabled():  # evaluation: the loss alone, still chunk by chunk
        flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        dtype = _compute_dtype(h)
        total = sum(F.cross_entropy((flat_h[i:i + chunk] * scale).to(dtype) @ weight.to(dtype).t(),
                                    flat_t[i:i + chunk], reduction="sum").float() for i in range(0, len(flat_t), chunk))
        return total / len(flat_t)
    return _ChunkedCrossEntropy.apply(h, weight, targets, float(scale), int(chunk))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, scale, chunk):
        dtype = _compute_dtype(h)
        flat_h = h.reshape(-1, h.shape[-1])            # (N, d)
        flat_t = targets.reshape(-1)                   # (N,)
        n = flat_h.shape[0]
        w = weight.to(dtype)
        grad_h = torch.empty_like(flat_h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, n, chunk):
            x = (flat_h[start:start + chunk] * scale).to(dtype)         # (c, d)
            logits = (x @ w.t()).float()                                # (c, vocab), freed each chunk
            t = flat_t[start:start + chunk]
            total += F.cross_entropy(logits, t, reduction="sum")
            # d(mean loss)/d(logits) = (softmax - onehot) / N
            grad_logits = torch.softmax(logits, dim=-1)
            grad_logits[torch.arange(len(t), device=t.device), t] -= 1.0
            grad_logits = (grad_logits / n).to(dtype)
            del logits
            grad_h[start:start + chunk] = (grad_logits @ w).float().mul_(scale).to(grad_h.dtype)
            grad_w += (grad_logits.t() @ x).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.shapes = (h.shape, weight.dtype)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        h_shape, w_dtype = ctx.shapes
        return (grad_h.mul(grad_out).reshape(h_shape), grad_w.mul(grad_out).to(w_dtype), None, None, None)


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The matmul dtype the plain loss would get: autocast's when on, else the input's."""
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return h.dtype
