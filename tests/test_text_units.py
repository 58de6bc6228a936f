"""Plain text is split into runs of whole paragraphs (else lines, else blocks); each split gets a unit."""

from __future__ import annotations

import json
import random

import pytest

from windtunnel.cli import main
from windtunnel.data import text_units
from windtunnel.data.preparation import prepare
from windtunnel.data.text_units import MAX_UNIT, MIN_UNIT, TextUnits
from windtunnel.errors import DataError

WORDS = ["the", "wind", "tunnel", "measures", "a", "small", "model", "before", "the", "large", "one", "is", "trained",
         ";", "Größe", "東京", "😀"]


def paragraphs(n: int, seed: int = 0) -> list[str]:
    """Wikipedia-like paragraphs: 1-6 lines of 8-16 words, each ending in a line break."""
    rng = random.Random(seed)
    return ["".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) + "\n"
                    for _ in range(rng.randint(1, 6))) for _ in range(n)]


def cut(text: str, chunk: int) -> list:
    units = TextUnits()
    out = [u for i in range(0, len(text), chunk) for u in units.feed(text[i:i + chunk], final=False)]
    return out + list(units.feed("", final=True))


def test_one_megabyte_text_file_prepares_with_the_default_val_fraction(tmp_path):
    paras = paragraphs(4500, seed=1)
    text = "\n".join(paras)  # paragraphs separated by one blank line
    assert len(text.encode()) > 1_000_000
    (tmp_path / "wiki.txt").write_text(text, encoding="utf-8")
    data = prepare([str(tmp_path / "wiki.txt")], out=tmp_path / "out")  # --val-fraction 0.01
    m = data.meta
    units = m["units"]["train"] + m["units"]["val"]
    assert set(m["unit_kinds"]) == {"paragraphs"} and m["unit"] == f"{units} runs of whole paragraphs"
    assert len(text) / MIN_UNIT * 0.8 < units <= len(text) / MIN_UNIT and m["units"]["val"] >= 1
    train, val = bytes(data.train).decode(), bytes(data.val).decode()
    assert len(train) + len(val) == len(text)  # every character kept
    whole = {p.strip("\n") for p in paras}
    assert set(filter(None, val.split("\n\n"))) <= whole  # val holds whole paragraphs only


def test_units_fall_back_to_lines_then_blocks():
    lines = [p.replace("\n", " ").strip() + "\n" for p in paragraphs(3000, seed=2)]
    one_per_line = "".join(lines)  # no blank line at all
    units = cut(one_per_line, 4096)
    assert "".join(u.text for u in units) == one_per_line and {u.kind for u in units} == {"lines"}
    assert all(MIN_UNIT <= len(u.text) <= MAX_UNIT and u.text.endswith("\n") for u in units[:-1])
    assert [u.doc_end for u in units] == [False] * (len(units) - 1) + [True]
    text = "short paragraph\n\n" + "x" * (2 * MAX_UNIT + 5) + "\n\nlast\n"
    assert [(u.kind, len(u.text)) for u in cut(text, 1000)] == [
        ("lines", 17), ("block", MAX_UNIT), ("block", MAX_UNIT), ("block", 12)]


def test_cut_is_lossless_and_independent_of_the_read_size(monkeypatch):
    monkeypatch.setattr(text_units, "MIN_UNIT", 8)
    monkeypatch.setattr(text_units, "MAX_UNIT", 40)
    rng = random.Random(0)
    pieces = ["word ", "\n", "\n\n", "  \n", "東京", "x" * 30]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 200)))
        whole = cut(text, 1 << 20)
        assert "".join(u.text for u in whole) == text
        assert cut(text, rng.randint(1, 50)) == whole
        assert all(len(u.text.rstrip()) <= 40 for u in whole)


@pytest.mark.parametrize("val_fraction, moved_to", [(1e-6, "val"), (1 - 1e-6, "train")])
def test_two_units_put_one_in_each_split(tmp_path, val_fraction, moved_to):
    first, second = "first " * 800 + "\n\n", "second " * 700 + "\n"  # each over MIN_UNIT
    (tmp_path / "two.txt").write_text(first + second, encoding="utf-8")
    data = prepare([str(tmp_path / "two.txt")], out=tmp_path / "out", val_fraction=val_fraction)
    assert data.meta["units"] == {"train": 1, "val": 1}
    assert [f["split"] for f in data.meta["split_forced"]] == [moved_to]
    assert sorted([bytes(data.train).decode(), bytes(data.val).decode()]) == [first, second]


def test_a_single_unit_cannot_be_split(tmp_path):
    (tmp_path / "one.txt").write_text("one short paragraph\n\nand another\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"one\.txt holds a single unit \(1 run of whole paragraphs\)"):
        prepare([str(tmp_path / "one.txt")], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_summary_says_what_a_unit_was(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("\n".join(paragraphs(300, seed=3)), encoding="utf-8")
    rc = main(["data", "prepare", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    units = meta["units"]["train"] + meta["units"]["val"]
    assert rc == 0 and f"units: {units} runs of whole paragraphs, {meta['units']['val']} in val" in out
