"""Sharded checkpoints in one process, partial folders, the sequential stream, FSDP on one CPU process."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from windtunnel.config import load_config
from windtunnel.data.sampling import StreamSampler
from windtunnel.errors import ConfigError, WindtunnelError
from windtunnel.training.checkpoint_file import latest_checkpoint, list_checkpoints
from windtunnel.training.loop import train
from windtunnel.training.metrics import read_metrics

from support import ROOT, TINY


def tiny(*extra):
    return load_config(ROOT / "proxies" / "xs.yaml", overrides=[*TINY, *extra])


def losses(run):
    return [(r["step"], r["loss"], r["val_loss"]) for r in read_metrics(run / "metrics.csv")]


def test_sharded_resume_equals_uninterrupted_and_partial_folders_are_never_newest(tmp_path):
    cfg = tiny("train.checkpoint_format=sharded", "train.checkpoint_every=4", "train.keep_checkpoints=2")
    train(cfg, out_dir=tmp_path / "whole")
    train(cfg, out_dir=tmp_path / "split", stop_after=6)
    names = [p.name for p in list_checkpoints(tmp_path / "split")]
    assert names == ["step_00000004", "step_00000006"]
    # a crash during the save of step 8: its shards in a .partial folder, and a copied folder without marker
    ckpts = tmp_path / "split" / "checkpoints"
    shutil.copytree(ckpts / "step_00000006", ckpts / ".step_00000008.partial")
    shutil.copytree(ckpts / "step_00000006", ckpts / "step_00000009")
    (ckpts / "step_00000009" / "meta.pt").unlink()
    assert latest_checkpoint(tmp_path / "split").name == "step_00000006"
    with pytest.raises(WindtunnelError, match="step_00000009: not a complete sharded checkpoint"):
        train(cfg, out_dir=tmp_path / "other", resume=ckpts / "step_00000009")
    resumed = train(cfg, out_dir=tmp_path / "split", resume=True)
    assert resumed["resumed_from"].endswith("step_00000006")
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")


def test_a_sharded_checkpoint_of_another_shape_is_refused_in_one_line(tmp_path):
    cfg = tiny("train.checkpoint_format=sharded", "train.steps=4", "train.checkpoint_every=4", "train.eval_every=4")
    train(cfg, out_dir=tmp_path / "a")
    wider = tiny("model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2", "train.checkpoint_format=sharded")
    with pytest.raises(WindtunnelError, match="step_00000004: does not fit this model") as err:
        train(wider, out_dir=tmp_path / "b", resume=tmp_path / "a/checkpoints/step_00000004")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_fsdp_on_one_cpu_process_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train.parallel: fsdp shards the model over several processes"):
        train(tiny("train.parallel=fsdp"), out_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="train.checkpoint_format: must be sharded or auto"):
        tiny("train.parallel=fsdp", "train.checkpoint_format=file")
    with pytest.raises(ConfigError, match="train.cpu_offload: needs train.parallel: fsdp"):
        tiny("train.cpu_offload=true")
    assert not (tmp_path / "x").exists()


def test_the_stream_gives_ranks_disjoint_windows_once_and_resumes_where_it_stopped():
    tokens = np.arange(10 * 8 + 1) % 256  # exactly 10 windows of 8 (+1 for the last target)
    s = StreamSampler(tokens, batch_size=2, seq_len=8)
    world, micros = 2, range(4)           # 2 ranks, 4 micro-batches = 8 of the 10 windows
    seen = {r: [o for m in micros[r::world] for o in s.offsets(m)] for r in range(world)}
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [8 * i for i in range(8)]  # in order, none twice, none skipped
    assert s.epochs(5) == 1.0 and list(s.offsets(5)) == [0, 8]     # then a second epoch starts over
    x, y = s.batch(1)
    assert x[0, 0].item() == 16 and y[0, -1].item() == 24
    resumed = StreamSampler(tokens, batch_size=4, seq_len=8)         # another batch size after resume
    resumed.resume(micro=2, sequence=s.position(2))
    assert list(resumed.offsets(2)) == [32, 40, 48, 56]


def test_sequential_sampling_resumes_with_the_losses_of_an_uninterrupted_run(tmp_path):
    cfg = tiny("data.sampling=sequential", "train.checkpoint_every=6")
    whole = train(cfg, out_dir=tmp_path / "whole")
    train(cfg, out_dir=tmp_path / "split", stop_after=6)
    train(cfg, out_dir=tmp_path / "split", resume=True)
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")
    assert whole["data_epochs"] > 0 and whole["status"] == "ok"
    random = train(tiny(), out_dir=tmp_path / "random")
    assert random["train_loss"] != whole["train_loss"]  # the option does change what is read


def test_cli_refuses_fsdp_on_one_cpu_process_in_one_line_exit_2(tmp_path, capsys):
    from windtunnel.cli import main
    code = main(["train", str(ROOT / "proxies" / "xs.yaml"), *[a for o in TINY for a in ("--set", o)],
                 "--set", "train.parallel=fsdp", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.parallel: fsdp shards the model" in err[0]
    assert not (tmp_path / "x").exists()


GATHERS_SCRIPT = """
import json, os, sys
import torch.distributed.fsdp._fully_shard._fsdp_param_group as group
from windtunnel.config import load_config
from windtunnel.training import loop

calls, per_step = [0], []
gather = group.foreach_all_gather
def counting(*args, **kwargs):
    calls[0] += 1
    return gather(*args, **kwargs)
group.foreach_all_gather = counting
step = loop.train_step
def counted_step(run, s):
    before = calls[0]
    out = step(run, s)
    per_step.append(calls[0] - before)
    return out
loop.train_step = counted_step
summary = loop.train(load_config(sys.argv[1], overrides=sys.argv[3:]), out_dir=sys.argv[2])
if os.environ["RANK"] == "0":
    print(json.dumps({"gathers_per_step": per_step, "train_loss": summary["train_loss"]}))
"""


@pytest.mark.slow
def test_fsdp_accumulation_gathers_once_per_step_and_bf16_matches_one_process(tmp_path):
    # 4 micro-batches per rank: parameters gathered once per step (root + 2 blocks = 3 gathers), not per
    # micro-batch (3 + 1 re-gathered for the backward, x 4); the one precision recipe gives one process's losses
    from support import torchrun
    script = tmp_path / "gathers.py"
    script.write_text(GATHERS_SCRIPT)
    sets = [*TINY, "model.dim_model_base=16", "train.steps=3", "train.eval_every=3", "train.grad_accum=8",
            "train.precision=bf16"]
    out = torchrun([str(script), str(ROOT / "proxies" / "xs.yaml"), str(tmp_path / "fsdp"), *sets,
                    "train.parallel=fsdp"])
    sharded = json.loads(out.strip().splitlines()[-1])
    assert sharded["gathers_per_step"] == [3, 3, 3]
    one = train(load_config(ROOT / "proxies" / "xs.yaml", overrides=sets), out_dir=tmp_path / "one")
    assert sharded["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
