"""Tests for windtunnel.data.corpus, .token_folder and .sampling: embedded corpus, prepared
folders, memmaps and batch sampling."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from windtunnel.data import corpus as wc  # noqa: E402
from windtunnel.data import token_folder as wd  # noqa: E402
from windtunnel.data.corpus import corpus_files, embedded_corpus, open_data  # noqa: E402
from windtunnel.data.sampling import BatchSampler, eval_batches  # noqa: E402
from windtunnel.data.token_folder import TokenData, dtype_for_vocab, load_tokens, write_prepared  # noqa: E402
from windtunnel.data.tokenizers import ByteTokenizer  # noqa: E402
from windtunnel.errors import DataError  # noqa: E402

SMALL = 300_000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return embedded_corpus(max_bytes=SMALL, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def data(prepared) -> TokenData:
    return load_tokens(prepared)


def _copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("meta.json", "train.bin", "val.bin"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# ------------------------------------------------------------------------------------------
# Embedded corpus
# ------------------------------------------------------------------------------------------


def test_folder_layout_and_meta(prepared, data):
    vi = sys.version_info
    assert prepared.name == f"embedded-py{vi.major}{vi.minor}-{SMALL}"
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["tokenizer"] == "byte"
    assert meta["vocab_size"] == 256 and data.vocab_size == 256
    assert meta["dtype"] == "uint8"
    assert meta["sources"] == "python-stdlib"
    assert meta["python_version"].startswith(f"{vi.major}.{vi.minor}.")
    assert set(meta["sha256"]) == {"train.bin", "val.bin"}
    # token counts equal file sizes (1 byte per token) and the budget is filled exactly
    assert meta["train_tokens"] == (prepared / "train.bin").stat().st_size
    assert meta["val_tokens"] == (prepared / "val.bin").stat().st_size
    assert meta["train_tokens"] + meta["val_tokens"] == SMALL
    assert len(data.train) == meta["train_tokens"] and len(data.val) == meta["val_tokens"]
    assert isinstance(data.train, np.memmap) and data.train.ndim == 1 and data.train.dtype == np.uint8
    assert not data.train.flags.writeable
    # no temporary folders left beside the target
    assert [p.name for p in prepared.parent.iterdir()] == [prepared.name]


def test_corpus_matches_stdlib_files_in_sorted_order(data):
    files = corpus_files(SMALL)
    rels = [f.relpath for f in files]
    assert rels == sorted(rels)
    assert sum(f.nbytes for f in files) == SMALL
    for f in files:
        parts = f.relpath.split("/")
        assert f.relpath.endswith(".py")
        assert not {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"} & set(parts[:-1])
    root = Path(sysconfig.get_paths()["stdlib"])
    want = {"train": bytearray(), "val": bytearray()}
    for f in files:
        want[f.split] += (root / f.relpath).read_bytes()[: f.nbytes]
    assert bytes(data.train) == bytes(want["train"])
    assert bytes(data.val) == bytes(want["val"])


def test_split_by_file_crc_and_disjoint():
    files = corpus_files(SMALL)
    val = {f.relpath for f in files if f.split == "val"}
    train = {f.relpath for f in files if f.split == "train"}
    assert val and train and not (val & train)
    for f in files:
        assert (f.split == "val") == (zlib.crc32(f.relpath.encode()) % 100 < 5)


def test_default_budget_split_is_about_five_percent():
    files = corpus_files()
    n_val = sum(f.split == "val" for f in files)
    assert sum(f.nbytes for f in files) <= wc.DEFAULT_MAX_BYTES
    assert 0.01 < n_val / len(files) < 0.15


def test_preparation_is_deterministic(prepared, tmp_path):
    other = embedded_corpus(max_bytes=SMALL, cache_dir=tmp_path)
    assert other != prepared
    a = json.loads((prepared / "meta.json").read_text())
    b = json.loads((other / "meta.json").read_text())
    assert a["sha256"] == b["sha256"]
    assert a == b
    assert load_tokens(other, verify=True).meta == b


def test_unigram_entropy(data):
    h = data.meta["unigram_entropy_nats"]
    counts = np.bincount(np.asarray(data.train), minlength=256)
    p = counts[counts > 0] / counts.sum()
    assert h == pytest.approx(float(-(p * np.log(p)).sum()))
    # Python source bytes: ~3.1 nats at 300 KB, ~3.26 nats at 8 MB (CPython 3.11); far below log(256)=5.55
    assert 2.8 < h < 3.8


def test_cache_reused_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_CACHE", str(tmp_path / "envcache"))
    assert wc.cache_root() == tmp_path / "envcache"
    first = embedded_corpus(max_bytes=SMALL)
    assert first.parent == tmp_path / "envcache"
    stamp = (first / "train.bin").stat().st_mtime_ns
    assert embedded_corpus(max_bytes=SMALL) == first
    assert (first / "train.bin").stat().st_mtime_ns == stamp
    d = open_data(path=None, max_bytes=SMALL)
    assert d.path == first and d.meta["sources"] == "python-stdlib"


def test_budget_too_small_for_both_splits(tmp_path):
    # __future__.py sorts first and hashes to val, so 1000 bytes leaves train empty
    with pytest.raises(DataError, match="non-empty"):
        embedded_corpus(max_bytes=1000, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        embedded_corpus(max_bytes=0, cache_dir=tmp_path)


def test_existing_folder_without_meta_is_reported(tmp_path):
    vi = sys.version_info
    (tmp_path / f"embedded-py{vi.major}{vi.minor}-{SMALL}").mkdir()
    with pytest.raises(DataError, match="meta.json"):
        embedded_corpus(max_bytes=SMALL, cache_dir=tmp_path)


def test_race_loser_uses_winner_folder(tmp_path, monkeypatch):
    """Another process publishes the folder between our existence check and our rename."""
    real_rename = os.rename
    winner_meta = {}

    def rename_after_winner(src, dst):
        monkeypatch.setattr(wd.os, "rename", real_rename)  # the winner renames normally
        winner = write_prepared(
            dst, np.arange(10) % 256, np.arange(5) % 256, vocab_size=256, tokenizer="byte", sources="winner"
        )
        winner_meta.update(json.loads((winner / "meta.json").read_text()))
        return real_rename(src, dst)  # fails: dst now exists and is not empty

    monkeypatch.setattr(wd.os, "rename", rename_after_winner)
    out = embedded_corpus(max_bytes=SMALL, cache_dir=tmp_path)
    assert load_tokens(out).meta["sources"] == "winner" == winner_meta["sources"]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # loser's temp folder removed


_CHILD = """
import sys
from windtunnel.data.corpus import embedded_corpus
from windtunnel.data.token_folder import load_tokens
folder = embedded_corpus(max_bytes=int(sys.argv[2]), cache_dir=sys.argv[1])
print(load_tokens(folder).meta["sha256"]["train.bin"])
"""


def test_concurrent_processes(tmp_path):
    """Several processes prepare the same corpus at once: all succeed and agree, one folder remains."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(SMALL)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    shas = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert len(set(shas)) == 1 and len(shas[0]) == 64
    assert len(list(tmp_path.iterdir())) == 1


def test_import_does_not_pull_in_torch():
    code = ("import sys, windtunnel, windtunnel.data.token_folder, windtunnel.data.corpus, windtunnel.data.sampling; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------
# Loading prepared folders: errors name the file
# ------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nope"):
        load_tokens(tmp_path / "nope")


def test_missing_meta(prepared, tmp_path):
    d = _copy_folder(prepared, tmp_path / "d")
    (d / "meta.json").unlink()
    with pytest.raises(DataError) as e:
        load_tokens(d)
    assert str(d / "meta.json") in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "text, expect",
    [
        ("{not json", "JSON"),
        ("[1, 2]", "JSON object"),
        ('{"vocab_size": 256, "dtype": "float32", "train_tokens": 1, "val_tokens": 1}', "dtype"),
        ('{"vocab_size": 70000, "dtype": "uint8", "train_tokens": 1, "val_tokens": 1}', "cannot hold"),
        ('{"vocab_size": 256, "dtype": "uint8", "val_tokens": 1}', "train_tokens"),
        ('{"dtype": "uint8", "train_tokens": 1, "val_tokens": 1}', "vocab_size"),
    ],
)
def test_corrupt_meta(prepared, tmp_path, text, expect):
    d = _copy_folder(prepared, tmp_path / "d")
    (d / "meta.json").write_text(text)
    with pytest.raises(DataError, match=expect) as e:
        load_tokens(d)
    assert str(d / "meta.json") in str(e.value)


def test_truncated_bin(prepared, tmp_path):
    d = _copy_folder(prepared, tmp_path / "d")
    raw = (d / "train.bin").read_bytes()
    (d / "train.bin").write_bytes(raw[:-7])
    with pytest.raises(DataError, match="size mismatch") as e:
        load_tokens(d)
    msg = str(e.value)
    assert str(d / "train.bin") in msg and str(len(raw)) in msg and str(len(raw) - 7) in msg


def test_missing_bin(prepared, tmp_path):
    d = _copy_folder(prepared, tmp_path / "d")
    (d / "val.bin").unlink()
    with pytest.raises(DataError) as e:
        load_tokens(d)
    assert str(d / "val.bin") in str(e.value)


def test_verify_detects_changed_bytes(prepared, tmp_path):
    d = _copy_folder(prepared, tmp_path / "d")
    raw = bytearray((d / "val.bin").read_bytes())
    raw[100] ^= 1
    (d / "val.bin").write_bytes(bytes(raw))
    load_tokens(d)  # size is right: the cheap check passes
    with pytest.raises(DataError, match="sha256") as e:
        load_tokens(d, verify=True)
    assert str(d / "val.bin") in str(e.value)


def test_pickle_sends_only_the_path(data):
    blob = pickle.dumps(data)
    assert len(blob) < 10_000
    back = pickle.loads(blob)
    assert back.path == data.path and back.meta == data.meta
    assert isinstance(back.train, np.memmap)
    assert np.array_equal(back.val, data.val)


def test_write_prepared_wide_vocab(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50257, size=1000)
    val = rng.integers(0, 50257, size=100)
    d = write_prepared(tmp_path / "bpe", train, val, vocab_size=50257, tokenizer="gpt2", sources="demo")
    td = load_tokens(d, verify=True)
    assert td.meta["dtype"] == "uint16" and td.train.dtype == np.dtype("<u2")
    assert (d / "train.bin").stat().st_size == 2000
    assert np.array_equal(td.train, train) and np.array_equal(td.val, val)
    with pytest.raises(DataError, match="already exists"):
        write_prepared(tmp_path / "bpe", train, val, vocab_size=50257, tokenizer="gpt2", sources="demo")
    with pytest.raises(DataError, match="token ids"):
        write_prepared(tmp_path / "bad", train, val, vocab_size=256, tokenizer="x", sources="demo")


def test_dtype_for_vocab_and_tokenizer():
    assert dtype_for_vocab(256) == "uint8"
    assert dtype_for_vocab(257) == "uint16"
    assert dtype_for_vocab(65536) == "uint16"
    assert dtype_for_vocab(65537) == "uint32"
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓")
    assert ids.dtype == np.uint8 and tok.decode(ids) == "héllo ✓"
    assert tok.decode(torch.tensor(ids.astype(np.int64))) == "héllo ✓"


# ------------------------------------------------------------------------------------------
# Batches
# ------------------------------------------------------------------------------------------


def test_batch_is_pure_function_of_seed_and_step(data):
    a = BatchSampler(data.train, batch_size=4, seq_len=64, seed=7)
    b = BatchSampler(data.train, batch_size=4, seq_len=64, seed=7)
    for step in (5, 0, 123456):  # any order
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x0, _ = a.batch(0)
    x1, _ = a.batch(1)
    assert not torch.equal(x0, x1)
    xs, _ = BatchSampler(data.train, batch_size=4, seq_len=64, seed=8).batch(0)
    assert not torch.equal(x0, xs)


def test_batch_shapes_and_shift(data):
    s = BatchSampler(data.train, batch_size=3, seq_len=32, seed=0)
    x, y = s.batch(11)
    assert x.shape == y.shape == (3, 32)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row, off in zip(range(3), s.offsets(11)):
        want = np.asarray(data.train[off : off + 33], dtype=np.int64)
        assert np.array_equal(x[row].numpy(), want[:-1]) and np.array_equal(y[row].numpy(), want[1:])


def test_batch_offsets_cover_the_array():
    tokens = np.arange(20, dtype=np.int64)
    s = BatchSampler(tokens, batch_size=64, seq_len=19, seed=0)  # only offset 0 fits
    x, y = s.batch(3)
    assert torch.equal(x, torch.arange(19).expand(64, 19))
    assert torch.equal(y, torch.arange(1, 20).expand(64, 19))
    s = BatchSampler(tokens, batch_size=256, seq_len=4, seed=0)
    offs = np.concatenate([s.offsets(i) for i in range(4)])
    assert offs.min() == 0 and offs.max() == 20 - 4 - 1


def test_sampler_rejects_bad_input():
    with pytest.raises(DataError, match="seq_len"):
        BatchSampler(np.zeros(10, np.uint8), batch_size=2, seq_len=10, seed=0)
    with pytest.raises(ValueError):
        BatchSampler(np.zeros(100, np.uint8), batch_size=0, seq_len=10, seed=0)
    with pytest.raises(ValueError):
        BatchSampler(np.zeros(100, np.uint8), batch_size=2, seq_len=10, seed=-1)
    with pytest.raises(ValueError):
        BatchSampler(np.zeros(100, np.uint8), batch_size=2, seq_len=10, seed=0).batch(-1)
    with pytest.raises(DataError, match="1-D"):
        BatchSampler(np.zeros((10, 10), np.uint8), batch_size=2, seq_len=4, seed=0)


def test_eval_batches_fixed_and_evenly_spaced(data):
    a = eval_batches(data.val, batch_size=4, seq_len=128, n_batches=3)
    b = eval_batches(data.val, batch_size=4, seq_len=128, n_batches=3)
    assert len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (4, 128) and xa.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 1:], ya[:, :-1])
    val = np.asarray(data.val, dtype=np.int64)
    assert np.array_equal(a[0][0][0].numpy(), val[:128])  # first window starts at 0
    assert np.array_equal(a[-1][1][-1].numpy(), val[-128:])  # last window ends at the end


def test_eval_batches_tiny_and_too_short():
    tokens = np.arange(9, dtype=np.uint8)
    (x, y), = eval_batches(tokens, batch_size=2, seq_len=8, n_batches=1)
    assert torch.equal(x, torch.arange(8).expand(2, 8)) and torch.equal(y, torch.arange(1, 9).expand(2, 8))
    with pytest.raises(DataError, match="at least seq_len"):
        eval_batches(tokens, batch_size=2, seq_len=9, n_batches=1)


def test_short_memmap_error_names_file(tmp_path):
    d = write_prepared(
        tmp_path / "tiny", np.arange(50) % 256, np.arange(5) % 256, vocab_size=256, tokenizer="byte", sources="t"
    )
    td = load_tokens(d)
    with pytest.raises(DataError) as e:
        eval_batches(td.val, batch_size=1, seq_len=16, n_batches=1)
    assert "val.bin" in str(e.value)
