"""Transfer: what carries, what the parametrization makes of it at the target, the table, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from windtunnel.cli import main
from windtunnel.config import load_config, save_config
from windtunnel.errors import ConfigError, WindtunnelError
from windtunnel.fullrun.hparams import effective_hparams, minicpm_batch_tokens
from windtunnel.fullrun.presets import load_target
from windtunnel.fullrun.proxy import edge_messages, load_proxy
from windtunnel.fullrun.transfer import transfer
from windtunnel.model.accounting import count_params, memory_per_gpu, mfu, peak_flops, peak_tflops_for
from windtunnel.model.parametrization import build_model, param_roles

from support import ROOT, TINY

# a sweep over lr on the tiny proxy: (trial_id, status, lr, val_loss); 0003 is the best ok trial
TRIALS = [("0000", "ok", 0.004, 3.2), ("0001", "ok", 0.008, 3.0), ("0002", "diverged", 0.064, math.inf),
          ("0003", "ok", 0.016, 2.9), ("0004", "ok", 0.032, 3.1), ("0005", "error", 0.002, math.nan)]


def make_sweep(folder, trials=TRIALS, grid=(0.002, 0.004, 0.008, 0.016, 0.032, 0.064)):
    """A sweep folder as the sweep code writes it: results.csv, spec.yaml, trials/<id>/config.yaml."""
    import pandas as pd
    base = ROOT / "proxies" / "xs.yaml"
    rows = []
    for trial_id, status, lr, loss in trials:
        cfg = load_config(base, overrides=[*TINY, f"train.lr={lr}"])
        save_config(cfg, folder / "trials" / trial_id / "config.yaml")
        (folder / "trials" / trial_id / "summary.json").write_text(json.dumps({"status": status, "val_loss": loss}))
        rows.append({"trial_id": trial_id, "status": status, "val_loss": loss, "tokens": cfg.train.steps *
                     cfg.tokens_per_step, "seconds": 1.0, "seed": 0, "train.lr": lr})
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    spec = {"base": str(base), "set": dict(s.split("=", 1) for s in TINY),
            "parameters": {"train.lr": {"values": list(grid)}}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder


def write_target(path, *, d_model, n_heads=2, n_kv_heads=1, n_layers=2, tokens=3072, batch_tokens=256, **train):
    """A tiny CPU target in the proxy's family."""
    spec = {"transfer": {"description": "tiny test target", "tokens": tokens, "batch_tokens": batch_tokens},
            "model": {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
                      "dim_model_base": 16, "max_seq_len": 64, "vocab_size": 256},
            "train": {"batch_size": 4, "seq_len": 32, "warmup_steps": 2, "eval_every": 6, "eval_batches": 2,
                      "log_every": 1, "threads": 1, "device": "cpu", **train},
            "data": {"embedded_bytes": 400000}}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path / "sweep")


def test_1p2b_counts_match_xmodel2():
    counts = count_params(load_target("1.2b").config(steps=20_001).model)
    assert counts.non_embedding == pytest.approx(1.151e9, rel=0.01)
    assert counts.total == pytest.approx(1.252e9, rel=0.01)
    assert counts.embedding == 65280 * 1536  # tied: counted once


def test_best_ok_trial_is_carried_and_attn_mult_resolved(sweep, tmp_path):
    plan = transfer(target=write_target(tmp_path / "t.yaml", d_model=64), source=sweep)
    proxy = plan.proxy.config
    assert plan.proxy.val_loss == 2.9 and proxy.train.lr == 0.016  # the diverged trial's inf/nan is skipped
    assert plan.config.train.lr == 0.016
    assert plan.config.model.init_std == proxy.model.init_std and plan.config.model.dim_model_base == 32
    # the proxy's attn_mult (xs pins 4 = sqrt(64 / 4)) carries as a number
    assert plan.config.model.attn_mult == pytest.approx(4.0)
    assert plan.config.model.d_model == 64 and plan.config.model.n_layers == 2  # the target keeps its shape
    assert plan.proxy.edges == []


def test_equal_width_target_has_the_proxys_effective_hparams(sweep, tmp_path):
    # the proxy's shape (d 32, base 32) as a target: every per-tensor number must come out the same
    target = write_target(tmp_path / "same.yaml", d_model=32)  # dim_model_base 32 comes from the proxy
    plan = transfer(target=target, source=sweep)
    assert effective_hparams(plan.config) == pytest.approx(effective_hparams(plan.proxy.config))


def test_both_init_stds_carry_resolved_so_the_target_presets_shorthand_cannot_change_them(tmp_path):
    # the proxy swept the hidden init and left the embedding to its shorthand (0.05); the target preset
    # says init_std 0.1: the target must draw exactly what the proxy drew (per role, before / sqrt m)
    trials = [("0000", "ok", 0.008, 3.0), ("0001", "ok", 0.016, 2.9)]
    folder = make_sweep(tmp_path / "sweep", trials=trials, grid=(0.004, 0.008, 0.016, 0.032))
    for trial_id, *_ in trials:
        path = folder / "trials" / trial_id / "config.yaml"
        cfg = load_config(path, overrides=["model.hidden_init_std=0.2", "model.init_std=0.05"])
        save_config(cfg, path)
    path = write_target(tmp_path / "t.yaml", d_model=128, n_heads=4, n_kv_heads=2)
    spec = yaml.safe_load(path.read_text())
    spec["model"]["init_std"] = 0.1
    path.write_text(yaml.safe_dump(spec))
    plan = transfer(target=path, source=folder)
    target = plan.config.model
    assert (target.hidden_std, target.emb_std) == (0.2, 0.05)
    proxy, tgt = effective_hparams(plan.proxy.config), effective_hparams(plan.config)
    assert tgt["init_std_embedding"] == proxy["init_std_embedding"] == 0.05
    assert tgt["init_std_hidden"] == pytest.approx(0.2 / math.sqrt(128 / 32))


@pytest.mark.parametrize("d_model", [64, 128, 256])
def test_hidden_lr_scales_one_over_m_and_init_one_over_sqrt_m(sweep, tmp_path, d_model):
    plan = transfer(target=write_target(tmp_path / "t.yaml", d_model=d_model, n_heads=4, n_kv_heads=2), source=sweep)
    proxy, target = effective_hparams(plan.proxy.config), effective_hparams(plan.config)
    m = d_model / 32  # the proxy sits at its base width (m = 1)
    assert proxy["width_mult"] == 1.0 and target["width_mult"] == m
    assert target["lr_hidden"] == pytest.approx(proxy["lr_hidden"] / m)
    assert target["lr_embedding"] == proxy["lr_embedding"] == 0.016
    assert target["init_std_hidden"] == pytest.approx(proxy["init_std_hidden"] / math.sqrt(m))
    assert target["shrink_hidden"] == pytest.approx(proxy["shrink_hidden"])  # weight decay carries width-free
    # the table's init std is what build_model really draws
    model = build_model(plan.config.model, seed=0)
    roles = param_roles(model)
    hidden = torch.cat([p.flatten() for n, p in model.named_parameters() if roles[n] == "hidden"])
    assert hidden.std().item() == pytest.approx(target["init_std_hidden"], rel=0.05)


def test_steps_batch_and_wsd_phases_of_1p2b(sweep):
    plan = transfer(target="1.2b", source=sweep, tokens=1.5e12, nproc=8)
    t = plan.config.train
    assert plan.batch.tokens == 3_932_160 and t.grad_accum == 480 and t.batch_size == 2
    assert t.steps == round(1.5e12 / 3_932_160) == 381_470
    rows = {r.label: r for r in plan.rows}
    assert rows["warmup steps (tokens)"].target.startswith("2000 ")
    assert rows["decay steps (tokens), linear"].target.startswith(f"{round(2 / 12 * 381_470)} ")  # proxy: 2 of 12
    assert rows["micro-batch x seq x accum (all GPUs)"].note == "60 per GPU on 8"
    assert rows["parameters, non-embedding"].target == count_params(plan.config.model).non_embedding


def test_warnings_horizon_recipe_edge(tmp_path):
    best_on_edge = [("a", "ok", 0.004, 3.2), ("b", "ok", 0.064, 2.5)]
    plan = transfer(target="1.2b", source=make_sweep(tmp_path / "s", trials=best_on_edge, grid=(0.004, 0.016, 0.064)))
    text = "\n".join(plan.warnings)
    assert "train.lr = 0.064 is the highest value of its grid" in text
    assert "horizon: the proxy saw" in text  # 1536 tokens on a 21k-param proxy vs 1.5T on 1.15B
    assert "train.weight_decay: the target preset says 0.1, the proxy trained with 0;" in text
    assert "data.path is null" in text


def test_edge_messages_on_continuous_ranges():
    spec = {"train.lr": {"distribution": "loguniform", "min": 1e-3, "max": 1e-1},
            "model.scale_emb": {"distribution": "uniform", "min": 2, "max": 20}}
    assert edge_messages(spec, {"train.lr": 0.01, "model.scale_emb": 11}) == []
    msgs = edge_messages(spec, {"train.lr": 0.0011, "model.scale_emb": 19.5})
    assert len(msgs) == 2 and "low end" in msgs[0] and "high end" in msgs[1]


def test_batch_from_minicpm_law_when_the_preset_has_none(sweep, tmp_path):
    target = write_target(tmp_path / "t.yaml", d_model=64, batch_tokens=None)
    plan = transfer(target=target, source=sweep, tokens=1e8)
    law = minicpm_batch_tokens(2.9)
    assert plan.batch.requested == pytest.approx(law) and "MiniCPM's law" in plan.batch.source
    assert abs(plan.batch.tokens - law) <= 4 * 32 / 2  # nearest whole number of micro-batches
    with pytest.raises(ConfigError, match="transfer.batch_tokens"):
        transfer(target=target)  # no proxy loss to apply the law to


def test_target_and_source_errors(tmp_path, sweep):
    with pytest.raises(WindtunnelError, match="unknown target 'nope'.*1.2b"):
        transfer(target="nope")
    bad = write_target(tmp_path / "bad.yaml", d_model=64, steps=100)
    with pytest.raises(ConfigError, match="train.steps: is computed by"):
        transfer(target=bad)
    short = write_target(tmp_path / "short.yaml", d_model=64, warmup_steps=50)
    with pytest.raises(ConfigError, match="warmup_steps.*--set train.warmup_steps"):
        transfer(target=short, source=sweep)
    failed = make_sweep(tmp_path / "failed", trials=[("x", "diverged", 0.1, math.inf)])
    with pytest.raises(WindtunnelError, match="no trial finished with status ok"):
        load_proxy(failed)
    with pytest.raises(ConfigError, match="train.steps.*--tokens"):
        transfer(target="1.2b", overrides=["train.steps=10"])


def test_memory_estimate_and_mfu():
    cfg = load_target("1.2b").config(steps=20_001)
    mem = memory_per_gpu(cfg)
    assert mem.weights == mem.grads == 4 * count_params(cfg.model).total and mem.optimizer == 2 * mem.weights
    assert 40 * 2**30 < mem.total < 80 * 2**30  # the preset's micro-batch fits an 80 GB GPU
    ckpt = load_target("1.2b").config(steps=20_001, overrides={"model.activation_checkpointing": True})
    # per token and layer (bf16): fp32 norms 4 x 4d, bf16 2 x (5d + 3 d_kv + 4 d_ffn) = 26d + 6 d_kv + 8 d_ffn
    per_layer = 26 * 1536 + 6 * 512 + 8 * 3840
    assert mem.activations == 2 * 4096 * 48 * per_layer
    assert memory_per_gpu(ckpt).activations == 2 * 4096 * (48 * 4 * 1536 + per_layer)  # block inputs + one block
    assert mem.logits == 12 * 2048 * 65280 + 4 * 65280 * 1536  # one 2048-token chunk + the weight's fp32 grad
    whole = load_target("1.2b").config(steps=20_001, overrides={"model.loss_chunk_tokens": 0})
    assert memory_per_gpu(whole).logits == 16 * 2 * 4096 * 65280
    sharded, replicated = memory_per_gpu(cfg, nproc=8), memory_per_gpu(cfg, nproc=8, parallel="ddp")
    assert sharded.parallel == "fsdp" and sharded.optimizer == replicated.optimizer / 8
    assert replicated.total - sharded.total > 15 * 2**30  # FSDP frees the replicated fp32 state
    assert memory_per_gpu(cfg, nproc=1).parallel == "ddp"  # one GPU: nothing to shard
    assert mfu(flops_per_token=1e9, tokens_per_s=500.0, peak=1e12) == pytest.approx(0.5)
    assert mfu(flops_per_token=1e9, tokens_per_s=500.0, peak=None) is None
    assert peak_flops("cpu") is None


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.5), ("NVIDIA H200 NVL", 835.0), ("NVIDIA H800", 989.5), ("NVIDIA H800 PCIe", 756.0),
    ("NVIDIA L4", 121.0), ("NVIDIA L40", 181.0), ("NVIDIA L40S", 362.0), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A10", 125.0), ("NVIDIA A10G", 70.0), ("NVIDIA B200", 2250.0),
    ("NVIDIA L4 Foo", None), ("NVIDIA H100", None), ("Tesla T4", None),  # unlisted: no guess from a prefix
])
def test_peak_flops_match_the_exact_gpu_name(name, tflops):
    assert peak_tflops_for(name) == tflops


def test_cli_dry_run_prints_the_table_and_writes_nothing(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["transfer", "--target", "1.2b", "--from", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in ("lr, hidden matrices (lr / m)", "parameters, non-embedding", "1.151B", "AdamW states",
                 "381,470", "warnings:", "# dry run: would write runs/1.2b.yaml", "lr: 0.016"):
        assert text in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cli_refuses_a_1p2b_launch_without_a_gpu(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["transfer", "--target", "1.2b", "--from", str(sweep), "--launch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0] and "1.25B-parameter" in err[0]
    assert not (tmp_path / "runs").exists()  # nothing started and nothing written, not even the config


def test_cli_launches_a_tiny_target_on_cpu(sweep, tmp_path, capsys):
    target = write_target(tmp_path / "tiny.yaml", d_model=64, checkpoint_every=6)
    out, run = tmp_path / "tiny-run.yaml", tmp_path / "run"
    assert main(["transfer", "--target", str(target), "--from", str(sweep), "--out", str(out),
                 "--run-dir", str(run), "--launch"]) == 0
    written = load_config(out)
    assert written.train.lr == 0.016 and written.train.steps == 3072 // 256
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 12 and math.isfinite(summary["val_loss"])
    assert load_config(run / "config.yaml") == written  # the run trained exactly the written config
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_00000006.pt", "step_00000012.pt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_full_run_bench_refuses_without_cuda():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "full_run.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA device" in done.stderr


def test_proxy_from_spec_when_the_trial_config_is_missing_and_from_a_run_folder(sweep, tmp_path):
    (sweep / "trials" / "0003" / "config.yaml").unlink()
    proxy = load_proxy(sweep)  # rebuilt from spec.yaml: base + set + the row's swept values
    assert proxy.config.train.lr == 0.016 and proxy.config.model.d_model == 32 and proxy.val_loss == 2.9
    from windtunnel.training.loop import train
    summary = train(load_config(ROOT / "proxies" / "xs.yaml", overrides=TINY), out_dir=tmp_path / "run")
    run = load_proxy(tmp_path / "run")
    assert run.val_loss == summary["val_loss"] and run.tokens == summary["tokens"] and run.best == {}


def test_target_set_reaches_into_mappings_like_the_config(tmp_path):
    """`transfer --set data.mixture.web=0.3` takes the config's own override path (deep keys)."""
    path = write_target(tmp_path / "mix.yaml", d_model=32)
    spec = yaml.safe_load(path.read_text())
    spec["data"] = {"sources": {"web": str(tmp_path / "web"), "code": str(tmp_path / "code")},
                    "mixture": {"web": 0.5, "code": 0.5}}
    path.write_text(yaml.safe_dump(spec))
    plan = transfer(target=path, overrides=["data.mixture.web=0.3"])
    assert plan.config.data.weights()["web"] == pytest.approx(0.3 / 0.8)
    with pytest.raises(ConfigError, match=r"--set: data.mixtur: unknown key"):
        transfer(target=path, overrides=["data.mixtur.web=0.3"])


def test_cli_dry_run_plans_for_an_8_gpu_node_unless_told(sweep, tmp_path, monkeypatch, capsys):
    """One GPU (327 days, grad_accum 480) is nobody's plan for a 1.2B run: the dry run assumes a node of 8."""
    monkeypatch.chdir(tmp_path)
    assert main(["transfer", "--target", "1.2b", "--from", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "planned for 1 node(s) of 8 GPUs" in out and "--nproc N" in out
    assert "60 per GPU on 8" in out and "days on 8 GPU(s)" in out
    assert main(["transfer", "--target", "1.2b", "--from", str(sweep), "--dry-run", "--nproc", "1"]) == 0
    out = capsys.readouterr().out
    assert "planned for" not in out and "480 per GPU on 1" in out and "days on 1 GPU(s)" in out
