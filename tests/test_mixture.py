"""Data mixtures: config keys and their errors, sampling by weight, decay-phase mixtures, runs that use them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from windtunnel.config import apply_overrides, config_from_dict, load_config, parse_overrides
from windtunnel.data.mixture import MixtureSampler, ValSet, build_samplers
from windtunnel.data.preparation import prepare
from windtunnel.data.token_folder import write_prepared
from windtunnel.errors import ConfigError
from windtunnel.training.loop import train
from windtunnel.training.schedule import make_schedule


def _sources(n_tokens=5000):
    return {name: np.full(n_tokens, i, np.uint8) for i, name in enumerate(("web", "code", "math"))}


def _source_counts(sampler, steps) -> np.ndarray:
    counts = np.zeros(len(sampler.names))
    for step in steps:
        which, _ = sampler.choose(step)
        counts += np.bincount(which, minlength=len(sampler.names))
    return counts / counts.sum()


def test_sampling_frequencies_match_weights():
    s = MixtureSampler(_sources(), weights={"web": 5, "code": 3, "math": 2}, batch_size=16, seq_len=8, seed=1)
    freq = _source_counts(s, range(500))  # 8000 draws: 3 sigma of a share of 0.5 is 0.017
    assert np.allclose(freq, [0.5, 0.3, 0.2], atol=0.02)
    x, y = s.batch(3)
    which, offsets = s.choose(3)
    assert x.shape == (16, 8) and bool((x[:, 0] == torch_tensor(which)).all())  # rows hold their source
    assert bool((x[:, 1:] == y[:, :-1]).all())


def torch_tensor(a):
    import torch
    return torch.from_numpy(np.asarray(a, dtype=np.int64))


def test_zero_weight_never_sampled_and_batches_are_pure():
    s = MixtureSampler(_sources(), weights={"web": 1, "code": 0, "math": 1}, batch_size=8, seq_len=8, seed=3)
    assert _source_counts(s, range(200))[1] == 0
    again = MixtureSampler(_sources(), weights={"web": 1, "code": 0, "math": 1}, batch_size=8, seq_len=8, seed=3)
    other = MixtureSampler(_sources(), weights={"web": 1, "code": 0, "math": 1}, batch_size=8, seq_len=8, seed=4)
    assert all(np.array_equal(s.choose(k)[1], again.choose(k)[1]) for k in (0, 7, 99))
    assert not np.array_equal(s.choose(7)[1], other.choose(7)[1])
    _, offsets = s.choose(5)
    assert offsets.min() >= 0 and offsets.max() <= 5000 - 8 - 1 + 1


def test_decay_phase_switches_mixture():
    s = MixtureSampler(_sources(), weights={"web": 1, "code": 0, "math": 0}, batch_size=16, seq_len=8, seed=0,
                       decay_weights={"web": 0, "code": 1, "math": 3}, decay_start=100)
    assert _source_counts(s, range(100)).tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(_source_counts(s, range(100, 500)), [0, 0.25, 0.75], atol=0.02)


def test_sampler_rejects_bad_weights_and_short_sources():
    with pytest.raises(ValueError, match="not all 0"):
        MixtureSampler(_sources(), weights={"web": 0, "code": 0, "math": 0}, batch_size=2, seq_len=8, seed=0)
    with pytest.raises(ValueError, match="weights name"):
        MixtureSampler(_sources(), weights={"web": 1}, batch_size=2, seq_len=8, seed=0)
    short = {**_sources(), "math": np.zeros(5, np.uint8)}
    with pytest.raises(Exception, match="seq_len"):
        MixtureSampler(short, weights={"web": 1, "code": 1, "math": 1}, batch_size=2, seq_len=8, seed=0)
    MixtureSampler(short, weights={"web": 1, "code": 1, "math": 0}, batch_size=2, seq_len=8, seed=0)  # unused


def test_val_set_weighted_mean():
    vs = ValSet({"web": ["w"], "code": ["c"], "math": ["m"]}, weights={"web": 3, "code": 1, "math": 0})
    loss = vs.evaluate(lambda batches: {"w": 2.0, "c": 4.0, "m": 100.0}[batches[0]])
    assert loss == pytest.approx(0.75 * 2 + 0.25 * 4)
    assert vs.row() == {"val_loss.web": 2.0, "val_loss.code": 4.0, "val_loss.math": 100.0}
    assert vs.columns == ["val_loss.web", "val_loss.code", "val_loss.math"]
    assert ValSet({"data": []}, weights={"data": 1}).columns == []


# --- config ---------------------------------------------------------------------------------------

BASE = {"data": {"sources": {"web": "/d/web", "code": "/d/code"}, "mixture": {"web": 0.7, "code": 0.3}}}


def _cfg(overrides, base=BASE):
    return config_from_dict(apply_overrides(base, parse_overrides(overrides), source="m.yaml"), source="m.yaml")


def test_mixture_weight_override_is_normalised_and_input_untouched():
    cfg = _cfg(["data.mixture.code=2.1"])
    assert cfg.data.weights() == pytest.approx({"web": 0.25, "code": 0.75})
    assert cfg.data.weights("val_mixture") == cfg.data.weights()  # defaults to the training mixture
    assert BASE["data"]["mixture"] == {"web": 0.7, "code": 0.3}
    cfg = _cfg(["data.mixture_decay.web=1", "data.mixture_decay.code=1", "data.val_mixture.web=1",
                "data.val_mixture.code=0"])
    assert cfg.data.weights("mixture_decay") == {"web": 0.5, "code": 0.5}
    assert cfg.data.weights("val_mixture") == {"web": 1.0, "code": 0.0}


@pytest.mark.parametrize("overrides, key, message", [
    (["data.mixture.cod=0.3"], "data.mixture.cod", "unknown source (did you mean 'code'?)"),
    (["data.mixture.code=-0.1"], "data.mixture.code", "must be >= 0, got -0.1"),
    (["data.mixture.code=lots"], "data.mixture.code", "expected a finite number, got 'lots'"),
    (["data.mixture.code=0", "data.mixture.web=0"], "data.mixture", "needs at least one weight > 0"),
    (["data.mixture_decay.web=1"], "data.mixture_decay.code", "missing; give every source"),
    (["data.mixture_decay.web=1", "data.mixture_decay.code=1", "train.schedule=cosine"],
     "data.mixture_decay", "needs a decay phase (train.schedule: wsd)"),
    (["data.path=/d/x"], "data.sources", "cannot be combined with data.path"),
    (["data.mixture=null"], "data.mixture", "required with 2 sources"),
    (["data.sources.web.x=1"], "data.sources.web", "expected a mapping to set data.sources.web.x in"),
    (["data.sources={a.b: /x}", "data.mixture=null"], "data.sources.a.b", "without dots"),
])
def test_mixture_config_errors_name_the_key(overrides, key, message):
    with pytest.raises(ConfigError) as e:
        _cfg(overrides)
    assert e.value.key == key and message in e.value.message and str(e.value).startswith("m.yaml: ")


def test_weights_without_sources_is_an_error():
    with pytest.raises(ConfigError, match=r"data\.mixture: needs data\.sources"):
        config_from_dict({"data": {"mixture": {"web": 1}}}, source="m.yaml")


def test_sources_resolved_relative_to_config_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "m.yaml").write_text(yaml.safe_dump(BASE | {"data": {
        "sources": {"web": "../data/web", "code": "/abs/code"}, "mixture": {"web": 1, "code": 1}}}))
    cfg = load_config(tmp_path / "cfg" / "m.yaml", overrides=["data.mixture.web=3"])
    assert cfg.data.sources == {"web": str(tmp_path / "data" / "web"), "code": "/abs/code"}
    assert cfg.data.mixture == {"web": 3.0, "code": 1.0}


# --- runs on prepared data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two byte-level sources with very different text: digits vs lowercase letters."""
    tmp = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    for name, alphabet in (("digits", b"0123456789 \n"), ("letters", b"abcdefghijklmnopqrstuvwxyz \n")):
        tokens = np.frombuffer(alphabet, np.uint8)[rng.integers(0, len(alphabet), 60_000)]
        write_prepared(tmp / name, tokens[:50_000], tokens[50_000:], vocab_size=256, tokenizer="byte",
                       sources=name)
    return tmp


@pytest.fixture
def tiny(tiny_overrides):
    return [o for o in tiny_overrides if not o.startswith("data.")]


def _mix_cfg(two_sources, tiny, extra=()):
    data = {"data": {"sources": {"digits": str(two_sources / "digits"), "letters": str(two_sources / "letters")},
                     "mixture": {"digits": 1, "letters": 1}, "val_mixture": {"digits": 1, "letters": 1}}}
    overrides = parse_overrides(tiny + list(extra))
    return config_from_dict(apply_overrides(data, overrides, source="mix"), source="mix")


def test_sweep_over_a_mixture_weight_trains_and_records(two_sources, tiny, tmp_path):
    results = {}
    for w in (0.0, 1.0):  # what a sweep does per trial: set the key, train
        cfg = _mix_cfg(two_sources, tiny, [f"data.mixture.letters={w}", "train.steps=80", "train.eval_every=40",
                                     "train.lr=0.03"])
        out = tmp_path / f"w{w}"
        summary = train(cfg, out_dir=out)
        assert summary["status"] == "ok"
        assert yaml.safe_load((out / "config.yaml").read_text())["data"]["mixture"]["letters"] == w
        by = summary["val_loss_by_source"]
        assert summary["val_loss"] == pytest.approx(0.5 * by["digits"] + 0.5 * by["letters"])
        with open(out / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["val_loss"]]
        assert [float(rows[-1]["val_loss.digits"]), float(rows[-1]["val_loss.letters"])] == \
            pytest.approx([by["digits"], by["letters"]])
        results[w] = by
    # trained only on digits, the model knows digits better than the one that saw letters half the time,
    # and letters worse: the weight really steers the data
    assert results[0.0]["digits"] < results[1.0]["digits"]
    assert results[0.0]["letters"] > results[1.0]["letters"]


def test_decay_mixture_switches_at_the_wsd_decay(two_sources, tiny):
    cfg = _mix_cfg(two_sources, tiny, ["data.mixture.letters=0", "data.mixture_decay.digits=0",
                                 "data.mixture_decay.letters=1", "train.grad_accum=2", "train.steps=10",
                                 "train.decay_steps=4"])
    sampler, _ = build_samplers(cfg, decay_start=make_schedule(cfg).decay_start)
    assert sampler.decay_start == 6 * 2  # optimizer step 6, in micro-batches
    assert set(sampler.choose(11)[0]) == {0} and set(sampler.choose(12)[0]) == {1}
    with pytest.raises(ValueError, match="needs the schedule's decay_start"):
        build_samplers(cfg)


def test_prepared_data_path_and_vocab_mismatch(two_sources, tiny, tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": f"doc {i} " * 30}) + "\n" for i in range(200)))
    bpe = prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "bpe", tokenizer="bpe:300", val_fraction=0.2)
    base = tiny
    cfg = config_from_dict(apply_overrides({}, parse_overrides(base + [f"data.path={bpe.path}"]), source="p"),
                           source="p")
    with pytest.raises(ConfigError, match=rf"p: model\.vocab_size: must be >= the vocabulary of {bpe.path} "
                                          r"\(data\.path: 300, tokenizer bpe\), got 256"):
        train(cfg, out_dir=tmp_path / "run")
    cfg = config_from_dict(apply_overrides({}, parse_overrides(base + [f"data.path={bpe.path}",
                                                                       "model.vocab_size=320"]), source="p"))
    assert train(cfg, out_dir=tmp_path / "run")["status"] == "ok"  # a proxy on prepared BPE data

    mixed = _mix_cfg(two_sources, tiny, [f"data.sources.letters={bpe.path}", "model.vocab_size=320"])
    with pytest.raises(ConfigError, match=r"data\.sources\.letters: .*tokenized with bpe \(vocab 300\).*"
                                          r"same tokenizer"):
        build_samplers(mixed)
    missing = _mix_cfg(two_sources, tiny, [f"data.sources.letters={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"mix: data\.sources\.letters: no prepared data folder at .*nope; "
                                          r"make one with `windtunnel data prepare"):
        build_samplers(missing)
