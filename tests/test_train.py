"""The training loop on tiny configs: files, learning, determinism, divergence, accumulation, bf16, cadence."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml

import windtunnel.data.mixture as mixture_mod
import windtunnel.training.loop as train_mod
from windtunnel.config import load_config
from windtunnel.data.corpus import open_data
from windtunnel.data.token_folder import write_prepared
from windtunnel.errors import ConfigError
from windtunnel.training.loop import METRIC_FIELDS, train

SUMMARY_KEYS = {"status", "val_loss", "train_loss", "steps", "tokens", "seconds", "tokens_per_s", "params",
                "non_embedding_params", "flops_per_token", "width_mult", "device", "attention", "mfu",
                "world_size", "resumed_from", "decay_from", "parallel", "mfu_counts_causal_attention"}


def tiny(xs_path, tiny_overrides, *extra):
    return load_config(xs_path, overrides=[*tiny_overrides, "train.device=cpu", *extra])


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_config_metrics_and_summary(tmp_path, xs_path, tiny_overrides):
    cfg = tiny(xs_path, tiny_overrides)
    evals = []
    summary = train(cfg, out_dir=tmp_path / "run", on_eval=evals.append)
    run = tmp_path / "run"
    assert summary["status"] == "ok" and set(summary) == SUMMARY_KEYS
    assert json.loads((run / "summary.json").read_text()) == summary
    assert load_config(run / "config.yaml") == cfg
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["d_model"] == 32
    rows = read_metrics(run)
    assert list(rows[0]) == METRIC_FIELDS == ["step", "tokens", "lr", "loss", "val_loss", "seconds", "tokens_per_s",
                                             "mfu"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))  # log_every=1
    assert summary["steps"] == 12 and summary["tokens"] == 12 * 4 * 32 == int(rows[-1]["tokens"])
    assert summary["val_loss"] == pytest.approx(float(rows[-1]["val_loss"]))
    assert summary["width_mult"] == 1.0 and summary["device"] == "cpu"
    assert summary["params"] > summary["non_embedding_params"] > 0
    # the schedule: warmup 2 steps, then the peak, then the WSD decay to 0 at the end
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(0.005) and max(lrs) == pytest.approx(0.01) and lrs[-1] < lrs[5]
    assert [e["step"] for e in evals] == [6, 12] and evals[-1]["val_loss"] == summary["val_loss"]
    assert not list(run.glob(".*"))  # no temp files left
    # the library writes TensorBoard events by default, as `windtunnel train` does (a writer is installed here)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_eval_cadence_and_log_rows(tmp_path, xs_path, tiny_overrides):
    cfg = tiny(xs_path, tiny_overrides, "train.log_every=5", "train.eval_every=4", "train.steps=13")
    train(cfg, out_dir=tmp_path)
    rows = read_metrics(tmp_path)
    # a row every log_every steps, at every evaluation, and at the last step
    assert [int(r["step"]) for r in rows] == [4, 5, 8, 10, 12, 13]
    assert [int(r["step"]) for r in rows if r["val_loss"] != ""] == [4, 8, 12, 13]
    assert all(math.isfinite(float(r["val_loss"])) for r in rows if r["val_loss"] != "")


def test_short_run_learns_below_unigram_entropy(tmp_path, xs_path, tiny_overrides):
    # 60 steps of a 32-wide model: a model that learns nothing but byte frequencies sits at the
    # unigram entropy; one that uses context must be well below it.
    cfg = tiny(xs_path, tiny_overrides, "data.embedded_bytes=1000000", "train.steps=60", "train.eval_every=60",
               "train.eval_batches=8", "train.lr=0.03", "train.log_every=1")
    entropy = open_data(max_bytes=1_000_000).meta["unigram_entropy_nats"]
    summary = train(cfg, out_dir=tmp_path)
    first_loss = float(read_metrics(tmp_path)[0]["loss"])
    assert summary["status"] == "ok"
    assert first_loss > math.log(256) - 0.5  # starts near a uniform guess over bytes
    assert summary["val_loss"] < entropy - 0.3, (summary["val_loss"], entropy)


def test_same_seed_same_losses_other_seed_differs(tmp_path, xs_path, tiny_overrides):
    losses = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(tiny(xs_path, tiny_overrides, f"train.seed={seed}"), out_dir=tmp_path / name)
        losses[name] = [(r["loss"], r["val_loss"]) for r in read_metrics(tmp_path / name)]
    assert losses["a"] == losses["b"]
    assert [loss for loss, _ in losses["a"]] != [loss for loss, _ in losses["c"]]


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_divergence_is_recorded_not_raised(tmp_path, xs_path, tiny_overrides, parametrization):
    cfg = tiny(xs_path, tiny_overrides, "train.lr=1000", "train.grad_clip=null",
               f"model.parametrization={parametrization}")
    summary = train(cfg, out_dir=tmp_path)
    assert summary["status"] == "diverged" and summary["val_loss"] == math.inf
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["val_loss"] == math.inf
    rows = read_metrics(tmp_path)
    assert int(rows[-1]["step"]) == summary["steps"] < 12  # stopped at the step that diverged


class _SlicedSampler:
    """A fake BatchSampler: micro-batch k is rows [k*b, (k+1)*b) of one fixed pool of windows, so
    batch_size=B and (batch_size=B/2, grad_accum=2) see exactly the same sequences every step."""

    pool = None

    def __init__(self, tokens, *, batch_size, seq_len, seed):
        self.b = batch_size
        if _SlicedSampler.pool is None:
            gen = torch.Generator().manual_seed(0)
            _SlicedSampler.pool = torch.randint(0, 256, (64, seq_len + 1), generator=gen)

    def batch(self, k):
        rows = self.pool[k * self.b:(k + 1) * self.b]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def test_grad_accumulation_matches_a_full_batch(tmp_path, xs_path, tiny_overrides, monkeypatch):
    models, grads = {}, {}
    build_model, build_optimizer = train_mod.build_model, train_mod.build_optimizer

    def recording_optimizer(model, cfg, _name, **kw):
        opt = build_optimizer(model, cfg, **kw)  # record the gradients AdamW is about to use
        opt.register_step_pre_hook(lambda o, *_: grads.setdefault(_name, []).append(
            [p.grad.clone() for g in o.param_groups for p in g["params"]]))
        return opt

    monkeypatch.setattr(mixture_mod, "BatchSampler", _SlicedSampler)  # the single-source sampler
    for name, extra in (("full", ["train.batch_size=4"]), ("accum", ["train.batch_size=2", "train.grad_accum=2"])):
        monkeypatch.setattr(train_mod, "build_model",
                            lambda *a, _n=name, **k: models.setdefault(_n, build_model(*a, **k)))
        monkeypatch.setattr(train_mod, "build_optimizer", lambda m, c, _n=name, **k: recording_optimizer(m, c, _n, **k))
        cfg = tiny(xs_path, tiny_overrides, *extra, "train.steps=2", "train.warmup_steps=1", "train.eval_every=2",
                   "train.decay_steps=1", "train.grad_clip=null")
        train(cfg, out_dir=tmp_path / name)
    full, accum = (read_metrics(tmp_path / n) for n in ("full", "accum"))
    # the mean of two half-batch losses is the full-batch loss, at step 1 and after one update
    assert float(accum[0]["loss"]) == pytest.approx(float(full[0]["loss"]), rel=1e-5)
    assert float(accum[1]["loss"]) == pytest.approx(float(full[1]["loss"]), rel=1e-4)
    assert int(accum[0]["tokens"]) == int(full[0]["tokens"]) == 4 * 32
    # the same gradient, magnitude included (AdamW alone would hide a factor of grad_accum)
    for g_full, g_accum in zip(grads["full"][0], grads["accum"][0]):
        torch.testing.assert_close(g_accum, g_full, rtol=1e-4, atol=1e-7)
    for (name, p), q in zip(models["full"].named_parameters(), models["accum"].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_runs_on_cpu(tmp_path, xs_path, tiny_overrides):
    fp32 = train(tiny(xs_path, tiny_overrides), out_dir=tmp_path / "fp32")
    bf16 = train(tiny(xs_path, tiny_overrides, "train.precision=bf16"), out_dir=tmp_path / "bf16")
    assert bf16["status"] == "ok" and math.isfinite(bf16["val_loss"])
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.02)
    assert bf16["val_loss"] != fp32["val_loss"]  # autocast really changed the arithmetic


def test_bad_inputs_fail_before_any_file_is_written(tmp_path, xs_path, tiny_overrides):
    rng = np.random.default_rng(0)
    short_val = write_prepared(tmp_path / "short", rng.integers(0, 256, 5000), rng.integers(0, 256, 20),
                               vocab_size=256, tokenizer="byte", sources="test")
    big_vocab = write_prepared(tmp_path / "big", rng.integers(0, 512, 5000), rng.integers(0, 512, 500),
                               vocab_size=512, tokenizer="test", sources="test")
    cases = [("data.path", "not found", ["data.path=" + str(tmp_path / "no-such-data")]),
             ("data.embedded_bytes", "non-empty", ["data.embedded_bytes=2000"]),
             ("train.seq_len", "fewer than seq_len + 1", [f"data.path={short_val}"]),
             ("model.vocab_size", "512", [f"data.path={big_vocab}"]),
             ("model.base_shapes", "no such file", ["model.base_shapes=" + str(tmp_path / "missing.bsh")]),
             ("train.decay_steps", "must fit after the warmup", ["train.steps=2", "train.warmup_steps=1",
                                                                 "train.decay_steps=2"])]
    out = tmp_path / "never"
    for key, fragment, extra in cases:
        with pytest.raises(ConfigError) as info:
            train(tiny(xs_path, tiny_overrides, *extra), out_dir=out)
        assert info.value.key == key and str(xs_path) in str(info.value), str(info.value)
        assert fragment in str(info.value), str(info.value)
        assert not out.exists(), key


def test_divergence_watch_flags_nan_explosion_and_infinite_gradients_on_the_device():
    from windtunnel.training.watch import DivergenceWatch
    watch = DivergenceWatch(device=torch.device("cpu"), vocab_size=256, factor=3.0, first_loss=None)
    finite = torch.tensor(1.0)
    watch.record(torch.tensor(6.0), finite)
    assert watch.first_loss == 6.0 and watch.limit() == 18.0 and not watch.diverged()
    watch.record(torch.tensor(17.9), finite)
    assert not watch.diverged() and not watch.now()
    for loss, norm in ((math.nan, 1.0), (18.5, 1.0), (2.0, math.inf)):
        watch = DivergenceWatch(device=torch.device("cpu"), vocab_size=256, factor=3.0, first_loss=2.0)
        assert watch.limit() == pytest.approx(3 * math.log(256))  # a uniform guess bounds the reference
        watch.record(torch.tensor(loss), torch.tensor(norm))
        watch.record(torch.tensor(2.0), finite)  # the flag stays on
        assert watch.diverged() and watch.now(), (loss, norm)


def test_a_diverged_state_is_never_checkpointed_and_gc_runs_at_a_fixed_cadence(tmp_path, xs_path, tiny_overrides,
                                                                                 monkeypatch):
    import gc
    collected, enabled = [], []
    monkeypatch.setattr(train_mod, "GC_EVERY", 2)
    monkeypatch.setattr(train_mod.gc, "collect", lambda generation=2: collected.append(generation))
    cfg = tiny(xs_path, tiny_overrides, "train.lr=1000", "train.grad_clip=null", "train.checkpoint_every=1",
               "train.keep_checkpoints=0")
    summary = train(cfg, out_dir=tmp_path, on_eval=lambda _: enabled.append(gc.isenabled()))
    assert summary["status"] == "diverged" and gc.isenabled()  # collection back on after the loop
    from windtunnel.training.checkpoint_file import list_checkpoints, load_checkpoint
    saved = list_checkpoints(tmp_path)
    assert saved and int(saved[-1].stem.split("_")[1]) < summary["steps"]  # none at the step that diverged
    for path in saved:
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values()), path
    assert collected == [1] * (summary["steps"] // 2 - (summary["steps"] % 2 == 0))  # young generations only
    calm = tiny(xs_path, tiny_overrides, "train.steps=6", "train.eval_every=3")
    train(calm, out_dir=tmp_path / "calm", on_eval=lambda _: enabled.append(gc.isenabled()))
    assert enabled == [False, False]  # automatic collection is off inside the loop
