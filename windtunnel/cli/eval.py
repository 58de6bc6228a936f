"""`windtunnel eval context|calibration|tasks`: evaluate a run, checkpoint or hf:MODEL as in the Xmodel-2 report."""

from __future__ import annotations

import argparse
import sys

from ..errors import WindtunnelError

MODEL_HELP = "a run folder (its newest checkpoint), a checkpoint file, or hf:PATH_OR_NAME (local files only)"


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model: loss vs context length, multiple-choice calibration",
                       description="Evaluate a run folder, a checkpoint or hf:MODEL. Results go to --out "
                                   "(default RUN/eval, or runs/eval/<model> for hf:).")
    evals = p.add_subparsers(title="evaluations", metavar="EVAL")
    _add_context(evals)
    _add_calibration(evals)
    _add_tasks(evals)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="folder for the results (default: RUN/eval, or runs/eval/<model> for hf:)")
    p.add_argument("--device", default="auto", help="auto (CUDA with bf16 when available, else CPU) | cpu | cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_context(sub) -> None:
    p = sub.add_parser("context", help="held-out loss per context length and the fit L(t) = b + (t/c)^a",
                       description="Loss (nats/token, perplexity) of held-out tokens by how many tokens of "
                                   "context they see, bucketed by --lengths; fit of L(t) = b + (t/c)^a with "
                                   "standard errors and R^2. Writes context.json, context.csv, context.png/svg.")
    p.add_argument("model", metavar="RUN_OR_CHECKPOINT", help=MODEL_HELP)
    p.add_argument("--data", help="prepared data folder whose val split is scored (default: the run's own data)")
    p.add_argument("--lengths", help="increasing context lengths, the bucket edges, e.g. 16,32,64,128 "
                                     "(default: powers of two up to the model's max_seq_len)")
    p.add_argument("--windows", type=int, default=256, help="at most this many windows of max(lengths) tokens (256)")
    p.add_argument("--batch-tokens", type=int, default=16384, help="tokens per forward pass (16384)")
    _common(p)
    p.set_defaults(func=_cmd_context)


def _cmd_context(args) -> int:
    from ..eval.context_length import check_lengths, context
    from ..eval.loading import load_model
    from ..eval.report import default_out_dir

    lengths = None if args.lengths is None else check_lengths(_int_list(args.lengths), max_seq_len=sys.maxsize)
    model = load_model(args.model, device=args.device)
    r = context(model, data=args.data, lengths=lengths, windows=args.windows, batch_tokens=args.batch_tokens,
                out_dir=args.out or default_out_dir(model), progress=not args.quiet)
    print(f"{r['model']}: {r['tokens_scored']:,} held-out tokens of {r['data']} in {r['windows']} windows of "
          f"{r['window_tokens']}")
    print(f"{'t':>12} {'tokens':>9} {'loss':>8} {'± se':>7} {'ppl':>8} {'loss(1..t)':>11}")
    for pt in r["points"]:
        print(f"{pt['t_from']:>5}-{pt['t_to']:<6} {pt['tokens']:>9} {pt['loss']:8.4f} {pt['loss_se']:7.4f} "
              f"{pt['perplexity']:8.3f} {pt['cumulative_loss']:11.4f}")
    fit = r["fit"]
    if "a" in fit:
        print(f"fit L(t) = b + (t/c)^a: a = {fit['a']:.4f} ± {fit['a_se']:.4f}, b = {fit['b']:.4f} ± "
              f"{fit['b_se']:.4f}, c = {fit['c']:.4g} ± {fit['c_se']:.3g}, R² = {fit['r2']:.4f} ({fit['n']} points)")
        if fit.get("warning"):
            print(f"warning: {fit['warning']}")
    else:
        print(f"no fit: {fit['error']}")
    print(f"wrote {r['files']['json']}, {r['files']['csv']}, {', '.join(r['files']['plot'])}", file=sys.stderr)
    return 0


def _add_calibration(sub) -> None:
    p = sub.add_parser("calibration", help="multiple-choice accuracy, ECE, MCE, Brier and a reliability diagram",
                       description="Probability of each choice from the model's log-likelihood of its letter "
                                   "(or, with --scoring text, of its text, length-normalised), normalised over "
                                   "the choices. Writes calibration.json, calibration_questions.csv and "
                                   "reliability.png/svg.")
    p.add_argument("model", metavar="RUN_OR_CHECKPOINT", help=MODEL_HELP)
    p.add_argument("--tasks", required=True, help="questions: .jsonl or .parquet (question, choices, answer, "
                                                  "[subject]), or hf:cais/mmlu (local datasets cache)")
    p.add_argument("--shots", type=int, default=0, help="solved examples before each question (same subject; 0)")
    p.add_argument("--scoring", choices=["letter", "text"],
                   help="letter: the answer letter after a listed prompt (MMLU); text: each choice's own text "
                        "(windtunnel's own tasks); default: what the tasks file says, else letter")
    p.add_argument("--bins", type=int, default=15, help="equal-width confidence bins of the ECE (15)")
    p.add_argument("--limit", type=int, help="evaluate the first N questions only")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (32)")
    _common(p)
    p.set_defaults(func=_cmd_calibration)


def _cmd_calibration(args) -> int:
    from ..eval.calibrate import calibration
    from ..eval.loading import load_model
    from ..eval.report import default_out_dir
    from ..eval.tasks import load_tasks

    if args.limit is not None and args.limit < 1:
        raise WindtunnelError(f"--limit: expected a positive integer, got {args.limit}")
    questions = load_tasks(args.tasks, limit=args.limit)  # every record checked before the model loads
    model = load_model(args.model, device=args.device)
    r = calibration(model, tasks=questions, shots=args.shots, scoring=args.scoring, bins=args.bins,
                    batch_size=args.batch_size, out_dir=args.out or default_out_dir(model), progress=not args.quiet)
    s = r["overall"]
    lo, hi = s["accuracy_95ci"]
    print(f"{r['model']} on {args.tasks} ({r['scoring']} scoring, {r['scoring_reason']}; {r['shots']}-shot, "
          f"{s['n']} questions)")
    print(f"accuracy {s['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}; chance {s['chance_accuracy']:.3f}) | "
          f"ECE {s['ece']:.4f} (95% CI {s['ece_95ci'][0]:.4f}-{s['ece_95ci'][1]:.4f}; {s['bins']} equal-width bins) | "
          f"MCE {s['mce']:.4f} | Brier {s['brier']:.4f} | mean confidence {s['mean_confidence']:.3f}")
    if r["prompts_truncated"]:
        print(f"{r['prompts_truncated']} prompts were longer than the model's context and lost their oldest tokens")
    if r["per_subject"]:
        print(f"{'subject':<24} {'n':>5} {'accuracy':>9} {'chance':>7} {'conf':>6} {'ECE':>7} {'Brier':>7}")
        for row in r["per_subject"]:
            print(f"{row['subject'][:24]:<24} {row['n']:>5} {row['accuracy']:9.3f} {row['chance_accuracy']:7.3f} "
                  f"{row['mean_confidence']:6.3f} {row['ece']:7.4f} {row['brier']:7.4f}")
    files = r["files"]
    print(f"wrote {files['json']}, {files['questions_csv']}, {', '.join(files['plot'])}", file=sys.stderr)
    return 0


def _add_tasks(sub) -> None:
    p = sub.add_parser("tasks", help="write windtunnel's own multiple-choice set (Python syntax, known answers)",
                       description="Questions cut from the held-out files of the embedded corpus (Python's "
                                   "standard library): which bracket closes, which quote ends a string, which "
                                   "keyword comes next. Nothing is downloaded. Score it with --scoring text.")
    p.add_argument("--out", required=True, help="the .jsonl file to write")
    p.add_argument("-n", type=int, default=600, help="number of questions (600, split over the 3 subjects)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context-chars", type=int, default=96, help="snippet length at most (96)")
    p.add_argument("--embedded-bytes", type=int, help="embedded corpus budget (default: its default)")
    p.set_defaults(func=_cmd_tasks)


def _cmd_tasks(args) -> int:
    from ..eval.syntax_tasks import make_syntax_tasks
    from ..eval.tasks import write_tasks

    if args.n < 1 or args.context_chars < 8:
        raise WindtunnelError(f"-n must be >= 1 and --context-chars >= 8, got {args.n} and {args.context_chars}")
    questions = make_syntax_tasks(n=args.n, seed=args.seed, context_chars=args.context_chars,
                                  max_bytes=args.embedded_bytes)
    path = write_tasks(questions, args.out)
    print(f"wrote {len(questions)} questions to {path}")
    return 0


def _int_list(text: str) -> list[int]:
    parts = [x.strip() for x in text.split(",") if x.strip()]
    try:
        return [int(x) for x in parts]
    except ValueError:
        raise WindtunnelError(f"--lengths: expected comma-separated integers, got {text!r}") from None
