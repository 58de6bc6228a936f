"""`windtunnel data prepare`: text sources -> a prepared data folder (train.bin, val.bin, meta.json)."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare token data for proxies and targets",
                       description="Token data: `prepare` tokenizes text into a prepared data folder.")
    data_sub = p.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    _add_prepare(data_sub)

    def usage(_args) -> int:  # `windtunnel data` alone
        p.print_help()
        return 2
    p.set_defaults(func=usage)


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="tokenize text files, folders, globs, .jsonl, .parquet or hf:NAME into --out",
        description="Tokenize SOURCEs into a prepared data folder: memory-mapped train.bin / val.bin "
                    "(uint8/16/32 by vocabulary) and meta.json. Streams, so the corpus may exceed memory. "
                    "Val holds whole units (jsonl records, parquet rows, runs of whole plain-text paragraphs "
                    "of about 4 KiB) chosen by a hash, at least one in each split. "
                    "Nothing is written unless the whole corpus is read cleanly.",
        epilog="examples:\n"
               "  windtunnel data prepare 'corpus/**/*.txt' --out data/web\n"
               "  windtunnel data prepare dump.jsonl --text-field content --tokenizer bpe:8192 --out data/bpe\n"
               "  windtunnel data prepare shard-*.parquet --tokenizer data/bpe/tokenizer.json --out data/code\n"
               "then point a config at it: --set data.path=data/web",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="text file, folder, glob (quote it), .jsonl[.gz], .parquet, or hf:NAME[:CONFIG][@SPLIT]")
    p.add_argument("--out", required=True, help="the folder to create, e.g. data/web")
    p.add_argument("--tokenizer", default="byte",
                   help="byte (default, vocab 256) | bpe:VOCAB (trained on the corpus, saved beside the data) "
                        "| path/to/tokenizer.json")
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents held out (default 0.01)")
    p.add_argument("--text-field", default="text", help="JSON field / Parquet column with the text (default text)")
    p.add_argument("--bpe-sample-mb", type=float, default=50.0,
                   help="MB of train text a bpe:VOCAB tokenizer learns from (default 50)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (once the new data is complete)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from ..data.preparation import prepare
    from ..formatting import fmt_bytes

    started = time.perf_counter()
    data = prepare(args.sources, out=args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                   text_field=args.text_field, bpe_sample_bytes=int(args.bpe_sample_mb * 1e6),
                   overwrite=args.force, progress=not args.quiet)
    seconds = time.perf_counter() - started
    m = data.meta
    read = fmt_bytes(m["input_bytes"], decimal=True)  # decimal: files and throughput, as `ls --si` shows them
    speed = fmt_bytes(m["input_bytes"] / max(seconds, 1e-9), decimal=True, unit="MB")  # one unit to compare runs
    print(f"wrote {data.path}: {m['train_tokens']:,} train + {m['val_tokens']:,} val tokens "
          f"({m['tokenizer']}, vocab {m['vocab_size']}, {m['dtype']}) from {m['files']} file(s), "
          f"{read} in {seconds:.1f} s ({speed}/s); units: {m['unit']}, "
          f"{m['units']['val']:,} in val" + "".join(f"; {f['unit']} moved to {f['split']}, which the hash left empty"
                                                    for f in m.get("split_forced", [])))
    print(f"use it with: --set data.path={data.path} --set model.vocab_size={m['vocab_size']}", file=sys.stderr)
    return 0
