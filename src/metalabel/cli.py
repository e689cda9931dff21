"""The ``metalabel`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metalabel.errors import BadInputError, MetalabelError

if TYPE_CHECKING:
    from metalabel.evaluate.records import RoundReport

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
    spec = args.source if not args.split else f"{args.source}:{args.split}"
    dataset = datasets.from_spec(spec, seed=args.seed, **options)
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

    # mapped: a big pool is read and hashed a chunk at a time, never held whole
    pool = datasets.from_spec(args.pool, seed=args.seed, mapped=True, **_parse_options(args.source_option))
    labels = args.labels
    if args.seed_per_class is not None:
        if labels is not None:
            raise BadInputError("give either --labels or --seed-per-class, not both")
        labels = datasets.seed_labels_from_pool(pool, per_class=args.seed_per_class, seed=args.seed)
    with Project.create(args.project, pool=pool, labels=labels) as project:
        for warning in project.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        _print_mapping(f"project {args.project}", project.status())
    return 0


def _parse_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs for a data source; values are read as JSON when they can be (numbers, true)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadInputError(f"--source-option {pair!r} is not KEY=VALUE",
                                hint="e.g. --source-option max_classes=30")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def cmd_run(args: argparse.Namespace) -> int:
    from metalabel.datasets import gold_labels
    from metalabel.label.oracle import LabelStudioQueue, Oracle, SimulatedOracle, TerminalOracle
    from metalabel.pipeline import PROJECT_META_STEPS
    from metalabel.project import Project

    with Project.open(args.project) as project, contextlib.ExitStack() as closing:
        pool = project.load_pool()
        gold = gold_labels(pool)
        oracle: Oracle
        if args.oracle == "simulated":
            if not gold:
                raise BadInputError("the simulated oracle answers from the pool's own labels, and this pool has none",
                                    hint="use --oracle terminal or --oracle labelstudio")
            oracle = SimulatedOracle(gold, noise_rate=args.noise, seed=args.seed)
        elif args.oracle == "terminal":
            oracle = TerminalOracle()
        elif args.oracle == "web":
            from metalabel.serve.web import WebOracle

            _warn_if_remote(args)
            # closed when the run ends: the page then says labeling stopped instead of waiting for questions
            oracle = closing.enter_context(WebOracle(project.store, annotator=args.annotator, host=args.host,
                                                     port=args.port, allow_remote=args.allow_remote,
                                                     budget=args.budget, on_ready=_announce_page))
        else:
            oracle = LabelStudioQueue(project.folder / "labelstudio", feature_names=pool.feature_names)
        learner, encoder = _run_learner(args, modality=pool.modality)
        strategy = _run_strategy(args, modality=pool.modality)
        delta = args.delta
        table = Table("round", "human", "reference", "model labels", "coverage",
                      f"certified precision (1-{delta:g})", "estimate", "retracted", "asked",
                      "pool acc." if gold else "", "achieved prec." if gold else "", "s",
                      title=f"labeling {project.name}", title_justify="left")

        def show(report: RoundReport) -> None:
            row = [str(report.round_id), str(report.human_labels), str(report.reference_answers),
                   str(report.model_labels), f"{100 * report.coverage:.1f}%",
                   _percent_at_least(report.certified_precision, report.reference_needed,
                                     report.reference_answers),
                   _percent(report.estimated_precision), str(report.retracted), str(report.questions),
                   _percent(report.gold.pool_accuracy) if report.gold else "",
                   _percent(report.gold.achieved_precision) if report.gold else "", f"{report.seconds:.1f}"]
            table.add_row(*row)
            if not args.quiet:
                console.print("round " + " | ".join(row), highlight=False)

        result = project.run(learner, oracle=oracle, target_precision=args.target_precision, delta=delta,
                             certify=args.certify, budget=args.budget, per_round=args.per_round,
                             reference_share=args.reference_share, coverage_goal=args.coverage_goal,
                             max_rounds=args.max_rounds, strategy=strategy, seed=args.seed,
                             encoder=encoder, gold=gold or None, progress=not args.quiet, on_round=show,
                             generate=not args.no_generate, feedback=not args.no_feedback, rules=args.rules,
                             gan=args.gan, audit=args.audit, ray=args.ray,
                             project_meta_steps=PROJECT_META_STEPS if args.project_meta_learning else 0)
        console.print(table)
        for warning in project.warnings:  # e.g. pool items added since init
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if not args.quiet:
            for report in result.rounds:
                for line in report.feedback:
                    console.print(f"round {report.round_id}: {line}", highlight=False, soft_wrap=True)
        console.print(f"stopped: {result.stopped_because}")
        _add_to_library(project, encoder=encoder, quiet=args.quiet)
    return 0


def _run_strategy(args: argparse.Namespace, *, modality: str) -> str:
    """``--strategy``; else, with ``--from-library``, the one that paid best on the library's past projects where
    it can tell (shown as the library's suggestion); else auto."""
    if args.strategy is not None or not args.from_library:
        return args.strategy or "auto"
    from metalabel.library import Library

    suggestion = Library(args.library).suggest_strategy(modality)
    if suggestion is None:
        return "auto"
    if not args.quiet:
        console.print(suggestion.summary(), highlight=False, soft_wrap=True)
    return suggestion.strategy


def _add_to_library(project, *, encoder: str | None, quiet: bool) -> None:
    """The project setting `library auto-add`: the finished run's labels go to the library."""
    from metalabel.library import add_finished_run

    manifest = add_finished_run(project, encoder=encoder, progress=not quiet)
    if manifest is not None:
        console.print(f"added to the library as {manifest.name}: {manifest.items} labeled items "
                      f"(`metalabel library auto-add {project.folder} --off` stops this)", highlight=False,
                      soft_wrap=True)


def _run_learner(args: argparse.Namespace, *, modality: str):
    """``run``'s learner and encoder: ``--model``, or the library's model in the encoder space it learned in."""
    if not args.from_library:
        return _load_model(args.model), args.encoder
    from metalabel.library import Library

    if args.model:
        raise BadInputError("give either --model or --from-library, not both")
    library = Library(args.library)
    model = library.model()
    if model.modality != modality:
        raise BadInputError(f"the library's model learned from {model.modality} projects, but this pool holds "
                            f"{modality}", path=args.library, hint="use a library of projects like this one")
    if args.encoder is not None and args.encoder != model.run_encoder:
        raise BadInputError(f"the library's model works in the {model.encoder.name} space, not {args.encoder}",
                            hint="leave --encoder out with --from-library")
    if not args.quiet:
        console.print(f"starting from the library: {model.summary()}", highlight=False, soft_wrap=True)
        prior = library.certification_prior(modality, target_precision=args.target_precision)
        if prior is not None:
            console.print(prior.summary(), highlight=False, soft_wrap=True)
    return model.learner, model.run_encoder


def _announce_page(url: str) -> None:
    console.print(f"answer the questions in a browser: {url}", highlight=False, soft_wrap=True)


def _warn_if_remote(args: argparse.Namespace) -> None:
    from metalabel.serve.app import check_host

    if not check_host(args.host, allow_remote=args.allow_remote):
        err_console.print(f"[yellow]warning:[/] the labeling page listens on {args.host}, not only on this machine: "
                          "anyone who can reach it and has the URL with its token can answer, over plain HTTP",
                          highlight=False, soft_wrap=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from metalabel.label.oracle import OracleStopped
    from metalabel.project import Project
    from metalabel.serve.web import serve_questions

    _warn_if_remote(args)
    with Project.open(args.project) as project, project.writer_lock(command="metalabel serve"):
        try:
            recorded = serve_questions(project.store, project.load_pool(), annotator=args.annotator,
                                       host=args.host, port=args.port, allow_remote=args.allow_remote,
                                       on_ready=_announce_page)
        except OracleStopped as stopped:
            console.print(f"{stopped}", highlight=False)
            return 0
    console.print(f"stopped from the page: {recorded.answered} answers and {recorded.dismissed} skips recorded "
                  "(reviews and changed answers were saved as they were given)", highlight=False)
    return 0


def cmd_ml_backend(args: argparse.Namespace) -> int:
    import os
    import secrets

    from metalabel.serve.ml_backend import PASSWORD_ENV, USER, BackendServer, webhook_auth_header

    _warn_if_remote(args)
    password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(18)
    server = BackendServer(args.project, password=password, host=args.host, port=args.port,
                           allow_remote=args.allow_remote)
    console.print(f"Label Studio ML backend for {args.project}: {server.url}", highlight=False, soft_wrap=True)
    shown = f"the value of {PASSWORD_ENV}" if os.environ.get(PASSWORD_ENV) else password
    console.print(f"connect it in Label Studio (Settings > Model) with basic auth user {USER!r}, password {shown}",
                  highlight=False, soft_wrap=True)
    header = (f"Basic <base64 of {USER}:${PASSWORD_ENV}>" if os.environ.get(PASSWORD_ENV)
              else webhook_auth_header(password))
    console.print(f"then add the header `Authorization: {header}` to the webhook Label "
                  f"Studio makes for it ({server.url}/webhook, Settings > Webhooks): Label Studio sends it no "
                  "credentials, and annotations are refused without them", highlight=False, soft_wrap=True)
    server.serve()
    return 0


def _page_options(parser: argparse.ArgumentParser) -> None:
    """The labeling page's options (`serve`, and `run --oracle web`)."""
    import getpass

    parser.add_argument("--annotator", default=getpass.getuser(),
                        help="who answers, recorded with every answer as web:NAME (default: your user name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                        "machine only); another needs --allow-remote")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="let --host be an address other machines can reach")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _percent_at_least(bound: float | None, needed: int | None, reference_answers: int) -> str:
    """A certified bound as '>= 95.0%'; without one, what it would take (never a figure the evidence lacks)."""
    if bound is not None:
        return f">= {100 * bound:.1f}%"
    if reference_answers == 0:
        return "none yet (no reference answers)"
    if needed is None:
        return "none yet (errors too frequent at every threshold)"
    return f"none yet (~{needed} more reference answers)"


def cmd_plan(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        plan = project.plan(_load_model(args.model), coverage=args.coverage, encoder=args.encoder,
                            target_precision=args.target_precision, delta=args.delta, per_round=args.per_round,
                            progress=not args.quiet)
    console.print(f"to certify {100 * plan.coverage:.0f}% of the pool at precision >= {plan.target:g} "
                  f"(with probability {1 - plan.delta:g}):", highlight=False)
    if plan.reachable:
        console.print(f"  about {plan.reference_needed} more reference answers and {plan.active_needed} more "
                      "active-learning answers", highlight=False)
    else:
        console.print("  not reachable under the planner's model with more answers alone", highlight=False)
    console.print(f"  next round: {plan.next_reference} reference + {plan.next_active} active questions",
                  highlight=False)
    console.print(f"  {plan.reason}", highlight=False, soft_wrap=True)
    console.print(f"  assumptions: {plan.assumptions}", highlight=False, soft_wrap=True)
    return 0


def _load_model(name: str | None):
    """``--model``: a run or checkpoint folder; absent or ``none``: no meta-trained learner."""
    if not name or name == "none":
        return None
    from metalabel.meta.checkpoint import load_run

    return load_run(name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metalabel.datasets import gold_labels
    from metalabel.evaluate.scorecard import scorecard_rows
    from metalabel.project import Project

    with Project.open(args.project) as project:
        gold = gold_labels(project.load_pool()) if args.gold_from_pool else None
        scorecard = project.evaluate(_load_model(args.model), encoder=args.encoder, gold=gold,
                                     progress=not args.quiet, seed=args.seed)
        if args.json:
            print(json.dumps(scorecard.to_json(), indent=2, default=float))
            return 0
        table = Table("section", "metric", "value", "detail", title=f"scorecard of {project.name}",
                      title_justify="left")
        for row in scorecard_rows(scorecard):
            table.add_row(*row)
        console.print(table)
        for issue in scorecard.label_issues[:10]:
            console.print(f"label issue: {issue.uri} labeled {issue.given!r} ({issue.source}), "
                          f"looks like {issue.suggested!r} (p={issue.self_confidence:.2f})", highlight=False)
        console.print(f"written: {project.folder / 'scorecard.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        path = project.report(args.out)
    console.print(f"report: {path}")
    return 0


def cmd_import_answers(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    if args.kept == (args.file is not None):
        raise BadInputError("give the Label Studio export to import, or --kept (not both)",
                            hint="--kept records the annotations `metalabel ml-backend` kept but could not record")
    if args.kept:
        return _import_kept(args)
    with Project.open(args.project) as project:
        recorded = project.import_answers(args.file, changed=args.changed)
    console.print(f"{recorded.answered} answers recorded, {recorded.dismissed} skipped by the annotator, "
                  f"{len(recorded.already_closed)} already answered before", highlight=False)
    if recorded.changed:
        console.print(f"{recorded.changed} answers changed by their annotators (the earlier answer stays in the "
                      "label history)", highlight=False)
    if recorded.confirmed or recorded.corrected:
        console.print(f"reviewed export labels: {recorded.confirmed} confirmed, {recorded.corrected} corrected "
                      "(each now a human label)", highlight=False)
    if recorded.disagreements:
        console.print(f"{recorded.disagreements} disagreements between annotators recorded (the most chosen class "
                      "is the label; see `metalabel status`)", highlight=False)
    for held in recorded.held:
        err_console.print(f"[yellow]held, not recorded:[/] question {held.question_id} ({escape(held.uri)}): "
                          f"{escape(held.reason)}; the answer is kept in {escape(str(held.kept))}. The question stays "
                          "open: the next Label Studio export of open questions gives it a new task showing the "
                          "project's content", highlight=False, soft_wrap=True)
    return 0


def _import_kept(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        kept = project.import_kept_annotations()
    answered = sum(recorded.answered + recorded.changed for _, recorded in kept.recorded)
    console.print(f"{len(kept.recorded)} kept annotations recorded ({answered} answers given or changed)",
                  highlight=False)
    for path, why in kept.refused:
        err_console.print(f"[yellow]not recorded:[/] {escape(str(path))}: {escape(why)}", highlight=False,
                          soft_wrap=True)
    if kept.stopped is not None:
        path, why = kept.stopped
        err_console.print(f"[yellow]stopped at[/] {escape(str(path))}: {escape(why)}; it and the "
                          f"{len(kept.left) - 1} kept after it are left, in order, for the next `metalabel "
                          f"import-answers {escape(str(args.project))} --kept`", highlight=False, soft_wrap=True)
    return 2 if kept.refused or kept.stopped else 0


def cmd_add_items(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        added = project.add_new_items()
        total = project.status()["items"]
    if added:
        console.print(f"added {len(added)} items the pool gained since init (first: {added[0].uri}); "
                      f"they start unlabeled; the project holds {total} items", highlight=False, soft_wrap=True)
    else:
        console.print(f"nothing to add: every pool item is in the project ({total} items)", highlight=False)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from metalabel.project import Project

    with Project.open(args.project) as project:
        status = project.status()
        rules = project.rule_analysis() if project.can_load_pool() else None  # None: the project has no rules
    if args.json:
        print(json.dumps(status if rules is None else {**status, "rules": rules.to_json()}, indent=2))
        return 0
    certified = status.pop("certified")
    unrecorded = status.pop("unrecorded_annotations")
    _print_mapping(f"project {args.project}", {**status, "unrecorded_annotations": len(unrecorded)})
    if unrecorded:
        err_console.print(f"[yellow]warning:[/] {len(unrecorded)} Label Studio annotations the ML backend kept are "
                          "not recorded in the project (a run held it, or they were refused); record them with "
                          f"`metalabel import-answers {escape(str(args.project))} --kept`: "
                          f"{escape(', '.join(unrecorded))}", highlight=False, soft_wrap=True)
    for line in _certified_lines(certified, retracted_total=status["retracted_labels"]):
        console.print(line, highlight=False, soft_wrap=True)
    for line in rules.lines() if rules is not None else ():
        console.print(line, highlight=False, soft_wrap=True)
    return 0


def _certified_lines(certified: dict | None, *, retracted_total: int) -> list[str]:
    """The last finished round's certified figures in plain words (``Project.status()['certified']``)."""
    if certified is None:
        return ["no round has finished yet, so nothing is certified: run `metalabel run`"]
    lines = [f"round {certified['round']}: {certified['summary']}"]
    if certified["threshold"] is not None:
        lines.append(f"  accepted: model labels with calibrated confidence >= {certified['threshold']:.3f} "
                     f"({certified['model_labels']} labels)")
    if certified["target_precision"] is not None and certified["delta"] is not None:
        lines.append(f"  asked for: precision >= {certified['target_precision']:g} with probability "
                     f"{1 - certified['delta']:g} (delta {certified['delta']:g})")
    in_round = certified["retracted_in_round"]
    lines.append(f"  retracted: {retracted_total} model labels in all"
                 + ("" if in_round is None else f", {in_round} in round {certified['round']}")
                 + (" (see `metalabel export --include-retracted`)" if retracted_total else ""))
    return lines


def cmd_library_add(args: argparse.Namespace) -> int:
    from metalabel.library import Library
    from metalabel.project import Project

    library = Library(args.library)
    with Project.open(args.project) as project:
        manifest = library.add(project, name=args.name, with_content=args.with_content, encoder=args.encoder,
                               label_space=args.label_space, progress=not args.quiet)
    sources = ", ".join(f"{count} {source}" for source, count in manifest.sources.items())
    console.print(f"added {manifest.name} to {library.folder}: {manifest.items} labeled items ({sources}), "
                  f"{len(manifest.class_names)} classes, {manifest.encoder.name} space"
                  + (", with content" if manifest.with_content else ""), highlight=False, soft_wrap=True)
    return 0


def cmd_library_list(args: argparse.Namespace) -> int:
    from metalabel.library import Library

    library = Library(args.library)
    manifests = library.manifests()
    if args.json:
        print(json.dumps([m.to_json() for m in manifests], indent=2))
        return 0
    table = Table("name", "items", "classes", "sources", "encoder", "label space", "added", "from",
                  title=f"library {library.folder}", title_justify="left")
    for m in manifests:
        table.add_row(m.name, str(m.items), str(len(m.class_names)),
                      ", ".join(f"{n} {s}" for s, n in m.sources.items()), m.encoder.name, m.label_space or "-",
                      m.added_at, m.project_folder)
    console.print(table)
    if not manifests:
        console.print("empty: add finished projects with `metalabel library add PROJECT`")
    elif library.model_folder.is_dir():
        console.print(f"model: {library.model().summary()}", highlight=False, soft_wrap=True)
    for modality in sorted({m.modality for m in manifests}):
        suggestion = library.suggest_strategy(modality)
        console.print(f"{modality}: " + (suggestion.summary() if suggestion else
                                          "no two query strategies tried enough to suggest one"),
                      highlight=False, soft_wrap=True)
        for target in sorted({m.certification.target_precision for m in manifests
                              if m.modality == modality and m.certification is not None}):
            prior = library.certification_prior(modality, target_precision=target)
            assert prior is not None
            console.print(f"{modality}: {prior.summary()}", highlight=False, soft_wrap=True)
    return 0


def cmd_library_remove(args: argparse.Namespace) -> int:
    from metalabel.library import Library

    Library(args.library).remove(args.name)
    console.print(f"removed {args.name}; a model trained with it keeps what it learned until `library train` runs "
                  "again", highlight=False, soft_wrap=True)
    return 0


def cmd_library_auto_add(args: argparse.Namespace) -> int:
    from metalabel.library import Library, set_auto_add
    from metalabel.project import Project

    library = None if args.off else Library(args.library)
    with Project.open(args.project) as project:
        set_auto_add(project, library)
        name = project.name
    console.print(f"{name}: not added to a library after its runs" if library is None else
                  f"{name} goes to the library {library.folder} after each of its runs", highlight=False,
                  soft_wrap=True)
    return 0


def cmd_library_export(args: argparse.Namespace) -> int:
    from metalabel.library import Library

    library = Library(args.library)
    path = library.export_file(args.file)
    console.print(f"exported {len(library.names())} projects to {path}", highlight=False)
    return 0


def cmd_library_import(args: argparse.Namespace) -> int:
    from metalabel.library import Library

    result = Library(args.library).import_file(args.file)
    console.print(f"imported {', '.join(result.added)} (exported {result.exported_at} by metalabel "
                  f"{result.metalabel_version})", highlight=False, soft_wrap=True)
    return 0


def cmd_library_train(args: argparse.Namespace) -> int:
    from metalabel.library import Library

    library = Library(args.library)
    model = library.train(algo=args.algo, ways=args.ways, shots=args.shots, queries=args.queries, steps=args.steps,
                          validation=args.validation, seed=args.seed, progress=not args.quiet)
    console.print(model.summary(), highlight=False, soft_wrap=True)
    console.print(f"checkpoint: {library.model_folder}; start a project from it with "
                  "`metalabel run PROJECT --from-library`", highlight=False, soft_wrap=True)
    return 0


def _library_parser(sub) -> None:
    library = sub.add_parser("library", help="a library of finished projects to meta-train the next one on")
    commands = library.add_subparsers(dest="library_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress output")
    _library_option(common)

    p = commands.add_parser("add", parents=[common], help="keep a finished project's labeled items (as embeddings)")
    p.add_argument("project", type=Path)
    p.add_argument("--name", default=None, help="the entry's name (default: the project's)")
    p.add_argument("--encoder", default=None, help="the encoder the project was run with (default: as for run)")
    p.add_argument("--label-space", default=None,
                   help="a name for the label space this project shares with others: their classes may then meet "
                        "in one training episode (default: none shared)")
    p.add_argument("--with-content", action="store_true", help="also keep the labeled items themselves")
    p.set_defaults(func=cmd_library_add)

    p = commands.add_parser("list", parents=[common], help="the projects the library holds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_library_list)

    p = commands.add_parser("remove", parents=[common], help="drop a project from the library")
    p.add_argument("name")
    p.set_defaults(func=cmd_library_remove)

    p = commands.add_parser("auto-add", parents=[common],
                            help="add a project to the library after each of its runs (a project setting)")
    p.add_argument("project", type=Path)
    p.add_argument("--off", action="store_true", help="stop adding it")
    p.set_defaults(func=cmd_library_auto_add)

    p = commands.add_parser("export", parents=[common], help="write the library's projects into one file to share")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_library_export)

    p = commands.add_parser("import", parents=[common], help="add the projects of a `library export` file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_library_import)

    p = commands.add_parser("train", parents=[common],
                            help="meta-train a learner across the library's projects (some held out to validate)")
    p.add_argument("--algo", default="protonet", choices=["protonet", "maml", "fomaml", "anil", "reptile"])
    p.add_argument("--ways", type=int, default=5, help="classes per episode (lowered to the smallest project's)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--validation", type=int, default=None, help="projects held out (default: a fifth, at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_library_train)


def _library_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--library", type=Path, default=None,
                        help="library folder (default: $METALABEL_LIBRARY, else ~/.metalabel/library)")


def cmd_meta_train(args: argparse.Namespace) -> int:
    from metalabel.meta.train import meta_train

    options = {key: getattr(args, key) for key in (
        "algo", "backbone", "ways", "shots", "queries", "train_ways", "meta_batch", "steps", "lr",
        "inner_lr", "inner_steps", "adapt_steps", "batch_norm", "val_every", "val_episodes",
        "time_budget_s", "seed") if getattr(args, key) is not None}
    out = args.out or Path("runs") / f"{args.source.replace(':', '-')}-{args.algo}-{args.ways}w{args.shots}s"
    meta_train(args.source, out=out, resume=not args.restart, device=args.device,
               progress=not args.quiet, workers=args.workers, ray=args.ray, **options)
    history = (out / "history.jsonl").read_text().splitlines()
    best = max((json.loads(line) for line in history), key=lambda r: r["val_accuracy"])
    console.print(f"best validation accuracy {100 * best['val_accuracy']:.2f} ± {100 * best['val_ci95']:.2f}% "
                  f"at step {best['step']}; checkpoint: {out / 'best'}")
    return 0


def cmd_meta_eval(args: argparse.Namespace) -> int:
    from metalabel.meta.checkpoint import load_run
    from metalabel.meta.evaluation import meta_evaluate
    from metalabel.meta.train import evaluation_sampler

    model = args.model / "best" if (args.model / "best").is_dir() else args.model  # named in the results
    learner = load_run(args.model, device=args.device)
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
                            sources=args.sources, include_retracted=args.include_retracted, overwrite=args.overwrite,
                            test_split=args.test_split, local_files_root=args.local_files_root)
    skipped = ", ".join(f"{count} by {reason}" for reason, count in result.skipped.items() if count)
    what = "label rows (retracted ones included, marked retracted)" if args.include_retracted else "labeled items"
    console.print(f"exported {result.rows} {what} to {result.path}" + (f" (left out: {skipped})" if skipped else ""),
                  highlight=False)
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
    p.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the pool's reader, e.g. max_classes=30 for kanji or size=64 for images")
    p.add_argument("--seed-per-class", type=int, default=None,
                   help="take this many of the pool's own labels per class as seeds (simulation on labeled data)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", parents=[common], help="label the pool: adapt, calibrate, accept, ask, repeat")
    p.add_argument("project", type=Path)
    p.add_argument("--model", default=None, help="meta-trained run or checkpoint folder; default: nearest class "
                   "mean in a pretrained encoder's space")
    p.add_argument("--encoder", default=None, help="minilm, efficientnet-lite0 or pixels (when --model is not a CNN)")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--budget", type=int, default=100, help="questions to the oracle over the whole project")
    p.add_argument("--per-round", type=int, default=None)
    p.add_argument("--max-rounds", type=int, default=10)
    p.add_argument("--strategy", default=None, help="auto, margin, entropy, least-confidence, coreset, badge, "
                   "typiclust, random (default: auto; with --from-library, the one that bought the most certified "
                   "coverage per answer on the library's projects, where two were tried)")
    p.add_argument("--oracle", choices=["simulated", "terminal", "labelstudio", "web"], default="terminal",
                   help="who answers; web: a page in the browser (see `metalabel serve`)")
    p.add_argument("--noise", type=float, default=0.0, help="error rate of the simulated oracle")
    p.add_argument("--delta", type=float, default=0.05,
                   help="the chance the precision guarantee may fail (labels are certified at 1 - delta)")
    p.add_argument("--certify", choices=["binomial", "ppi"], default="binomial",
                   help="exact binomial bound on the reference answers, or prediction-powered")
    p.add_argument("--reference-share", type=float, default=None,
                   help="share of each round's questions drawn at random as the reference sample "
                        "(default: the planner's split)")
    p.add_argument("--coverage-goal", type=float, default=0.9,
                   help="share of the pool the planner aims to certify")
    p.add_argument("--audit", action="store_true",
                   help="the round that spends the budget audits a random sample of the labels it is about to export; "
                        "a final round then learns from every answer, and the run keeps whichever of the two "
                        "certificates (each at delta / 2) covers more (see bench/results/precision_guarantee_audit.md; "
                        "binomial certificate only)")
    p.add_argument("--no-generate", action="store_true",
                   help="no augmentation, hallucination or synthesis (VAE, GAN, Bayesian network for tables)")
    p.add_argument("--gan", action="store_true",
                   help="also the conditional feature GAN among the generators (off by default: it did not raise "
                        "held-out accuracy in bench/results/generation.md)")
    p.add_argument("--no-feedback", action="store_true",
                   help="fixed target and hand-set policy, generators unjudged (a baseline to compare with)")
    p.add_argument("--project-meta-learning", action="store_true",
                   help="without --model, also meta-train an embedding on pseudo-tasks from the pool, a candidate "
                        "the judge may keep (off by default: it won 1 of 122 rounds in "
                        "bench/results/label_efficiency.md and took half of a 20 Newsgroups run)")
    p.add_argument("--rules", type=Path, default=None,
                   help="labeling functions (rules.py, or a .toml of keyword/regex/column/filename rules) whose "
                        "votes are evidence beside the model; kept in the project for later runs and status")
    p.add_argument("--from-library", action="store_true",
                   help="start from the learner `metalabel library train` made on past projects (in its encoder space)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="embed the pool on a Ray cluster first: alone, one started on this machine for the run; "
                        "or an existing cluster's address (auto, host:6379, ray://host:10001). Needs metalabel[ray]")
    _library_option(p)
    p.add_argument("--seed", type=int, default=0)
    _page_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", parents=[common],
                       help="answer the open questions and review the model's labels in a browser")
    p.add_argument("project", type=Path)
    _page_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ml-backend", parents=[common],
                       help="a Label Studio ML backend: metalabel's labels as predictions, annotations into the store")
    p.add_argument("project", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                   "machine only); another needs --allow-remote")
    p.add_argument("--port", type=int, default=9090, help="port to listen on (Label Studio's default is 9090)")
    p.add_argument("--allow-remote", action="store_true",
                   help="let --host be an address other machines (or a Label Studio container) can reach")
    p.set_defaults(func=cmd_ml_backend)

    p = sub.add_parser("plan", parents=[common],
                       help="how many more answers would certify a coverage at the target precision")
    p.add_argument("project", type=Path)
    p.add_argument("--model", default=None, help="meta-trained run or checkpoint folder (as for run)")
    p.add_argument("--encoder", default=None)
    p.add_argument("--coverage", type=float, default=0.9, help="share of the pool to certify")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--per-round", type=int, default=None, help="questions per round, for the next round's split")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("evaluate", parents=[common], help="the scorecard of a project's labels as they stand")
    p.add_argument("project", type=Path)
    p.add_argument("--model", default=None, help="meta-trained run or checkpoint folder (as for run)")
    p.add_argument("--encoder", default=None)
    p.add_argument("--gold-from-pool", action="store_true",
                   help="score against the pool's own labels (a simulation on labeled data)")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", parents=[common], help="write a self-contained HTML report of a project")
    p.add_argument("project", type=Path)
    p.add_argument("--out", type=Path, default=None, help="HTML file (default PROJECT/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("status", parents=[common], help="summarize a project")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("add-items", parents=[common],
                       help="add the items the pool gained since init (rows appended, images added)")
    p.add_argument("project", type=Path)
    p.set_defaults(func=cmd_add_items)

    p = sub.add_parser("import-answers", parents=[common], help="record answers from a Label Studio JSON export")
    p.add_argument("project", type=Path)
    p.add_argument("file", type=Path, nargs="?", help="the JSON (or JSON-MIN) export of the Label Studio project; a "
                   "reviewed `export --format labelstudio` too (JSON only)")
    p.add_argument("--kept", action="store_true",
                   help="instead of a file: every annotation `metalabel ml-backend` kept but could not record (a "
                        "run held the project), oldest first, each as the event it was")
    p.add_argument("--changed", action="store_true",
                   help="the annotations are ones their annotators changed (an ANNOTATION_UPDATED that `metalabel "
                        "ml-backend` kept): each is that annotator's changed answer even where it carries the same "
                        "time as the answer on record (a later answer of hers is her change without it)")
    p.set_defaults(func=cmd_import_answers)

    p = sub.add_parser("export", parents=[common], help="write the labeled data set with provenance")
    p.add_argument("project", type=Path)
    p.add_argument("--format", required=True, choices=["parquet", "csv", "imagefolder", "labelstudio", "hf"],
                   help="hf: a folder datasets.load_dataset(FOLDER) reads, with a dataset card")
    p.add_argument("--out", type=Path, default=None, help="export folder (default PROJECT/exports/FORMAT)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="drop model labels below this calibrated confidence")
    p.add_argument("--sources", default=None, help="comma list of human,model,imported,generated,augmented")
    p.add_argument("--include-retracted", action="store_true",
                   help="also write the model labels a round retracted, as rows marked retracted with "
                        "retracted_round and retraction_reason (not for imagefolder or hf: training data)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--test-split", action="store_true",
                   help="hf: put the people's answers to reference questions (random draws) in a test split")
    p.add_argument("--local-files-root", type=Path, default=None,
                   help="labelstudio: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, a folder holding the "
                        "export; images are then linked, not embedded in the tasks")
    p.set_defaults(func=cmd_export)

    _library_parser(sub)

    p = sub.add_parser("meta-train", parents=[common], help="meta-train a learner on episodes of a data source")
    p.add_argument("--source", default="kanji", help="built-in name[:split] or a path (kanji: background split)")
    p.add_argument("--algo", default="protonet", choices=["protonet", "maml", "fomaml", "anil", "reptile", "gnn",
                                                             "recurrent", "bayes"])
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
    p.add_argument("--workers", type=int, default=1,
                   help="split each meta-batch over this many worker processes (data parallel; the update is the "
                        "one-process update up to rounding; --meta-batch must be at least this)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the --workers through Ray Train: alone, on a Ray cluster started on this machine; or "
                        "an existing cluster's address (auto, host:6379, ray://host:10001). Needs metalabel[ray]")
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
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except MetalabelError as error:
        # escaped: a message may hold brackets, e.g. pip install 'metalabel[serve]', that rich would take as markup
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return 2
    except sqlite3.DatabaseError as error:  # damage found mid-command, past the checks at open
        err_console.print(f"[bold red]error:[/] the project database cannot be read ({error}); restore project.db "
                          "from a backup, or inspect it with: sqlite3 PROJECT/project.db 'PRAGMA integrity_check'",
                          highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; everything committed so far is kept")
        return 130


if __name__ == "__main__":
    sys.exit(main())
