"""Throughput of `windtunnel data prepare` on a ~100 MB text corpus, against reading the same files.

The corpus is synthetic but realistic: Python standard-library sources, repeated with identifiers
renamed per copy (so a BPE does not just memorise one copy), written as ~1 MB text files.
Every figure is measured in this run; the ratios compare prepare with a plain read (+ UTF-8 decode)
of the same files from the same (warm) page cache.

    PYTHONPATH=. python bench/prepare_throughput.py              # 100 MB, bpe:8192 trained on 10 MB
    PYTHONPATH=. python bench/prepare_throughput.py --mb 20      # quicker
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from windtunnel.data.preparation import prepare  # noqa: E402

_IDENT = re.compile(r"\b(self|value|name|result|data|path|line|key|items?|args|kwargs|obj|text)\b")


def make_corpus(folder: Path, *, megabytes: float, seed: int = 0) -> int:
    """Write ~`megabytes` MB of varied stdlib source as ~1 MB .txt files; returns the bytes written."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.glob("*.py"))]
    rng = random.Random(seed)
    target, written, index = int(megabytes * 1e6), 0, 0
    while written < target:
        suffix = f"_{rng.randrange(1 << 16):x}"  # a renamed-identifier dialect per output file
        parts, size = [], 0
        while size < 1_000_000 and written + size < target:
            text = _IDENT.sub(lambda m: m.group(0) + suffix if rng.random() < 0.5 else m.group(0),
                              rng.choice(sources))
            parts.append(text)
            size += len(text.encode("utf-8"))
        data = "".join(parts)
        (folder / f"part{index:04d}.txt").write_text(data, encoding="utf-8")
        written += len(data.encode("utf-8"))
        index += 1
    return written


def read_baseline(folder: Path) -> tuple[float, float]:
    """Seconds to read every file as bytes, and to read + decode UTF-8."""
    files = sorted(folder.glob("*.txt"))
    t0 = time.perf_counter()
    for f in files:
        f.read_bytes()
    t1 = time.perf_counter()
    for f in files:
        f.read_bytes().decode("utf-8")
    return t1 - t0, time.perf_counter() - t1


def encode_baseline(corpus: Path, tokenizer_json: Path, *, megabytes: float) -> float:
    """MB/s of the `tokenizers` library alone on the corpus' first files, cut in 64 KiB pieces."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(tokenizer_json))
    data = b"".join(f.read_bytes() for f in sorted(corpus.glob("*.txt"))[: max(1, int(megabytes))])
    text = data.decode("utf-8")
    pieces = [text[i : i + (1 << 16)] for i in range(0, len(text), 1 << 16)]
    t0 = time.perf_counter()
    tk.encode_batch_fast(pieces, add_special_tokens=False)
    return len(data) / 1e6 / (time.perf_counter() - t0)


def timed_prepare(corpus: Path, out: Path, **kwargs) -> tuple[float, dict]:
    t0 = time.perf_counter()
    data = prepare([str(corpus)], out=out, val_fraction=0.01, **kwargs)
    return time.perf_counter() - t0, data.meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default 100)")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary (default 8192)")
    ap.add_argument("--bpe-sample-mb", type=float, default=10.0, help="MB the BPE learns from (default 10)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="wt-bench-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        corpus.mkdir()
        nbytes = make_corpus(corpus, megabytes=args.mb)
        mb = nbytes / 1e6
        read_s, decode_s = read_baseline(corpus)
        read_mbs, decode_mbs = mb / read_s, mb / decode_s
        print(f"corpus: {mb:.1f} MB in {len(list(corpus.glob('*.txt')))} files")
        print(f"baseline  read bytes        {read_mbs:8.1f} MB/s")
        print(f"baseline  read + utf-8      {decode_mbs:8.1f} MB/s")

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        s, meta = timed_prepare(corpus, tmp / "byte", tokenizer="byte")
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"prepare   byte              {mb / s:8.1f} MB/s  {meta['train_tokens'] / s / 1e6:6.1f} M tok/s  "
              f"{s:6.1f} s  = {mb / s / decode_mbs:.2f}x read+utf-8, {mb / s / read_mbs:.3f}x raw read; "
              f"peak RSS +{rss1 - rss0:.0f} MB")

        s, meta = timed_prepare(corpus, tmp / "bpe", tokenizer=f"bpe:{args.vocab}",
                                bpe_sample_bytes=int(args.bpe_sample_mb * 1e6))
        tokens = meta["train_tokens"] + meta["val_tokens"]
        print(f"prepare   bpe:{args.vocab:<5d} (+train) {mb / s:8.1f} MB/s  {tokens / s / 1e6:6.2f} M tok/s  "
              f"{s:6.1f} s  = {mb / s / decode_mbs:.3f}x read+utf-8 (BPE learnt from {args.bpe_sample_mb:g} MB)")

        lib_mbs = encode_baseline(corpus, tmp / "bpe" / "tokenizer.json", megabytes=min(20.0, mb))
        print(f"baseline  tokenizers.encode_batch_fast alone, 64 KiB pieces {lib_mbs:6.2f} MB/s")
        s, meta = timed_prepare(corpus, tmp / "file", tokenizer=str(tmp / "bpe" / "tokenizer.json"))
        print(f"prepare   tokenizer.json    {mb / s:8.2f} MB/s  {tokens / s / 1e6:6.2f} M tok/s  "
              f"{s:6.1f} s  = {mb / s / lib_mbs:.2f}x the tokenizer alone (encode only; "
              f"{nbytes / tokens:.2f} bytes/token)")


if __name__ == "__main__":
    main()
