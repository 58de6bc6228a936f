"""provenance.json: what a run folder records (format version, versions, commit, hardware, corpus), how
a resumed run adds to it, and how readers meet a folder from before it existed or of a newer format."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata

import numpy as np
import pytest
import yaml

from windtunnel.analysis.runs import load_run, read_results
from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.data.corpus import open_data
from windtunnel.data.token_folder import write_prepared
from windtunnel.errors import WindtunnelError
from windtunnel.fullrun.proxy import load_proxy
from windtunnel.provenance import (
    FORMAT_VERSION,
    PROVENANCE_FILE,
    check_format,
    corpus_identity,
    read_provenance,
    write_provenance,
)
from windtunnel.training.loop import train

from support import ROOT


def _stored_hash(*named_metas):
    h = hashlib.sha256()
    for name, meta in named_metas:
        h.update(json.dumps([name, meta["sha256"]], sort_keys=True).encode())
    return h.hexdigest()


def test_a_run_records_its_format_and_provenance_and_a_resume_adds_a_session(tmp_path, xs_path, tiny_overrides):
    cfg = load_config(xs_path, overrides=[*tiny_overrides, "train.device=cpu", "train.steps=4", "train.eval_every=4"])
    run = tmp_path / "run"
    train(cfg, out_dir=run)
    prov = json.loads((run / PROVENANCE_FILE).read_text())
    assert prov["format_version"] == FORMAT_VERSION == 1 and prov["kind"] == "run" and prov["resumed"] == []
    created = prov["created"]
    assert created["packages"] == {name: metadata.version(name) for name in ("windtunnel", "torch", "mup", "ray",
                                                                             "optuna")}
    assert created["hardware"]["cpu_count"] == os.cpu_count() and created["hardware"]["gpus"] == []
    assert created["pid"] == os.getpid() and created["written_at"].endswith("Z")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # the tests run from a checkout: the commit is the checkout's
        assert created["git"]["commit"] == head.stdout.strip()
    data = open_data(max_bytes=cfg.data.embedded_bytes)
    assert created["corpus"]["sources"]["data"]["path"] == str(data.path)
    assert created["corpus"]["sha256"] == _stored_hash(("data", data.meta))  # from meta.json, nothing re-read

    train(cfg, out_dir=run, resume=True)
    again = json.loads((run / PROVENANCE_FILE).read_text())
    assert again["created"] == created and len(again["resumed"]) == 1
    assert again["resumed"][0]["corpus"] == created["corpus"]


def _prepared(folder, seed):
    rng = np.random.default_rng(seed)
    return write_prepared(folder, rng.integers(0, 256, 4000), rng.integers(0, 256, 400), vocab_size=256,
                          tokenizer="byte", sources="test")


def test_the_corpus_hash_uses_the_stored_hashes_and_names_a_mixture(tmp_path):
    web, code = _prepared(tmp_path / "web", 0), _prepared(tmp_path / "code", 1)
    metas = {n: json.loads((tmp_path / n / "meta.json").read_text()) for n in ("web", "code")}
    one = corpus_identity({"path": str(web)})
    assert one["sha256"] == _stored_hash(("data", metas["web"])) and one["sources"]["data"]["tokenizer"] == "byte"
    mix = corpus_identity({"sources": {"web": str(web), "code": str(code)}})
    assert mix["sha256"] == _stored_hash(("web", metas["web"]), ("code", metas["code"])) != one["sha256"]
    (web / "train.bin").write_bytes(b"\0" * 4000)  # the token files are not read again: a cost of every run
    assert corpus_identity({"path": str(web)}) == one

    meta = {k: v for k, v in metas["web"].items() if k != "sha256"}  # prepared before hashes were stored
    (web / "meta.json").write_text(json.dumps(meta))
    old = corpus_identity({"path": str(web)})
    assert old["sha256"] is None and old["sources"]["data"]["sha256"] is None


def test_a_resumed_folder_from_before_provenance_gets_only_a_resumed_entry(tmp_path):
    write_provenance(tmp_path, kind="sweep", continued=True)
    prov = read_provenance(tmp_path)
    assert prov["created"] is None and len(prov["resumed"]) == 1 and prov["format_version"] == FORMAT_VERSION


def _sweep_folder(folder):
    folder.mkdir()
    (folder / "results.csv").write_text("trial_id,status,val_loss,tokens,seconds,seed,train.lr\n"
                                        "t0000,ok,2.5,100,1.0,0,0.01\nt0001,ok,2.4,100,1.0,0,0.02\n")
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": "old", "parameters": {"train.lr": {"values": [
        0.01, 0.02]}}}))
    return folder


def test_a_folder_from_before_provenance_reads_as_format_0(tmp_path):
    run = _sweep_folder(tmp_path / "old")
    assert check_format(run) == 0
    assert list(load_run(run).frame["trial_id"]) == ["t0000", "t0001"]


@pytest.mark.parametrize("version", [2, "one"])
def test_a_newer_or_unknown_format_is_refused_with_one_line(tmp_path, capsys, version):
    run = _sweep_folder(tmp_path / "new")
    (run / PROVENANCE_FILE).write_text(json.dumps({"format_version": version, "kind": "sweep"}))
    with pytest.raises(WindtunnelError, match=f"{PROVENANCE_FILE}: format_version"):
        load_run(run)
    with pytest.raises(WindtunnelError, match=f"{PROVENANCE_FILE}: format_version"):
        read_results(run)  # the bare table too: a resumed sweep reads its rows through it
    capsys.readouterr()
    assert main(["results", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run / PROVENANCE_FILE) in err[0]
    if version == 2:
        assert "newer than this windtunnel reads (1); upgrade windtunnel" in err[0]

    single = tmp_path / "single"  # a `windtunnel train` run folder, as `transfer` reads it
    single.mkdir()
    (single / "config.yaml").write_text("model: {}\n")
    (single / PROVENANCE_FILE).write_text(json.dumps({"format_version": 2, "kind": "run"}))
    with pytest.raises(WindtunnelError, match="newer than this windtunnel reads"):
        load_proxy(single)
    capsys.readouterr()
    assert main(["eval", "context", str(single)]) == 2  # `eval` refuses it too, before loading anything
    assert "newer than this windtunnel reads" in capsys.readouterr().err
