"""Config loading: every rule a user can break names the file and the key; overrides; paths; round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from windtunnel.config import RunConfig, config_from_dict, config_to_dict, load_config, parse_overrides, save_config
from windtunnel.errors import ConfigError


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def assert_error(path, overrides, key: str, *fragments: str, source=None) -> ConfigError:
    """load_config raises a ConfigError whose one-line message names the source (the file, or --set when
    the typed override alone is wrong), the key and the rule."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides=overrides)
    err, msg = info.value, str(info.value)
    source = source or str(path)
    assert err.source == source and err.key == key
    assert msg.startswith(f"{source}: {key}: "), msg
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return err


@pytest.mark.parametrize("overrides, key, fragments", [
        (["train.lr=-1e-3"], "train.lr", ["must be > 0", "-0.001"]),
    (["model.d_model=66"], "model.d_model", ["divisible by model.n_heads=4", "66"]),
    (["model.n_heads=4", "model.n_kv_heads=3", "model.d_model=96"], "model.n_heads",
     ["multiple of model.n_kv_heads=3"]),
    (["model.d_model=100"], "model.d_model", ["even", "d_head=100/4=25"]),
    (["train.seq_len=256"], "train.seq_len", ["<= model.max_seq_len=128", "256"]),
    (["train.warmup_steps=200"], "train.warmup_steps", ["< train.steps=200", "200"]),
    (["train.betas=[0.9, 1.0]"], "train.betas[1]", ["[0, 1)", "1.0"]),
    (["train.grad_clip=0"], "train.grad_clip", ["> 0 or null"]),
    (["train.decay_fraction=1.5"], "train.decay_fraction", ["(0, 1]"]),
])
def test_bad_value_names_file_and_key(xs_path, overrides, key, fragments):
    assert_error(xs_path, overrides, key, *fragments)


@pytest.mark.parametrize("overrides, key, fragments", [
    (["model.d_modle=128"], "model.d_modle", ["unknown key", "did you mean 'd_model'"]),
    (["modle.d_model=128"], "modle.d_model", ["unknown key", "did you mean 'model'"]),
    (["train.lerning_rate=0.1"], "train.lerning_rate", ["unknown key"]),
    (["model.d_head=16"], "model.d_head", ["unknown key"]),          # a derived property, not a field
    (["model.d_model=abc"], "model.d_model", ["expected an integer", "'abc'"]),
    (["model.d_model=true"], "model.d_model", ["expected an integer", "True"]),
    (["train.steps=2.5"], "train.steps", ["expected an integer", "2.5"]),
    (["train.lr=fast"], "train.lr", ["expected a finite number", "'fast'"]),
    (["train.lr=.nan"], "train.lr", ["expected a finite number", "nan"]),
    (["train.lr=.inf"], "train.lr", ["expected a finite number", "inf"]),
    (["model.norm_gain=1"], "model.norm_gain", ["expected true or false"]),
    (["model.base_shapes=3"], "model.base_shapes", ["expected a string"]),
    (["train.betas=[0.9]"], "train.betas", ["list of 2 numbers"]),
    (["train.betas=0.9"], "train.betas", ["list of 2 numbers"]),
    (["model.parametrization=ntk"], "model.parametrization", ["one of mup, sp", "'ntk'"]),
    (["train.decay=step"], "train.decay", ["exponential", "'step'"]),
])
def test_bad_set_names_set_not_the_file(xs_path, overrides, key, fragments):
    """A key or value wrong on its own came from the command line: the message blames --set, not the YAML
    file (the file has no `model.d_modle` to look for)."""
    assert_error(xs_path, overrides, key, *fragments, source="--set")


def test_bad_yaml_files(tmp_path):
    assert_error(write_yaml(tmp_path / "a.yaml", {"modle": {"d_model": 64}}), (), "modle",
                 "unknown section", "did you mean 'model'")
    assert_error(write_yaml(tmp_path / "b.yaml", {"model": {"d_model": 64, "n_haeds": 4}}), (), "model.n_haeds",
                 "did you mean 'n_heads'")
    assert_error(write_yaml(tmp_path / "c.yaml", {"model": [1, 2]}), (), "model", "expected a mapping")
    assert_error(write_yaml(tmp_path / "d.yaml", "- just\n- a list\n"), (), "(top level)", "mapping")
    assert_error(write_yaml(tmp_path / "e.yaml", "model: {d_model: [\n"), (), "(yaml)", "not valid YAML")
    assert_error(tmp_path / "missing.yaml", (), "(file)", "no such file")


def test_nothing_is_clamped(xs_path):
    # a rule is enforced by an error, never by quietly training something else
    cfg = load_config(xs_path, overrides=["train.warmup_steps=150", "train.lr=10"])
    assert cfg.train.warmup_steps == 150 and cfg.train.lr == 10.0


def test_parse_overrides_yaml_scalars_lists_and_exponents():
    parsed = parse_overrides(["train.lr=1e-3", "train.eps=1E-8", "model.d_model=1e2", "train.betas=[0.9, 0.99]",
                              "model.norm_gain=false", "model.n_kv_heads=null", "model.parametrization=sp",
                              "data.path=", "train.seed= 7 "])
    assert parsed == {"train.lr": 0.001, "train.eps": 1e-8, "model.d_model": 100.0, "train.betas": [0.9, 0.99],
                      "model.norm_gain": False, "model.n_kv_heads": None, "model.parametrization": "sp",
                      "data.path": None, "train.seed": 7}
    assert isinstance(parsed["train.lr"], float)  # YAML 1.1 alone would give the string '1e-3'
    with pytest.raises(ConfigError, match="--set: lr: expected KEY=VALUE"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["=3"])


def test_overrides_coerce_to_field_types(xs_path):
    cfg = load_config(xs_path, overrides=["model.d_model=1e2", "model.n_heads=2", "model.n_kv_heads=null",
                                          "train.lr=1e-3", "train.betas=[0.8, 0.9]", "train.grad_clip=null"])
    assert cfg.model.d_model == 100 and isinstance(cfg.model.d_model, int)
    assert cfg.model.kv_heads == 2 and cfg.model.d_head == 50
    assert cfg.train.lr == 0.001 and cfg.train.betas == (0.8, 0.9) and cfg.train.grad_clip is None
    assert cfg.model.width_mult == pytest.approx(100 / 64)
    # a mapping of overrides (what a sweep passes) works the same as KEY=VALUE strings
    same = load_config(xs_path, overrides={"model.d_model": 100, "model.n_heads": 2, "model.n_kv_heads": None,
                                           "train.lr": "1e-3", "train.betas": (0.8, 0.9), "train.grad_clip": None})
    assert same == cfg


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    cfg_path = write_yaml(tmp_path / "configs" / "p.yaml",
                          {"model": {"d_model": 64, "base_shapes": "shapes/p.bsh"}, "data": {"path": "../data/tok"}})
    monkeypatch.chdir(tmp_path)  # cwd elsewhere: paths in the file follow the file
    cfg = load_config(cfg_path)
    assert cfg.model.base_shapes == str((tmp_path / "configs" / "shapes" / "p.bsh").resolve())
    assert cfg.data.path == str((tmp_path / "data" / "tok").resolve())
    # paths given on the command line are relative to the current directory, stored absolute
    monkeypatch.chdir(tmp_path / "configs")
    cfg = load_config(cfg_path, overrides=["data.path=other", "model.base_shapes=/abs/x.bsh"])
    assert cfg.data.path == str((tmp_path / "configs" / "other").resolve())
    assert cfg.model.base_shapes == "/abs/x.bsh"
    assert load_config(cfg_path, overrides=["model.base_shapes=null"]).model.base_shapes is None


def test_xs_proxy_loads_with_its_base_shapes(xs_path):
    cfg = load_config(xs_path)
    assert Path(cfg.model.base_shapes).is_file() and Path(cfg.model.base_shapes).is_absolute()
    assert cfg.model.width_mult == 1.0 and cfg.source == str(xs_path)


def test_save_config_round_trip(tmp_path, xs_path):
    cfg = load_config(xs_path, overrides=["model.d_model=128", "train.lr=3e-3", "train.betas=[0.9, 0.98]",
                                          "model.attn_mult=2.5", "train.decay=1-sqrt", "model.n_kv_heads=null"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.is_file() and not list(path.parent.glob(".*"))  # no temp file left behind
    again = load_config(path)
    assert again == cfg and again.train.betas == (0.9, 0.98)
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    # config_to_dict is plain data: it builds the same config back
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_defaults_are_valid_and_derived_values():
    cfg = config_from_dict({})
    assert isinstance(cfg, RunConfig)
    assert cfg.model.d_ffn == 640 and cfg.model.width_mult == 4.0
    assert cfg.tokens_per_step == cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum
    assert math.isfinite(cfg.train.lr)


def test_proxy_ladder_differs_only_in_width():
    proxies = Path(__file__).resolve().parents[1] / "proxies"
    ladder = {name: load_config(proxies / f"{name}.yaml") for name in ("xs", "s", "m", "l")}
    assert [c.model.d_model for c in ladder.values()] == [64, 128, 256, 512]
    assert [c.model.width_mult for c in ladder.values()] == [1, 2, 4, 8]
    rest = [config_to_dict(c) for c in ladder.values()]
    for r in rest:
        r["model"].pop("d_model")
    assert all(r == rest[0] for r in rest)  # depth, heads, base width, data, tokens, schedule, seed
    assert Path(ladder["l"].model.base_shapes).is_file()


def test_every_proxy_config_loads():
    for path in sorted((Path(__file__).resolve().parents[1] / "proxies").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.model.base_shapes is None or Path(cfg.model.base_shapes).is_file(), path


# --- short runs: defaults that scale, every broken schedule rule at once ------------------------


@pytest.mark.parametrize("steps, warmup, decay", [(1, 0, 1), (2, 0, 1), (3, 0, 1), (30, 3, 6), (200, 20, 40),
                                                  (1000, 20, 200)])
def test_short_runs_get_a_warmup_and_decay_that_fit(xs_path, steps, warmup, decay):
    """The proxies leave warmup_steps null: 20, or a tenth of steps when fewer; the decay is at least one step."""
    from windtunnel.training.schedule import make_schedule
    cfg = load_config(xs_path, overrides=[f"train.steps={steps}"])
    assert cfg.train.warmup_steps == warmup and cfg.train.decay_steps_resolved == decay
    s = make_schedule(cfg)
    assert (s.warmup_steps, s.decay_steps) == (warmup, decay)
    assert load_config(xs_path, overrides=[f"train.steps={steps}", "train.warmup_steps=0"]).train.warmup_steps == 0


def test_every_broken_schedule_rule_is_reported_at_once(xs_path):
    err = assert_error(xs_path, ["train.steps=2", "train.warmup_steps=5", "train.decay_steps=3"],
                       "train.warmup_steps", "must be < train.steps=2, got 5",
                       "and train.decay_steps: the decay (3 steps) must fit after the warmup")
    assert str(err).count("train.") >= 4
    assert_error(xs_path, ["train.steps=10", "train.decay_fraction=1.0", "train.warmup_steps=2"],
                 "train.decay_fraction", "the decay (10 steps) must fit after the warmup", "= 10 - 2")
