"""Shape keys overridden on the command line, in the library, in a transfer and in a sweep: the base
shapes are derived for the built model, a shared `.bsh` file is never rewritten, and a file that
contradicts its config is refused in words."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.errors import ConfigError
from windtunnel.model.parametrization import build_model
from windtunnel.model.shapes import derived_shapes, file_mismatch
from windtunnel.sweep.points import TrialPoint, trial_config
from windtunnel.sweep.spec import load_sweep

from support import ROOT, write_spec

SHARED = ROOT / "proxies" / "shapes" / "xs_base64.bsh"
SHORT = ["train.steps=4", "train.warmup_steps=1", "train.eval_every=4", "train.eval_batches=1",
         "train.batch_size=2", "train.seq_len=32", "data.embedded_bytes=400000"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("override", ["model.n_layers=4", "model.dim_model_base=128", "model.d_model=128",
                                      "model.norm_gain=false"])
def test_train_with_a_shape_override_runs_and_leaves_the_shared_file_alone(tmp_path, capsys, xs_path, override):
    before = _digest(SHARED)
    out = tmp_path / "run"
    assert main(["train", str(xs_path), "--set", override, *_sets(SHORT), "--out", str(out), "--quiet"]) == 0, \
        capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    key, value = override.split(".", 1)[1].split("=")
    assert str(saved["model"][key]).lower() == value
    # d_model does not change the base shapes: the ladder's file still serves; the others derive theirs
    assert saved["model"]["base_shapes"] == (str(SHARED) if key == "d_model" else None)
    assert _digest(SHARED) == before and not list(SHARED.parent.glob("*.tmp*"))


def test_library_and_sweep_derive_the_shapes_of_the_model_they_build(tmp_path, xs_path):
    cfg = load_config(xs_path, overrides=["model.n_layers=4"])
    assert cfg.model.base_shapes is None
    model = build_model(cfg.model)
    assert len(model.blocks) == 4 and model.embed.weight.infshape.width_mult() == 1.0
    spec = load_sweep(write_spec(tmp_path / "s.yaml", set={"train.steps": 40},
                                 parameters={"model.n_layers": {"values": [2, 3]}}))
    trial = trial_config(spec, TrialPoint("t0001", 0, {"model.n_layers": 3}))
    assert trial.model.base_shapes is None and len(build_model(trial.model).blocks) == 3
    assert not list(tmp_path.rglob("*.bsh"))  # nothing written for it


def test_derived_shapes_are_cached_by_content():
    cfg = load_config(ROOT / "proxies" / "xs.yaml", overrides=["model.n_layers=5"]).model
    first = derived_shapes(cfg)
    from windtunnel.model import shapes
    hits = shapes._derived.cache_info().hits
    same = derived_shapes(load_config(ROOT / "proxies" / "xs.yaml", overrides=["model.n_layers=5"]).model)
    assert shapes._derived.cache_info().hits == hits + 1
    assert {k: v.base_shape() for k, v in same.items()} == {k: v.base_shape() for k, v in first.items()}
    same.clear()  # a caller's dict is its own
    assert len(derived_shapes(cfg)) == len(first)


def test_transfer_with_a_depth_override_builds_the_target(tmp_path, xs_path):
    from windtunnel.fullrun.transfer import transfer
    target = yaml.safe_load((ROOT / "transfer" / "cpu.yaml").read_text())
    target["model"]["base_shapes"] = str(SHARED)  # a target that names a file for its own depth (2 layers)
    target["model"]["n_layers"] = 2
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(target))
    plan = transfer(target=path, source=xs_path, overrides=["model.n_layers=6"])
    assert plan.config.model.n_layers == 6 and plan.config.model.base_shapes is None
    assert len(build_model(plan.config.model).blocks) == 6


def _config_file(tmp_path: Path, **model) -> Path:
    data = yaml.safe_load((ROOT / "proxies" / "xs.yaml").read_text())
    data["model"].update(model, base_shapes=str(SHARED))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("model, words", [
    ({"n_layers": 4}, "it describes 2 blocks, this model has model.n_layers=4"),
    ({"dim_model_base": 128}, "it was made for base width 64, this model has model.dim_model_base=128"),
    ({"norm_gain": False}, "it has RMSNorm gains, this model has model.norm_gain=false"),
    ({"n_kv_heads": 4}, "blocks.0.attn.k_proj.weight has base shape [32, 64] there and [64, 64] in this model"),
])
def test_a_file_that_contradicts_its_config_is_refused_in_words(tmp_path, model, words):
    cfg = load_config(_config_file(tmp_path, **model))
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, source=cfg.source)
    text = str(err.value)
    assert words in text and "model.base_shapes=null" in text
    assert "set()" not in text and "{" not in text  # no dump of name sets: one short line
    assert "\n" not in text and len(text) - len(str(SHARED)) - len(cfg.source) < 330
    assert "remake" not in text  # no advice that would overwrite the shared file
    assert file_mismatch(load_config(ROOT / "proxies" / "xs.yaml").model, SHARED) is None


def test_shapes_command_never_overwrites_a_file_of_another_model(tmp_path, capsys):
    (tmp_path / "shapes").mkdir()
    shutil.copy(SHARED, tmp_path / "shapes" / SHARED.name)
    shutil.copy(ROOT / "proxies" / "xs.yaml", tmp_path / "xs.yaml")
    shared = tmp_path / "shapes" / SHARED.name
    before = _digest(shared)
    assert main(["shapes", str(tmp_path / "xs.yaml"), "--set", "model.n_layers=3"]) == 2
    err = capsys.readouterr().err
    assert "exists and describes another model" in err and "--out" in err
    assert _digest(shared) == before
    assert main(["shapes", str(tmp_path / "xs.yaml"), "--set", "model.n_layers=3",
                 "--out", str(tmp_path / "xs3.bsh")]) == 0
    cfg = load_config(tmp_path / "xs.yaml", overrides=["model.n_layers=3", f"model.base_shapes={tmp_path / 'xs3.bsh'}"])
    assert len(build_model(cfg.model).blocks) == 3
