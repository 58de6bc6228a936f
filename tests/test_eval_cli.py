"""`windtunnel eval context|calibration|tasks` end to end on a tiny proxy trained here, and every bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from windtunnel.cli import main
from windtunnel.config import load_config
from windtunnel.data.token_folder import write_prepared
from windtunnel.eval import load_tasks, make_syntax_tasks, write_tasks
from windtunnel.eval.calibrate import prompt_and_continuations
from windtunnel.eval.tasks import Question
from windtunnel.training.loop import train

CORPUS_BYTES = 400_000  # the tests' embedded corpus (tests/conftest.py TINY)


@pytest.fixture(scope="module")
def run(tmp_path_factory, xs_path_module, tiny_module):
    """A tiny proxy (width 32, max_seq_len 64) trained 150 steps, with its checkpoint."""
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = load_config(xs_path_module, overrides=[*tiny_module, "train.steps=150", "train.checkpoint_every=150",
                                                 "train.eval_every=150", "train.seq_len=64", "train.batch_size=8",
                                                 "train.lr=0.02", "train.device=cpu"])
    assert train(cfg, out_dir=out)["status"] == "ok"
    return out


@pytest.fixture(scope="module")
def xs_path_module():
    from support import ROOT
    return ROOT / "proxies" / "xs.yaml"


@pytest.fixture(scope="module")
def tiny_module():
    from support import TINY
    return list(TINY)


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "syntax.jsonl"
    write_tasks(make_syntax_tasks(n=30, seed=0, context_chars=40, max_bytes=CORPUS_BYTES), path)
    return path


def test_context_end_to_end(run, tmp_path, capsys):
    out = tmp_path / "ctx"
    assert main(["eval", "context", str(run), "--lengths", "1,2,4,8,16,32,64", "--windows", "24", "--quiet",
                 "--out", str(out)]) == 0
    r = json.loads((out / "context.json").read_text())
    assert r["lengths"] == [1, 2, 4, 8, 16, 32, 64] and r["windows"] == 24 and r["tokens_scored"] == 24 * 64
    assert r["data"].endswith(f"-{CORPUS_BYTES}") and r["device"] == "cpu" and r["precision"] == "fp32"
    rows = list(csv.DictReader((out / "context.csv").read_text().splitlines()))
    assert [int(row["length"]) for row in rows] == r["lengths"]
    losses = [float(row["loss"]) for row in rows]
    assert all(0 < x < np.log(256) + 1 for x in losses)
    tokens = np.array([p["tokens"] for p in r["points"]])
    for k, p in enumerate(r["points"]):  # the loss over positions 1..t is the token-weighted bucket mean
        assert p["cumulative_loss"] == pytest.approx(np.average(losses[:k + 1], weights=tokens[:k + 1]))
    # a proxy this small barely uses its context, so the fit may or may not succeed; either way it says so
    assert set(r["fit"]) >= {"a", "b", "c", "a_se", "b_se", "c_se", "r2"} or "error" in r["fit"]
    assert (out / "context.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert ("fit L(t) = b + (t/c)^a: a = " in printed) == ("a" in r["fit"])


def test_context_defaults_to_the_run_folder_and_its_eval_dir(run):
    assert main(["eval", "context", str(run / "checkpoints" / "step_00000150.pt"), "--windows", "4",
                 "--quiet"]) == 0
    r = json.loads((run / "eval" / "context.json").read_text())
    assert r["lengths"] == [1, 2, 4, 8, 16, 32, 64]  # powers of two up to max_seq_len 64
    shutil.rmtree(run / "eval")


def test_calibration_end_to_end(run, tasks_file, tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["eval", "calibration", str(run), "--tasks", str(tasks_file), "--scoring", "text", "--bins", "10",
                 "--quiet", "--out", str(out)]) == 0
    r = json.loads((out / "calibration.json").read_text())
    s = r["overall"]
    assert s["n"] == 30 and s["bins"] == 10 and len(s["reliability"]) == 10
    assert sum(b["count"] for b in s["reliability"]) == 30
    rows = list(csv.DictReader((out / "calibration_questions.csv").read_text().splitlines()))
    assert s["accuracy"] == pytest.approx(np.mean([int(x["correct"]) for x in rows]))
    assert s["mean_confidence"] == pytest.approx(np.mean([float(x["confidence"]) for x in rows]))
    assert s["chance_accuracy"] == pytest.approx((10 / 3 + 10 / 2 + 10 / 4) / 30)  # 3, 2 and 4 choices
    assert [row["subject"] for row in r["per_subject"]] == ["bracket", "keyword", "quote"]
    assert sum(row["n"] for row in r["per_subject"]) == 30
    assert (out / "reliability.png").stat().st_size > 1000
    assert "ECE " in capsys.readouterr().out
    # letter scoring, one shot: prompts longer than the 64-token context are cut and counted
    assert main(["eval", "calibration", str(run), "--tasks", str(tasks_file), "--shots", "1", "--limit", "6",
                 "--scoring", "letter", "--quiet", "--out", str(out / "letter")]) == 0
    r = json.loads((out / "letter" / "calibration.json").read_text())
    assert r["overall"]["n"] == 6 and r["scoring"] == "letter" and r["prompts_truncated"] == 6


def test_prompt_formats():
    q = Question("x = foo(1", (")", "]"), 0, subject="bracket", delimiter="")
    shot = Question("y = [2", (")", "]"), 1, subject="bracket", delimiter="")
    prompt, conts = prompt_and_continuations(q, [shot], "letter")
    assert prompt == ("The following are multiple choice questions (with answers) about bracket.\n\n"
                      "y = [2\nA. )\nB. ]\nAnswer: B\n\nx = foo(1\nA. )\nB. ]\nAnswer:")
    assert conts == [" A", " B"]
    assert prompt_and_continuations(q, [shot], "text") == ("y = [2]\n\nx = foo(1", [")", "]"])


def test_calibration_takes_its_scoring_from_the_tasks_file_or_says_which(run, tasks_file, tmp_path, capsys):
    """windtunnel's own tasks are scored by their text (the README's way); a file that does not say gets
    letter scoring (MMLU's convention) and a line saying so and how to change it."""
    assert all(q.scoring == "text" for q in load_tasks(tasks_file))
    assert main(["eval", "calibration", str(run), "--tasks", str(tasks_file), "--limit", "4", "--quiet",
                 "--out", str(tmp_path / "own")]) == 0
    assert json.loads((tmp_path / "own" / "calibration.json").read_text())["scoring"] == "text"
    assert "(text scoring, as the tasks file says;" in capsys.readouterr().out
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in q.to_record().items() if k != "scoring"}) + "\n"
                             for q in load_tasks(tasks_file, limit=4)))
    assert main(["eval", "calibration", str(run), "--tasks", str(plain), "--quiet", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "(letter scoring, the MMLU convention; the tasks file does not say (--scoring text" in out
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(plain.read_text() + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0,
                                                     "scoring": "letter"}) + "\n"
                     + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0, "scoring": "text"}) + "\n")
    _bad(capsys, ["eval", "calibration", str(run), "--tasks", str(mixed)], tmp_path / "m",
         "scoring: the records disagree (letter, text); pass --scoring")


def test_tasks_command_writes_a_checked_deterministic_set(tmp_path):
    path = tmp_path / "t.jsonl"
    assert main(["eval", "tasks", "--out", str(path), "-n", "12", "--embedded-bytes", str(CORPUS_BYTES)]) == 0
    questions = load_tasks(path)
    assert len(questions) == 12 and {q.subject for q in questions} == {"bracket", "quote", "keyword"}
    assert questions == make_syntax_tasks(n=12, max_bytes=CORPUS_BYTES)
    for q in questions:
        if q.subject == "bracket":  # the answer closes the innermost bracket the snippet leaves open
            stack = []
            for ch in q.question:
                stack.append(ch) if ch in "([{" else (stack.pop() if ch in ")]}" and stack else None)
            assert "([{".index(stack[-1]) == ")]}".index(q.choices[q.answer])


# --- bad input: one line naming the file and key, exit 2, nothing written ------------------------

def _bad(capsys, argv, out, *expected):
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("windtunnel: error: "), err
    for text in expected:
        assert text in err, err
    assert not out.exists()


@pytest.mark.parametrize("records, expected", [
    ([{"question": "q", "choices": ["a", "b"]}], ["record 1 (line 1): answer: missing"]),
    ([{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "choices": ["a", "b", "c"],
                                                             "answer": 3}],
     ["record 2 (line 2): answer: expected an index in [0, 3)", "got 3"]),
    ([{"question": "q", "choices": ["a"], "answer": 0}], ["record 1 (line 1): choices: expected at least 2"]),
    ([{"question": "q", "choices": "ab", "answer": 0}], ["choices: expected a list of texts"]),
    ([{"question": "q", "choices": ["a", "b"], "answer": 0, "scoring": "logprob"}],
     ["record 1 (line 1): scoring: expected letter or text, got 'logprob'"]),
    ([], ["no questions"]),
])
def test_bad_tasks_files(run, tmp_path, capsys, records, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _bad(capsys, ["eval", "calibration", str(run), "--tasks", str(path)], tmp_path / "out", str(path), *expected)


def test_bad_tasks_json_and_parquet(run, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n\n{not json\n')
    _bad(capsys, ["eval", "calibration", str(run), "--tasks", str(path)], tmp_path / "out",
         "record 2 (line 3): not valid JSON")
    import pandas as pd
    pq = tmp_path / "bad.parquet"
    pd.DataFrame({"question": ["q"], "choices": [["a", "b"]], "answer": [-1]}).to_parquet(pq)
    _bad(capsys, ["eval", "calibration", str(run), "--tasks", str(pq)], tmp_path / "out",
         f"{pq}: record 1: answer: expected an index in [0, 2)")
    _bad(capsys, ["eval", "calibration", str(run), "--tasks", str(tmp_path / "none.jsonl")], tmp_path / "out",
         "none.jsonl: no such tasks file")


def test_missing_run_or_checkpoint(run, tmp_path, capsys, tasks_file):
    _bad(capsys, ["eval", "context", str(tmp_path / "nope")], tmp_path / "out",
         "nope: no such run folder or checkpoint")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    _bad(capsys, ["eval", "calibration", str(bare), "--tasks", str(tasks_file)], tmp_path / "out",
         f"{bare}: no checkpoint under", "kept no weights", "train.final_checkpoint")
    _bad(capsys, ["eval", "context", str(tmp_path)], tmp_path / "out", "not a run folder; expected",
         "config.yaml")


def test_checkpoint_not_matching_its_config(run, tmp_path, capsys):
    ckpt = torch.load(run / "checkpoints" / "step_00000150.pt", weights_only=True)
    cfg = yaml.safe_load(ckpt["config"])
    cfg["model"]["d_model"] = 64
    ckpt["config"] = yaml.safe_dump(cfg)
    bad = tmp_path / "checkpoints" / "step_00000150.pt"
    bad.parent.mkdir()
    torch.save(ckpt, bad)
    _bad(capsys, ["eval", "context", str(bad)], tmp_path / "out", str(bad), "does not match its config",
         "size mismatch")


def test_data_with_a_larger_vocabulary_than_the_model(run, tmp_path, capsys):
    ids = np.arange(5000) % 300
    data = write_prepared(tmp_path / "big", ids, ids, vocab_size=300, tokenizer="test", sources="test")
    _bad(capsys, ["eval", "context", str(run), "--data", str(data)], tmp_path / "out",
         f"{data / 'meta.json'}: vocab_size 300 exceeds the model's vocabulary (256")


@pytest.mark.parametrize("lengths, expected", [
    ("", "got an empty list"), ("8,4,16", "expected strictly increasing"), ("4,4", "strictly increasing"),
    ("1,2,x", "expected comma-separated integers"), ("0,4", "expected positive integers"),
    ("16,32,128", "128 is longer than"),
])
def test_bad_lengths(run, tmp_path, capsys, lengths, expected):
    _bad(capsys, ["eval", "context", str(run), "--lengths", lengths], tmp_path / "out", "--lengths: ", expected)


def test_hf_model_and_tasks_need_their_packages(run, tmp_path, capsys, tasks_file):
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        _bad(capsys, ["eval", "context", "hf:some/model", "--data", str(tmp_path)], tmp_path / "out",
             "hf:some/model: needs the transformers package", "windtunnel[hf]")
    if importlib.util.find_spec("datasets") is None:
        _bad(capsys, ["eval", "calibration", str(run), "--tasks", "hf:cais/mmlu"], tmp_path / "out",
             "hf:cais/mmlu: needs the datasets package")
