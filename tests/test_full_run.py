"""The full-run path on CPU with gloo: FSDP and DDP on 2 processes equal one process, μP groups survive
sharding, sharded checkpoints resume on another number of processes; the launch command forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from windtunnel.config import load_config
from windtunnel.errors import WindtunnelError
from windtunnel.training.distributed import torchrun_command
from windtunnel.training.loop import train
from windtunnel.training.metrics import read_metrics

from support import ROOT, TINY, torchrun

# m = 32 / 16 = 2, so the μP scalings (hidden lr / m, logits / m) are not all 1
SETS = [*TINY, "model.dim_model_base=16", "train.grad_accum=2", "train.steps=10", "train.eval_every=5",
        "train.checkpoint_every=5", "train.keep_checkpoints=3", "train.checkpoint_format=sharded"]
XS = str(ROOT / "proxies" / "xs.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train_on_two(out, *extra: str, resume: str | None = None) -> None:
    sets = [a for o in [*SETS, *extra] for a in ("--set", o)]
    torchrun(["-m", "windtunnel", "train", XS, *sets, "--out", str(out), "--quiet",
              *(["--resume", resume] if resume else [])])


def rows(run, first: int = 1):
    return [(r["step"], r["loss"], r["val_loss"]) for r in read_metrics(run / "metrics.csv") if r["step"] >= first]


def assert_same(a, b):
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    assert [loss for _, loss, _ in a] == pytest.approx([loss for _, loss, _ in b], rel=1e-5)
    assert [v for _, _, v in a if v] == pytest.approx([v for _, _, v in b if v], rel=1e-5)


@pytest.mark.slow
def test_fsdp_and_ddp_on_two_processes_match_one_and_sharded_checkpoints_change_world_size(tmp_path):
    train(load_config(XS, overrides=SETS), out_dir=tmp_path / "one")
    train_on_two(tmp_path / "fsdp", "train.parallel=fsdp")
    train_on_two(tmp_path / "ddp", "train.parallel=ddp")
    one = rows(tmp_path / "one")
    assert len(one) == 10
    assert_same(rows(tmp_path / "fsdp"), one)
    assert_same(rows(tmp_path / "ddp"), one)
    assert json.loads((tmp_path / "fsdp" / "summary.json").read_text())["parallel"] == "fsdp"
    # saved by 2 FSDP ranks at step 5; resumed by 1 plain process and by 2 FSDP ranks: the same steps 6-10
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_00000005"
    train(load_config(XS, overrides=SETS), out_dir=tmp_path / "r1", resume=ckpt)
    train_on_two(tmp_path / "r2", "train.parallel=fsdp", resume=str(ckpt))
    assert_same(rows(tmp_path / "r1"), one[5:])
    assert_same(rows(tmp_path / "r2"), one[5:])


GROUPS_SCRIPT = """
import json, sys
from windtunnel.config import load_config
from windtunnel.model.parametrization import build_model, param_roles
from windtunnel.training.distributed import init_distributed
from windtunnel.training.optim import build_optimizer, set_lr
from windtunnel.training.wrapping import wrap_model
cfg = load_config(sys.argv[1], overrides=sys.argv[2:])
ctx = init_distributed("cpu")
model = build_model(cfg.model, seed=0)
roles = param_roles(model)
mode = wrap_model(model, cfg, ctx).mode
opt = build_optimizer(model, cfg, roles=roles)
set_lr(opt, 0.5)
groups = [{"role": g["role"], "lr": g["lr"], "weight_decay": g["weight_decay"],
           "numel": sum(p.numel() for p in g["params"])} for g in opt.param_groups]
if ctx.is_main:
    print(json.dumps({"mode": mode, "groups": groups, "readout_scale": model.readout.scale}))
ctx.close()
"""


@pytest.mark.slow
def test_mup_groups_and_their_effective_lr_survive_fsdp_sharding(tmp_path):
    script = tmp_path / "groups.py"
    script.write_text(GROUPS_SCRIPT)
    sets = [*SETS, "train.parallel=fsdp", "train.weight_decay=0.1"]
    sharded = json.loads(torchrun([str(script), XS, *sets]).strip().splitlines()[-1])
    done = subprocess.run([sys.executable, str(script), XS, *sets[:-1], "train.parallel=ddp", "train.weight_decay=0.1"],
                          env=ENV, capture_output=True, text=True, timeout=120, check=False)
    single = json.loads(done.stdout.strip().splitlines()[-1])
    assert sharded["mode"] == "fsdp" and single["mode"] == "single"
    assert sharded["groups"] == single["groups"]  # roles, lr x schedule, weight decay, numel (global)
    hidden = next(g for g in single["groups"] if g["role"] == "hidden")
    assert hidden["lr"] == pytest.approx(0.5 * 0.01 / 2)  # lr / m at half the peak
    assert sharded["readout_scale"] == single["readout_scale"] == pytest.approx(1 / 2)


def test_torchrun_command_forms():
    one = torchrun_command("r.yaml", out="runs/r", nproc=8)
    assert one[3:6] == ["--standalone", "--nproc-per-node=8", "--max-restarts=0"] and "--resume" not in one
    multi = torchrun_command("r.yaml", out="runs/r", nproc=8, nnodes=4, rdzv_endpoint="node0:29500", max_restarts=3)
    assert {"--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", "--max-restarts=3"} <= set(multi)
    assert multi[-1] == "--resume"  # a restarted process continues from the newest complete checkpoint
    with pytest.raises(WindtunnelError, match="--nnodes 2 needs --rdzv-endpoint"):
        torchrun_command("r.yaml", out="runs/r", nproc=8, nnodes=2)


def test_launch_with_more_processes_than_gpus_is_refused(monkeypatch):
    import torch

    from windtunnel.fullrun.launch import check_launchable
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(WindtunnelError, match="--nproc 4 but only 2 CUDA devices are visible"):
        check_launchable(load_config(XS, overrides=[*TINY, "train.device=cuda"]), nproc=4)


def test_bench_full_run_smoke_on_one_cpu_process():
    # the GPU figures need a GPU; this only checks the script's logic end to end (train, checkpoint, resume)
    cmd = [sys.executable, str(ROOT / "bench" / "full_run.py"), "--smoke", "--parallel", "ddp,fsdp", "--ac", "off",
           "--attention", "sdpa", "--steps", "5", "--stop-at", "3", "--warmup", "1"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("ddp ")]
    assert len(lines) == 1 and lines[0].rstrip().endswith("ok")  # fsdp skipped on one CPU process
    assert "fsdp " not in done.stdout


COMPILED_SCRIPT = """
import json, os, sys
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from windtunnel.config import load_config
from windtunnel.model.transformer import Block, Transformer
from windtunnel.training.loop import train
xs, out, *sets = sys.argv[1:]
losses = {}
for attention in ("sdpa", "auto"):  # auto: flash-attn is absent on CPU, so its SDPA fallback
    summary = train(load_config(xs, overrides=[*sets, f"model.attention={attention}"]), out_dir=f"{out}/{attention}")
    losses[attention] = [summary["status"], summary["train_loss"], summary["val_loss"]]
graphs = {"block": len(_debug_get_cache_entry_list(Block.forward.__code__)),
          "head": len(_debug_get_cache_entry_list(Transformer.head_loss.__code__)),
          "limit": torch._dynamo.config.recompile_limit}
if os.environ["RANK"] == "0":
    print(json.dumps({"losses": losses, "graphs": graphs}))
"""


TWO_RUNS_SCRIPT = """
import torch, torch.distributed as dist
from windtunnel.training.distributed import init_distributed
first = init_distributed("cpu")
group = dist.group.WORLD
first.close()                      # what train() does at its end
second = init_distributed("cpu")   # a second train() in the same torchrun process
assert dist.group.WORLD is group, "the process group was re-created between two runs"
total = second.all_sum(torch.ones(())).item()
if second.is_main:
    print(total)
"""


@pytest.mark.slow
def test_two_runs_in_one_torchrun_process_share_one_process_group(tmp_path):
    # re-creating the default group reuses the first one's keys in torchrun's store: a rank could read its
    # peer's stale address and be refused (gloo connectFullMesh), depending on timing
    script = tmp_path / "two_runs.py"
    script.write_text(TWO_RUNS_SCRIPT)
    assert torchrun([str(script)]).split() == ["2.0"]


@pytest.mark.slow
def test_compiled_ddp_on_gloo_both_attention_backends_train_and_eval_stay_under_the_recompile_limit(tmp_path):
    # blocks and the head (final norm + chunked loss) compiled, DDP on 2 processes, 2 micro-batches each;
    # every block shares one graph per (attention, train/eval): 4 block graphs and 2 head graphs, limit 8
    script = tmp_path / "compiled.py"
    script.write_text(COMPILED_SCRIPT)
    sets = [*TINY, "train.steps=3", "train.eval_every=3", "train.grad_accum=4", "train.compile=true",
            "model.loss_chunk_tokens=48", "train.parallel=ddp"]
    env = {**ENV, "TORCHINDUCTOR_COMPILE_THREADS": "1"}  # compile in-process: no worker pool per rank on 2 cores
    got = json.loads(torchrun([str(script), XS, str(tmp_path), *sets], env=env, timeout=900).strip().splitlines()[-1])
    eager = train(load_config(XS, overrides=[*sets[:-3], "model.loss_chunk_tokens=48"]), out_dir=tmp_path / "eager")
    for status, train_loss, val_loss in got["losses"].values():
        assert status == "ok"
        assert train_loss == pytest.approx(eager["train_loss"], rel=1e-4)
        assert val_loss == pytest.approx(eager["val_loss"], rel=1e-4)
    assert got["graphs"]["block"] <= 4 and got["graphs"]["head"] <= 2
    assert got["graphs"]["block"] < got["graphs"]["limit"]


@pytest.mark.slow
def test_gpu_check_script_runs_its_cpu_mode(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # now: the session's private data cache
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "full_run.json").read_text())["results"][0]
    assert result["resumed"] and result["first_step_equal"] and result["continues_exactly"]
    assert result["tokens_per_s"] > 0 and result["peak_gib"] is None  # no CUDA memory to measure on a CPU
    summary = (tmp_path / "summary.txt").read_text()
    assert "not measurable on CPU" in summary and "fused-sweep ratio" in summary and "not found" not in summary


def test_memory_estimate_counts_what_fsdp_accumulation_keeps_gathered_and_unsharded():
    from windtunnel.fullrun.presets import load_target
    from windtunnel.model.accounting import count_params, memory_per_gpu
    target = load_target("1.2b")
    n = count_params(target.config(steps=20_001).model).total
    accumulating = memory_per_gpu(target.config(steps=20_001, grad_accum=32), nproc=8, parallel="fsdp")
    one_each = memory_per_gpu(target.config(steps=20_001, grad_accum=8), nproc=8, parallel="fsdp")
    assert accumulating.unsharded_grads == 4 * n  # every gradient unsharded in fp32 until the last micro-batch
    root = 65280 * 1536 + 1536  # embedding (tied readout) and the final norm, gathered in fp32
    assert accumulating.gathered == 4 * root + 2 * (n - root)  # all 48 blocks kept gathered in bf16
    block = (n - root) / 48
    assert one_each.gathered == 4 * root + 2 * 2 * block and one_each.unsharded_grads == 4 * block  # 2 blocks in flight
    assert accumulating.total - one_each.total > 6.5 * 2**30  # ~7 GiB per GPU at 1.2B: the cost of not re-gathering
    eager = memory_per_gpu(target.config(steps=20_001, overrides={"train.compile": False}))
    assert eager.casts == 2 * (n - 65280 * 1536) and memory_per_gpu(target.config(steps=20_001)).casts == 0
