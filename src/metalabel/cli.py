"""The ``metalabel`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from metalabel.errors import MetalabelError

console = Console()
err_console = Console(stderr=True)


def _print_mapping(title: str, mapping: dict) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in mapping.items():
        table.add_row(str(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


def cmd_datasets(args: argparse.Namespace) -> int:
    from metalabel import datasets

    for name in datasets.available():
        console.print(name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Load a data source, print its summary and, for images, write a sample grid."""
    import time

    from metalabel import datasets

    options = {}
    if args.max_classes is not None:
        options["max_classes"] = args.max_classes
    started = time.perf_counter()
    dataset = datasets.from_spec(args.source if not args.split else f"{args.source}:{args.split}", seed=args.seed, **options)
    summary = dataset.summary() | {"load_seconds": round(time.perf_counter() - started, 2)}
    _print_mapping(f"{dataset.name}", summary)
    if args.grid and dataset.modality == "image":
        from metalabel.data.grid import save_grid

        path = save_grid(dataset, args.grid, seed=args.seed)
        console.print(f"sample grid: {path}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from metalabel import datasets
    from metalabel.project import Project

    pool = datasets.from_spec(args.pool, seed=args.seed)
    with Project.create(args.project, pool=pool, labels=args.labels) as project:
        for warning in project.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        _print_mapping(f"project {args.project}", project.status())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        status = project.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_mapping(f"project {args.project}", status)
    return 0


def cmd_meta_train(args: argparse.Namespace) -> int:
    from metalabel.meta.train import meta_train

    options = {key: getattr(args, key) for key in (
        "algo", "backbone", "ways", "shots", "queries", "train_ways", "meta_batch", "steps", "lr",
        "inner_lr", "inner_steps", "adapt_steps", "batch_norm", "val_every", "val_episodes",
        "time_budget_s", "seed") if getattr(args, key) is not None}
    out = args.out or Path("runs") / f"{args.source.replace(':', '-')}-{args.algo}-{args.ways}w{args.shots}s"
    meta_train(args.source, out=out, resume=not args.restart, device=args.device,
               progress=not args.quiet, **options)
    history = (out / "history.jsonl").read_text().splitlines()
    best = max((json.loads(line) for line in history), key=lambda r: r["val_accuracy"])
    console.print(f"best validation accuracy {100 * best['val_accuracy']:.2f} ± {100 * best['val_ci95']:.2f}% "
                  f"at step {best['step']}; checkpoint: {out / 'best'}")
    return 0


def cmd_meta_eval(args: argparse.Namespace) -> int:
    from metalabel.meta.checkpoint import load_learner
    from metalabel.meta.evaluation import meta_evaluate
    from metalabel.meta.train import evaluation_sampler

    model = args.model / "best" if (args.model / "best").is_dir() else args.model
    learner = load_learner(model, device=args.device)
    results = []
    for ways in args.ways:
        for shots in args.shots:
            sampler = evaluation_sampler(args.source, ways=ways, shots=shots, queries=args.queries,
                                         episodes=args.episodes, seed=args.seed)
            result = meta_evaluate(learner, sampler, device=args.device)
            results.append(result.as_dict() | {"source": args.source, "model": str(model)})
            console.print(f"{args.source}: {result}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from metalabel.export import export_project

    out = args.out or Path(args.project) / "exports" / args.format
    result = export_project(args.project, out, format=args.format, min_confidence=args.min_confidence,
                            sources=args.sources, overwrite=args.overwrite)
    skipped = ", ".join(f"{count} by {reason}" for reason, count in result.skipped.items() if count)
    console.print(f"exported {result.rows} labeled items to {result.path}" + (f" (left out: {skipped})" if skipped else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalabel", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", parents=[common], help="list the built-in data sources")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("show", parents=[common], help="load a data source, print a summary, write a sample grid")
    p.add_argument("source", help="built-in name (kanji, fashion-mnist, ...) or a path")
    p.add_argument("--split", default=None)
    p.add_argument("--max-classes", type=int, default=None)
    p.add_argument("--grid", type=Path, default=None, help="write a PNG grid of samples here")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("init", parents=[common], help="create a labeling project from a pool and seed labels")
    p.add_argument("project", type=Path, help="project folder to create")
    p.add_argument("--pool", required=True, help="image folder, text/table file, or built-in name[:split]")
    p.add_argument("--labels", type=Path, default=None, help="seed labels CSV (uri,label)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("status", parents=[common], help="summarize a project")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", parents=[common], help="write the labeled data set with provenance")
    p.add_argument("project", type=Path)
    p.add_argument("--format", required=True, choices=["parquet", "csv", "imagefolder", "labelstudio"])
    p.add_argument("--out", type=Path, default=None, help="export folder (default PROJECT/exports/FORMAT)")
    p.add_argument("--min-confidence", type=float, default=None, help="drop model labels below this calibrated confidence")
    p.add_argument("--sources", default=None, help="comma list of human,model,imported,generated,augmented")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("meta-train", parents=[common], help="meta-train a learner on episodes of a data source")
    p.add_argument("--source", default="kanji", help="built-in name[:split] or a path (kanji: background split)")
    p.add_argument("--algo", default="protonet", choices=["protonet", "maml", "fomaml", "anil", "reptile"])
    p.add_argument("--backbone", default=None)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=None)
    p.add_argument("--train-ways", type=int, default=None, help="classes per training episode (default: --ways)")
    p.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-update")
    p.add_argument("--steps", type=int, default=None, help="meta-updates")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--inner-lr", type=float, default=None)
    p.add_argument("--inner-steps", type=int, default=None)
    p.add_argument("--adapt-steps", type=int, default=None, help="inner steps when adapting at test time")
    p.add_argument("--batch-norm", choices=["transductive", "running"], default=None)
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--val-episodes", type=int, default=None)
    p.add_argument("--time-budget-s", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/SOURCE-ALGO-NwKs)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming the run folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_meta_train)

    p = sub.add_parser("meta-eval", parents=[common], help="accuracy with a 95%% CI over fixed test episodes")
    p.add_argument("--model", type=Path, required=True, help="run folder or checkpoint folder")
    p.add_argument("--source", default="kanji", help="kanji = its held-out evaluation split; or name:split")
    p.add_argument("--ways", type=int, nargs="+", default=[5])
    p.add_argument("--shots", type=int, nargs="+", default=[1])
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_meta_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MetalabelError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; everything committed so far is kept")
        return 130


if __name__ == "__main__":
    sys.exit(main())
