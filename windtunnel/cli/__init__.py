"""`windtunnel` command line: parses arguments, calls the library, prints. Nothing else.

Each command group lives in its own module here (`train.py`: train and shapes; `sweep.py`: sweep
and results; `plot.py`: plot; `check.py`: check; `transfer.py`: transfer; `data.py`: data prepare).

torch and Ray are imported inside the command functions, so `windtunnel --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .. import __version__
from ..errors import WindtunnelError, WindtunnelWarning

# one module per command group; each has register(subparsers) and imports the library lazily
COMMANDS = ["sweep", "train", "plot", "check", "transfer", "predict", "plan", "data", "eval", "config"]

EPILOG = """examples:
  windtunnel train proxies/xs.yaml --set model.d_model=128 --set train.lr=0.01 --out runs/x
  windtunnel shapes proxies/xs.yaml
  windtunnel sweep sweeps/lr_init.yaml            # the main job: lr x init grid on a CPU proxy
  windtunnel sweep sweeps/lr_init.yaml --dry-run  # the trials and their cost, nothing run
  windtunnel results runs/lr_init --top 5
  windtunnel data prepare 'corpus/**/*.txt' --tokenizer bpe:8192 --out data/web
  windtunnel transfer --target 1.2b --from runs/lr_init --dry-run
  windtunnel predict runs/ladder --holdout largest   # loss law fitted on a ladder, checked on its widest rung
  windtunnel plan --target 1.2b --budget 300 --dry-run   # the tunnel's stages and their GPU-hours
  windtunnel plot runs/lr_init
  windtunnel check coord proxies/xs.yaml --widths 64,128,256,512 --steps 5
  windtunnel check transfer runs/width_transfer
  windtunnel eval context runs/xs --lengths 1,2,4,8,16,32,64,128
  windtunnel eval calibration runs/xs --tasks tasks.jsonl --scoring text
  windtunnel check horizon runs/horizon --target 1.2b
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the usage of the (sub)command the stray flag was given to, not the top-level one
        _command_parser(parser, sys.argv[1:] if argv is None else argv).error(
            f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _plain_warnings(warnings.showwarning)
            return args.func(args) or 0
    except WindtunnelError as e:
        print(f"windtunnel: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("windtunnel: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="windtunnel",
        description="muP wind-tunnel hyperparameter search: sweep tiny proxies, carry the winner to the full model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"windtunnel {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(f".{module}", __name__).register(sub)
    return parser


def _plain_warnings(fallback):
    """A `warnings.showwarning` that prints windtunnel's own warnings as one plain line (no source path
    and line: they are messages to the user, not bugs) and passes any other to `fallback`."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, WindtunnelWarning):
            print(f"windtunnel: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The deepest subcommand parser the words of `argv` lead to (`data prepare` -> its parser)."""
    for word in argv:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if actions and word in actions[0].choices:
            parser = actions[0].choices[word]
    return parser


if __name__ == "__main__":
    sys.exit(main())
