"""`windtunnel plan`: design the tunnel for a target and a GPU-hour budget, cost it, write its sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="design and cost the tunnel for a target and a GPU-hour budget; write its sweep YAMLs",
        description="Design the wind tunnel for a target: proxy widths (heads at the target's d_head) and depths, "
                    "tokens per trial, the search (TPE + ASHA, fused trials), the width/depth/horizon checks with "
                    "seeds and the prediction ladder. Prints each stage's cost in GPU-hours and as a share of the "
                    "target's training (FLOPs from the accounting `transfer` uses, at an assumed MFU), picks the "
                    "most thorough tier that fits --budget, and writes proxy.yaml plus one sweep YAML per stage "
                    "into --out. --check-cost RUN compares the cost model with the trial times of a run measured "
                    "on this machine.",
        epilog="examples:\n  windtunnel plan --target 1.2b --budget 300 --nproc 8 --dry-run\n"
               "  windtunnel plan --target 1.2b --budget 300 --out runs/plan-1.2b\n"
               "  windtunnel plan --target 1.2b --budget 300 --dry-run --check-cost runs/ladder",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="preset name (1.2b, 0.1b, cpu, ...) or a target YAML file")
    p.add_argument("--budget", type=float, required=True, metavar="GPU_HOURS", help="GPU-hours the tunnel may spend")
    p.add_argument("--nproc", type=int, default=8, help="GPUs the tunnel runs on (trials side by side); default 8")
    p.add_argument("--widths", metavar="W,W,...", help="proxy widths (multiples of the target's d_head); default: "
                                                       "four widths 8x apart from two heads")
    p.add_argument("--depth", type=int, default=8, help="proxy depth (the depth check runs half and twice it)")
    p.add_argument("--tokens", type=float, help="the target's training tokens (default: the preset's)")
    p.add_argument("--tier", choices=["thorough", "standard", "minimal"], help="force a tier (default: the most "
                                                                               "thorough that fits --budget)")
    p.add_argument("--gpu", default=None, help="GPU whose dense bf16 peak costs the plan (default H100 80GB HBM3)")
    p.add_argument("--mfu-target", type=float, default=None, help="assumed MFU of the target's run (default 0.40)")
    p.add_argument("--mfu-proxy", type=float, default=None, help="assumed MFU of a proxy trial (default 0.20)")
    p.add_argument("--out", help="folder for proxy.yaml and the sweep YAMLs (default: runs/plan-<target>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--check-cost", metavar="RUN", help="a sweep or ladder folder run on this machine: print its "
                                                       "measured trial times against the cost model's estimate")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from ..errors import WindtunnelError
    from ..fullrun.tunnel_plan import DEFAULT_GPU, MFU_PROXY, MFU_TARGET, format_tunnel, plan_tunnel, write_tunnel
    widths = None
    if args.widths:
        try:
            widths = [int(w) for w in args.widths.split(",") if w.strip()]
        except ValueError:
            raise WindtunnelError(f"--widths: expected comma-separated integers, got {args.widths!r}") from None
    mfu_proxy = args.mfu_proxy if args.mfu_proxy is not None else MFU_PROXY
    plan = plan_tunnel(target=args.target, budget_gpu_hours=args.budget, nproc=args.nproc, widths=widths,
                       depth=args.depth, gpu=args.gpu or DEFAULT_GPU, tokens=args.tokens, tier=args.tier,
                       mfu_target=args.mfu_target if args.mfu_target is not None else MFU_TARGET, mfu_proxy=mfu_proxy)
    print(format_tunnel(plan))
    if args.check_cost:
        from ..fullrun.cost_check import check_costs, format_costs
        print("\n" + format_costs(check_costs(args.check_cost, mfu=mfu_proxy), mfu=mfu_proxy, run=args.check_cost))
    out = Path(args.out or Path("runs") / f"plan-{plan.target.name}")
    if args.dry_run:
        print(f"\n# dry run: would write {', '.join(str(out / name) for name in plan.files)}")
        return 0
    paths = write_tunnel(plan, out)
    print(f"\nwrote {', '.join(map(str, paths))}")
    return 0
