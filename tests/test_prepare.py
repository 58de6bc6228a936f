"""`windtunnel data prepare`: every source kind, byte/BPE/file tokenizers, counts and every bad input."""

from __future__ import annotations

import gzip
import json
import os
import random
import stat
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from windtunnel.cli import main
from windtunnel.data.preparation import prepare, split_of
from windtunnel.data.sources import TEXT_BLOCK, expand_sources
from windtunnel.data.token_folder import load_tokens
from windtunnel.data.tokenizers import EOS_TOKEN, ByteLevelTokenizer, load_tokenizer, parse_tokenizer
from windtunnel.errors import DataError

WORDS = ("the wind tunnel measures a small model before the large one is trained ; "
         "Größe déjà vu naïve 東京 😀 λx. x + 1 \t tab").split(" ")


def docs(n: int, seed: int = 0, words: int = 40) -> list[str]:
    """Deterministic pseudo-documents with non-ASCII text and varied whitespace."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, words))) + "\n" for _ in range(n)]


def write_jsonl(path, texts, field="text", extra=None):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, field: t, **(extra or {})}, ensure_ascii=False) + "\n")
    return path


def decoded(data, tok=None) -> tuple[str, str]:
    tok = tok or load_tokenizer(data.path)
    return tok.decode(np.asarray(data.train)), tok.decode(np.asarray(data.val))


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- each source kind ---------------------------------------------------------------------------


def test_text_folder_and_glob_byte_round_trip(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    texts = {f"sub/d{i}.txt" if i % 2 else f"d{i}.txt": "".join(docs(3, seed=i)) for i in range(20)}
    for rel, t in texts.items():
        (corpus / rel).write_text(t, encoding="utf-8")
    (corpus / ".hidden").write_text("never read")
    data = prepare([str(corpus)], out=tmp_path / "out", val_fraction=0.3)
    m = data.meta
    assert (m["tokenizer"], m["vocab_size"], m["dtype"], m["files"]) == ("byte", 256, "uint8", 20)
    assert m["train_tokens"] == len(data.train) and m["val_tokens"] == len(data.val)
    assert m["train_tokens"] + m["val_tokens"] == m["input_bytes"] == sum(len(t.encode()) for t in texts.values())
    load_tokens(data.path, verify=True)  # sha256 in meta.json matches the bins
    train, val = decoded(data)
    for rel, t in texts.items():  # each small file is one unit: wholly in the split its hash names
        split = split_of(f"{rel}#0", 0.3)
        assert t in (val if split == "val" else train)
    assert m["documents"]["train"] + m["documents"]["val"] == 20 and m["units"]["val"] > 0
    assert "never read" not in train + val

    globbed = prepare([str(corpus / "**" / "*.txt")], out=tmp_path / "glob", val_fraction=0.3)
    assert globbed.meta["files"] == 20
    assert globbed.meta["sha256"] == m["sha256"]  # same keys (relative to the glob root), same split


def test_large_text_file_without_blank_lines_is_split_at_line_ends(tmp_path):
    text = "".join(docs(6000, seed=1))
    assert len(text.encode()) > 8 * TEXT_BLOCK
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    gz = tmp_path / "big2.txt.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    data = prepare([str(tmp_path / "big.txt")], out=tmp_path / "out", val_fraction=0.3)
    assert data.meta["units"]["train"] > 0 and data.meta["units"]["val"] > 0
    assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 1  # the file
    assert set(data.meta["unit_kinds"]) == {"lines"}  # no blank line: runs of whole lines
    train, val = decoded(data)
    assert len(train.encode()) + len(val.encode()) == len(text.encode())
    assert sorted(train.splitlines() + val.splitlines()) == sorted(text.splitlines())  # cut at line ends
    gzd = prepare([str(gz)], out=tmp_path / "gz", val_fraction=0.3)
    assert gzd.meta["train_tokens"] + gzd.meta["val_tokens"] == len(text.encode())


def test_jsonl_field_gz_and_documents(tmp_path):
    texts = docs(300, seed=2)
    write_jsonl(tmp_path / "a.jsonl", texts[:150], field="content")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"content": t}) + "\n" for t in texts[150:])
    data = prepare([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl.gz")], out=tmp_path / "out",
                   text_field="content", val_fraction=0.1)
    m = data.meta
    assert m["documents"]["train"] + m["documents"]["val"] == 300 == m["units"]["train"] + m["units"]["val"]
    assert 10 <= m["documents"]["val"] <= 55
    train, val = decoded(data)
    val_docs = [t for i, t in enumerate(texts) if split_of(f"{'a.jsonl' if i < 150 else 'b.jsonl.gz'}:"
                                                            f"{i % 150 + 1}", 0.1) == "val"]
    assert val == "".join(val_docs) and len(val_docs) == m["documents"]["val"]


def test_parquet_column(tmp_path):
    texts = docs(2500, seed=3)
    pq.write_table(pa.table({"id": list(range(2500)), "body": texts}), tmp_path / "t.parquet", row_group_size=700)
    data = prepare([str(tmp_path / "t.parquet")], out=tmp_path / "out", text_field="body", val_fraction=0.05)
    train, val = decoded(data)
    assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 2500
    assert train + val != "" and sorted((train + val).splitlines()) == sorted(t.rstrip("\n") for t in texts)


def test_hf_dataset_needs_datasets_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(DataError, match=r"hf:wikitext.*`datasets` package and network"):
        prepare(["hf:wikitext"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hf_dataset_streams_rows(tmp_path, monkeypatch):
    calls = []
    rows = [{"text": t} for t in docs(200, seed=4)]

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter(rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = prepare(["hf:wikitext:wikitext-2-raw-v1@validation"], out=tmp_path / "out", val_fraction=0.2)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "validation", True)]
    assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 200
    train, val = decoded(data)
    assert sorted((train + val).splitlines()) == sorted(r["text"].rstrip("\n") for r in rows)


# --- tokenizers ---------------------------------------------------------------------------------


def test_byte_tokenizer_round_trip():
    tok = parse_tokenizer("byte")
    for text in docs(20, seed=5) + ["", "\r\n\x00", "😀" * 3]:
        ids = tok.encode(text)
        assert ids.dtype == np.uint8 and len(ids) == len(text.encode()) and tok.decode(ids) == text


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bpe")
    texts = docs(400, seed=6) + [f"literal {EOS_TOKEN} in text\n"]
    write_jsonl(tmp / "c.jsonl", texts)
    return texts, prepare([str(tmp / "c.jsonl")], out=tmp / "out", tokenizer="bpe:320", val_fraction=0.1)


def test_bpe_trained_saved_and_round_trips(bpe_data):
    texts, data = bpe_data
    m = data.meta
    assert (m["tokenizer"], m["dtype"], m["eos_id"], m["tokenizer_file"]) == ("bpe", "uint16", 0, "tokenizer.json")
    assert 257 < m["vocab_size"] <= 320 and (data.path / "tokenizer.json").is_file()
    tok = load_tokenizer(data.path)
    for text in texts + ["unseen: Zürich 🚀\n\n  \t"]:
        assert tok.decode(tok.encode(text)) == text
    eos = tok.eos_id
    assert int((np.asarray(data.train) == eos).sum() + (np.asarray(data.val) == eos).sum()) == len(texts)
    # the literal separator text is ordinary text, never the separator id
    assert tok.encode(EOS_TOKEN).tolist() != [eos]
    assert m["train_tokens"] < 0.8 * m["input_bytes"]  # merges learned: fewer tokens than bytes
    decoded_docs = tok.decode(np.asarray(data.train)).split(EOS_TOKEN)  # documents come back whole
    assert set(decoded_docs[:-1]) <= set(texts) and decoded_docs[-1] == ""


def test_existing_tokenizer_file_gives_same_tokens(bpe_data, tmp_path):
    _, data = bpe_data
    again = prepare([str(data.path.parent / "c.jsonl")], out=tmp_path / "out",
                    tokenizer=str(data.path / "tokenizer.json"), val_fraction=0.1)
    assert again.meta["tokenizer"] == "file" and again.meta["vocab_size"] == data.meta["vocab_size"]
    assert again.meta["sha256"] == data.meta["sha256"]
    assert again.meta["tokenizer_sha256"] == data.meta["tokenizer_sha256"]


def test_preparation_is_deterministic(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", docs(100, seed=7))
    a = prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "a", tokenizer="bpe:300", val_fraction=0.2)
    b = prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "b", tokenizer="bpe:300", val_fraction=0.2)
    assert a.meta["sha256"] == b.meta["sha256"] and a.meta["tokenizer_sha256"] == b.meta["tokenizer_sha256"]


# --- bad input: one clear error naming the file, nothing written -----------------------------------


def _fails(tmp_path, sources, match, **kwargs):
    with pytest.raises(DataError, match=match):
        prepare([str(s) for s in sources], out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    write_jsonl(tmp_path / "blank.jsonl", ["", ""])
    _fails(tmp_path, [tmp_path / "empty.txt", tmp_path / "blank.jsonl"], r"empty\.txt.*empty corpus")
    _fails(tmp_path, [tmp_path / "empty.txt"], r"empty corpus", tokenizer="bpe:300")


def test_unreadable_files(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"ok text\n" * 10 + b"\xff\xfe\x00bad")
    _fails(tmp_path, [tmp_path / "bin.txt"], r"bin\.txt: not UTF-8 text \(bad byte at offset 80\)")
    (tmp_path / "bin.txt").unlink()
    (tmp_path / "broken.txt.gz").write_bytes(gzip.compress(b"hello\n" * 1000)[:-30])
    _fails(tmp_path, [tmp_path / "broken.txt.gz"], r"broken\.txt\.gz: cannot read")
    (tmp_path / "broken.txt.gz").unlink()
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    _fails(tmp_path, [tmp_path / "bad.parquet"], r"bad\.parquet: not a readable Parquet file")
    (tmp_path / "bad.parquet").unlink()
    _fails(tmp_path, [tmp_path / "missing.txt"], r"missing\.txt: no such file or folder")
    _fails(tmp_path, [tmp_path / "*.nothing"], r"\*\.nothing: matches no file")


def test_jsonl_bad_lines_name_file_and_line(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", docs(50, seed=8))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    # the failure comes after a whole good file was written: still nothing left behind
    _fails(tmp_path, [good, bad], r"bad\.jsonl:2: no 'text' field \(found \['txt'\]\)")
    _fails(tmp_path, [good, bad], r"bad\.jsonl:2: no 'text' field", tokenizer="bpe:300")  # while learning
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    _fails(tmp_path, [bad], r"bad\.jsonl:2: field 'text' is int; expected a string")
    bad.write_text('{"text": "fine"}\n\n{"text": oops}\n')
    _fails(tmp_path, [bad], r"bad\.jsonl:3: not valid JSON")
    bad.unlink()
    pq.write_table(pa.table({"body": ["a", None]}), tmp_path / "t.parquet")
    _fails(tmp_path, [tmp_path / "t.parquet"], r"t\.parquet: no column 'text' \(columns: body\)")
    _fails(tmp_path, [tmp_path / "t.parquet"], r"t\.parquet: row 1: column 'body' is null", text_field="body")


def test_bad_options(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", docs(3, seed=9))
    src = [tmp_path / "c.jsonl"]
    _fails(tmp_path, src, r"--val-fraction: expected a number in \(0, 1\), got 1.5", val_fraction=1.5)
    write_jsonl(tmp_path / "one.jsonl", docs(1, seed=9))
    _fails(tmp_path, [tmp_path / "one.jsonl"], r"one\.jsonl holds a single unit \(1 JSON record\)", val_fraction=0.5)
    _fails(tmp_path, src, r"--tokenizer bpe:100: expected bpe:VOCAB", tokenizer="bpe:100")
    _fails(tmp_path, src, r"--bpe-sample-mb: expected a positive size", tokenizer="bpe:300", bpe_sample_bytes=0)
    _fails(tmp_path, src, r"--tokenizer wordpiece: expected 'byte'", tokenizer="wordpiece")
    (tmp_path / "tok.json").write_text("{}")
    _fails(tmp_path, src, r"tok\.json: not a valid tokenizer\.json", tokenizer=str(tmp_path / "tok.json"))


def test_existing_out_kept_unless_overwrite(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", docs(60, seed=10))
    first = prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "out", val_fraction=0.2)
    with pytest.raises(DataError, match=r"out: already exists"):
        prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "out", val_fraction=0.2)
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):  # a failed overwrite keeps the old data
        prepare([str(tmp_path / "bad.jsonl")], out=tmp_path / "out", overwrite=True)
    assert load_tokens(tmp_path / "out").meta["sha256"] == first.meta["sha256"]
    second = prepare([str(tmp_path / "c.jsonl")], out=tmp_path / "out", val_fraction=0.5, overwrite=True)
    assert second.meta["sha256"] != first.meta["sha256"] and leftovers(tmp_path) == []


def test_expand_sources_dedupes_and_orders(tmp_path):
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text("x\n")
    files = expand_sources([str(tmp_path / "*.txt"), str(tmp_path), str(tmp_path / "a.txt")])
    assert [(f.key, f.kind) for f in files] == [("a.txt", "text"), ("b.txt", "text"), ("c.jsonl", "jsonl")]


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_prepare_and_errors(tmp_path, capsys):
    write_jsonl(tmp_path / "c.jsonl", docs(80, seed=11))
    rc = main(["data", "prepare", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "out"),
               "--val-fraction", "0.2", "--quiet"])
    out = capsys.readouterr()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert rc == 0 and f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens" in out.out
    assert "MB/s" in out.out and "--set data.path=" in out.err
    rc = main(["data", "prepare", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == f"windtunnel: error: {tmp_path / 'nope.jsonl'}: no such file or folder"


def test_byte_level_tokenizer_batch_matches_single():
    tok = ByteLevelTokenizer()
    texts = docs(5, seed=12)
    assert [a.tolist() for a in tok.encode_batch(texts)] == [tok.encode(t).tolist() for t in texts]


# --- folder permissions and the progress display ------------------------------------------------


@pytest.mark.parametrize("umask, expected", [(0o022, 0o755), (0o002, 0o775)])
def test_prepared_folder_honours_the_umask(tmp_path, umask, expected):
    """On a shared cluster file system the other nodes and users must read the data: not drwx------."""
    write_jsonl(tmp_path / "a.jsonl", docs(50))
    old = os.umask(umask)
    try:
        data = prepare([str(tmp_path / "a.jsonl")], out=tmp_path / "data", val_fraction=0.2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(data.path).st_mode) == expected
    assert stat.S_IMODE(os.stat(data.path / "train.bin").st_mode) == expected & 0o666


def test_prepare_shows_one_progress_bar_even_when_it_writes_twice(tmp_path, capsys):
    """Three paragraphs: the hash puts none in val, so one moves there and the splits are written again;
    the display stays one bar (one line), not two identical ones."""
    (tmp_path / "a.txt").write_text("\n\n".join(f"paragraph {i} " * 400 for i in range(3)))
    data = prepare([str(tmp_path / "a.txt")], out=tmp_path / "data", val_fraction=0.01, progress=True)
    assert data.meta["split_forced"]  # the second pass did happen
    lines = [line for line in capsys.readouterr().err.split("\n") if "prepare" in line]
    assert len(lines) == 1, lines
