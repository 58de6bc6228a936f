"""`windtunnel transfer`: carry a sweep's winner to a target, print the table, write (and launch) the run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .train import add_set_option, add_track_option, track_overrides

DRY_RUN_NPROC = 8
"""GPUs per node a --dry-run plans for unless --nproc says: one 8-GPU node, not one GPU (327 days for the 1.2B)."""


def register(sub) -> None:
    p = sub.add_parser(
        "transfer", help="carry the best proxy's HPs to a target (e.g. 1.2b) and write/launch the full run",
        description="Read the best trial of a sweep, carry its width-independent HPs to a target preset "
                    "(transfer/<name>.yaml, or a YAML path), print the transfer table and write the full "
                    "run's config. --launch then trains it with the same loop as the proxies.",
        epilog="examples:\n  windtunnel transfer --target 1.2b --from runs/lr-grid --dry-run\n"
               "  windtunnel transfer --target 1.2b --from runs/lr-grid --set data.path=/data/tok --nproc 8 --launch\n"
               "  windtunnel transfer --target cpu --from runs/lr-grid --launch",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="preset name (1.2b, 0.1b, cpu, ...) or a target YAML file")
    p.add_argument("--from", dest="source", metavar="RUNS",
                   help="sweep folder (its best ok trial), run folder or proxy config; omitted: the preset's HPs")
    add_set_option(p)
    add_track_option(p, where="the full run's train.track")
    p.add_argument("--horizon", metavar="RUN",
                   help="a horizon sweep folder (sweeps/horizon.yaml): correct the carried lr from the proxy's "
                        "tokens per parameter to the target's with its fitted slope; prints raw and corrected lr")
    p.add_argument("--tokens", type=float, help="training tokens of the full run (default: the preset's)")
    p.add_argument("--batch-tokens", type=float, metavar="N",
                   help="tokens per optimizer step (default: the preset's, else MiniCPM's law from the proxy loss)")
    p.add_argument("--nproc", type=int,
                   help="GPUs per node (processes under torchrun; train.parallel picks DDP or FSDP); default 1, "
                        f"but {DRY_RUN_NPROC} with --dry-run, which plans for a realistic node")
    p.add_argument("--nnodes", type=int, default=1,
                   help="with --launch: nodes; run the same command on each, with --rdzv-endpoint (default 1)")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="with --nnodes > 1: one node's address where all nodes meet (torchrun c10d rendezvous)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="N",
                   help="with --launch: torchrun restarts the processes up to N times after a failure, each "
                        "time resuming from the newest complete checkpoint (default 0)")
    p.add_argument("--out", help="where to write the run config (default: runs/<target>.yaml)")
    p.add_argument("--run-dir", help="run folder for --launch (default: runs/<target>)")
    p.add_argument("--dry-run", action="store_true", help="print the table and the config; write nothing")
    p.add_argument("--launch", action="store_true", help="write the config, then train it (torchrun when --nproc > 1)")
    p.add_argument("--resume", action="store_true",
                   help="with --launch: continue from the run folder's newest checkpoint")
    p.set_defaults(func=_cmd_transfer)


def _cmd_transfer(args) -> int:
    from ..fullrun.launch import check_launchable, launch
    from ..fullrun.plan import write_plan
    from ..fullrun.table import format_plan
    from ..fullrun.transfer import transfer
    if args.dry_run and args.launch:
        print("windtunnel: error: --dry-run and --launch exclude each other", file=sys.stderr)
        return 2
    if args.nproc is None:
        args.nproc = DRY_RUN_NPROC if args.dry_run else 1
        if args.dry_run:
            print(f"planned for {args.nnodes} node(s) of {DRY_RUN_NPROC} GPUs (the dry run's default; "
                  f"--nproc N for yours)")
    plan = transfer(target=args.target, source=args.source, tokens=args.tokens, batch_tokens=args.batch_tokens,
                    nproc=args.nproc * args.nnodes, overrides=track_overrides(args), horizon=args.horizon)
    print(format_plan(plan))
    out = Path(args.out or Path("runs") / f"{plan.target.name}.yaml")
    run_dir = Path(args.run_dir or Path("runs") / plan.target.name)
    if args.dry_run:
        import yaml

        from ..config import config_to_dict
        print(f"\n# dry run: would write {out}\n" + yaml.safe_dump(config_to_dict(plan.config), sort_keys=False))
        return 0
    if args.launch:  # refuse before writing: a launch this machine cannot run leaves nothing behind
        check_launchable(plan.config, nproc=args.nproc)
    path = write_plan(plan, out)
    print(f"\nwrote {path}")
    if not args.launch:
        print(f"launch: {_launch_hint(path, run_dir, args)}")
        return 0
    summary = launch(path, run_dir=run_dir, nproc=args.nproc, resume=args.resume, nnodes=args.nnodes,
                     rdzv_endpoint=args.rdzv_endpoint, max_restarts=args.max_restarts)
    print(json.dumps(summary, indent=2, default=float))
    return 0 if summary["status"] in ("ok", "stopped") else 1


def _launch_hint(config: Path, run_dir: Path, args) -> str:
    if args.nproc == 1 and args.nnodes == 1 and not args.max_restarts:
        return f"windtunnel train {config} --out {run_dir}"
    from ..training.distributed import torchrun_command
    command = torchrun_command(config, out=run_dir, nproc=args.nproc, nnodes=args.nnodes,
                               rdzv_endpoint=args.rdzv_endpoint or ("HOST:29500" if args.nnodes > 1 else None),
                               max_restarts=args.max_restarts)
    return "torchrun " + " ".join(command[3:])
