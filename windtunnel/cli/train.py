"""`windtunnel train` and `windtunnel shapes`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(sub) -> None:
    _add_train(sub)
    _add_shapes(sub)


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set train.lr=0.01 (repeatable)")


def add_track_option(p: argparse.ArgumentParser, *, where: str = "train.track") -> None:
    p.add_argument("--track", metavar="LIST",
                   help="experiment trackers, comma-separated: tensorboard, mlflow (windtunnel[mlflow]), wandb "
                        f"(windtunnel[wandb], offline unless WANDB_MODE=online), or none; overrides {where} "
                        "(default: tensorboard when installed)")


def track_overrides(args) -> list[str]:
    """--track as a `train.track` override (after the --set ones, so it wins)."""
    if args.track is None:
        return list(args.overrides)
    from ..training.trackers import parse_track
    return [*args.overrides, f"train.track={json.dumps(list(parse_track(args.track)))}"]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one proxy (or any config) with the shared training loop",
                       description="Train a config; writes config.yaml, metrics.csv and summary.json to --out.")
    p.add_argument("config", help="run config YAML, e.g. proxies/xs.yaml")
    add_set_option(p)
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue from the newest checkpoint in --out (or from CKPT); starts at step 0 "
                        "when there is none, so a preemptible job can always pass it")
    p.add_argument("--decay-from", metavar="CKPT",
                   help="branch the WSD decay off this stable-phase checkpoint (MiniCPM): load it and run "
                        "train.decay_steps (or decay_fraction x steps) decay steps into --out")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="stop with a checkpoint once STEP steps are done (resume later with --resume)")
    add_track_option(p)
    p.add_argument("--no-tensorboard", action="store_true",
                   help="leave TensorBoard out of the trackers (events go to --out/tensorboard when installed)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from ..config import load_config
    cfg = load_config(args.config, overrides=track_overrides(args))
    if args.no_tensorboard:
        from ..training.trackers import resolve_track
        cfg.train.track = tuple(n for n in resolve_track(cfg.train.track) if n != "tensorboard")
    from ..training.loop import train
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    summary = train(cfg, out_dir=out, progress=not args.quiet, resume=args.resume, decay_from=args.decay_from,
                    stop_after=args.stop_after)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=2, default=float))
        print(f"run folder: {out}", file=sys.stderr)
    return 0 if summary["status"] in ("ok", "stopped") else 1


def _add_shapes(sub) -> None:
    p = sub.add_parser("shapes", help="write the mup base-shape (.bsh) file of a config",
                       description="Write the mup base shapes of a config: base at d_model = "
                                   "model.dim_model_base, delta varying every width dimension.")
    p.add_argument("config", help="run config YAML")
    add_set_option(p)
    p.add_argument("--out", help="where to write (default: model.base_shapes of the config, else "
                                 "proxies/shapes/<name>_base<dim_model_base>.bsh)")
    p.set_defaults(func=_cmd_shapes)


def _cmd_shapes(args) -> int:
    from ..config import load_config
    cfg = load_config(args.config, overrides=args.overrides)
    from ..errors import WindtunnelError
    from ..model.shapes import file_mismatch, write_base_shapes
    default = Path("proxies/shapes") / f"{Path(args.config).stem}_base{cfg.model.dim_model_base}.bsh"
    target = Path(args.out or cfg.model.base_shapes or default)
    why = file_mismatch(cfg.model, target) if target.exists() else None
    if why:  # a ladder shares one file: never replace it with another model's shapes
        raise WindtunnelError(f"{target}: exists and describes another model ({why}); not overwritten: "
                              "write this model's shapes elsewhere with --out NEW.bsh")
    path = write_base_shapes(cfg.model, target)
    print(f"wrote {path} (base width {cfg.model.dim_model_base}, {cfg.model.n_layers} layers)")
    return 0

