"""``tgp-report SWEEP_DIR`` (or ``python -m tgp.report SWEEP_DIR``): tables and plots of a sweep.

Reads every job's ``metrics.json`` under SWEEP_DIR (recursively; jobs with only an ``error.txt``
are listed as failed with their error, finished jobs whose files no longer match their records —
:mod:`tgp.integrity` — as damaged) and writes, into ``--out`` (default: SWEEP_DIR):

- ``report.md``   per method (+ sanity-check variant) × dataset × model × target sparsity × retrain KD:
                  mean ± std, 95 % CI and n over seeds, the paired difference to ``--reference``
                  (default tgp) over matched seeds with its power (the smallest difference the
                  seeds detect, the seeds needed for ``--min-effect`` pp); the teacher and dense student as rows; nominal,
                  measured and effective sparsity; training cost per method (each stage once); the
                  failed, incomplete and missing jobs. The table is also printed to stdout.
- ``report.csv``  one row per job (done and failed)
- ``*.png``       score vs density (log), per-layer density, score vs training FLOPs, radar, cost; for text
                  tasks also score vs nonzero parameters (log; dense comparison models as points)

The score is each job's ``score_*`` (top-1 for images; a text task's own score, e.g. MCC for CoLA). Text
sweeps get, besides the score table per kind of score: the GLUE score per (method, model, sparsity,
retrain KD) over the GLUE tasks present (named so: a partial set is never called the GLUE score), the
official metrics of tasks with more than one, and XGLUE's per-language rows with their average — at
``--checkpoint`` (best-val by default).

Exit codes: 0 a report was written; 2 nothing to report (no such folder, or no finished job in it:
nothing is written).

``--wandb`` also logs a comparison run (the table with its intervals and the plots) to W&B.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tgp.io import atomic_write_bytes
from tgp.report.aggregate import AUTO, aggregate, method_costs
from tgp.report.benchmarks import glue_rows
from tgp.report.jobs import find_jobs, write_csv
from tgp.report.markdown import markdown_report, markdown_table
from tgp.report.power_table import power_sentence, power_table
from tgp.report.references import load_references
from tgp.report.scores import CHECKPOINTS, is_text
from tgp.resources import reference_dir

DEFAULT_REFERENCES = reference_dir()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgp-report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", nargs="+", help="sweep folder(s) (e.g. outputs/sweeps/<name>); searched recursively")
    p.add_argument("--out", default=None, help="where report.md/.csv and the plots go (default: the first SWEEP_DIR)")
    p.add_argument("--references", default=str(DEFAULT_REFERENCES),
                   help="folder of reference YAML files (published numbers); 'none' to draw none")
    p.add_argument("--reference", default=AUTO, metavar="METHOD",
                   help="method the paired differences are taken against (default: tgp when present; 'none': none)")
    p.add_argument("--min-effect", type=float, default=1.0, metavar="PP",
                   help="true difference (percentage points of top-1) for the 'seeds needed' power figure (default 1)")
    p.add_argument("--checkpoint", default="best_val", choices=CHECKPOINTS,
                   help="which checkpoint the text tables (GLUE score, official metrics, XGLUE languages) and the "
                        "score-vs-parameters plots show (default: best_val, selected on validation)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--wandb", action="store_true", help="also log a comparison run to W&B (offline without an API key)")
    p.add_argument("--wandb-project", default="tgp")
    return p


def method_colors() -> dict[str, str]:
    """``{method: colour}`` from the method registry (:class:`~tgp.methods.MethodSpec`'s ``color``).
    Read here only, when plots are drawn: the report's modules take the mapping as an argument."""
    from tgp.methods import load_all

    return {name: spec.color for name, spec in load_all().items() if spec.color}


def run_report(sweep_dirs, out=None, references=DEFAULT_REFERENCES, plots=True, wandb=False,
               wandb_project="tgp", reference: str | None = AUTO, colors: dict[str, str] | None = None,
               min_effect: float = 1.0, checkpoint: str = "best_val") -> dict:
    """Write the report of ``sweep_dirs`` into ``out``; ``colors``: ``{method: colour}`` of the plots
    (default: the method registry's, :func:`method_colors`; a method missing there gets a fixed colour
    from its name); ``min_effect``: the difference, in percentage points, the power table sizes seeds for;
    ``checkpoint``: that of the text tables and the score-vs-parameters plots."""
    if not min_effect > 0:
        raise ValueError(f"--min-effect={min_effect!r}: must be a positive number of percentage points. "
                         "Fix: pass e.g. --min-effect 1 (one point of top-1).")
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    for d in sweep_dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder. Fix: pass a sweep folder, e.g. outputs/sweeps/<name>.")
    out = Path(out) if out else sweep_dirs[0]
    verified: dict = {}  # stage folders shared by jobs are checked once
    jobs = find_jobs(sweep_dirs[0], verified)
    for d in sweep_dirs[1:]:
        more = find_jobs(d, verified)
        jobs.ok += more.ok
        jobs.failed += more.failed
        jobs.incomplete += more.incomplete
        jobs.missing += more.missing
        jobs.damaged += more.damaged
    if not jobs.ok:
        raise NothingToReport(sweep_dirs, jobs)
    out.mkdir(parents=True, exist_ok=True)
    if reference is not None and str(reference).lower() == "none":
        reference = None
    groups = aggregate(jobs.ok, reference=reference, min_effect=min_effect / 100)
    reference = next((g["reference"] for g in groups if g.get("reference")), None)  # "auto" resolved
    glue = glue_rows(jobs.ok, reference, checkpoint)
    costs = method_costs(jobs.ok)
    refs = load_references(None if str(references).lower() == "none" else references)
    png = []
    if plots and groups:
        from tgp.report.plots import make_plots

        from tgp.report.plots_params import plot_score_vs_params

        colors = method_colors() if colors is None else colors
        png = make_plots(groups, refs, out, rows=jobs.ok, colors=colors)
        png += plot_score_vs_params(groups, glue, out, checkpoint, colors=colors)
    title = ", ".join(str(d) for d in sweep_dirs)
    text = markdown_report(Path(title), jobs, groups, refs, png, costs=costs, glue=glue, checkpoint=checkpoint).encode()
    atomic_write_bytes(out / "report.md", lambda f: f.write(text))
    write_csv(jobs.ok + jobs.failed + jobs.damaged, out / "report.csv")
    result = {"out": out, "jobs": jobs, "groups": groups, "glue": glue, "references": refs, "plots": png,
              "costs": costs[0]}
    if wandb:
        from tgp.report.wandb_report import log_comparison

        result["wandb_dir"] = log_comparison(groups, refs, png, name=sweep_dirs[0].name, project=wandb_project,
                                             costs=costs[0])
    return result


def summary_tables(groups: list[dict]) -> str:
    """The main table(s) for stdout: the image table; per kind of text score, its table."""
    from tgp.report.text_markdown import text_order

    image, text = [g for g in groups if not is_text(g)], text_order([g for g in groups if is_text(g)])
    tables = [markdown_table(image)] if image else []
    for name in dict.fromkeys(g["score_name"] for g in text):
        tables.append(markdown_table([g for g in text if g["score_name"] == name], name, params=True))
    return "\n\n".join(tables)


class NothingToReport(Exception):
    """No finished job under the sweep folders (none at all, or only failed, damaged or unfinished ones)."""

    def __init__(self, sweep_dirs, jobs):
        self.jobs = jobs
        where = ", ".join(str(d) for d in sweep_dirs)
        found = "no job folder at all" if not jobs.all_rows else f"no finished job ({_counts(jobs)})"
        super().__init__(f"nothing to report in {where}: {found}; no report written. Fix: pass the folder a sweep "
                         "wrote its jobs to (outputs/sweeps/<name>), or re-run the sweep's command to finish its jobs.")


def _counts(jobs) -> str:
    damaged = f", {len(jobs.damaged)} damaged" if jobs.damaged else ""
    return (f"{len(jobs.ok)} done, {len(jobs.failed)} failed, {len(jobs.incomplete)} incomplete, "
            f"{len(jobs.missing)} missing{damaged}")


def _list_jobs(jobs) -> None:
    for r in jobs.damaged:
        print(f"  damaged: {r.get('method')} s={r.get('target_sparsity')} seed={r.get('seed')}: {r.get('error')}")
    for r in jobs.failed:
        print(f"  failed: {r.get('method')} s={r.get('target_sparsity')} seed={r.get('seed')}: {r.get('error')}")
    for r in jobs.incomplete:
        print(f"  incomplete: {r.get('run_dir')}")
    for r in jobs.missing:
        print(f"  missing: {r.get('method')} {r.get('dataset')} s={r.get('target_sparsity')} seed={r.get('seed')}")


def main(argv: list[str] | None = None) -> int:
    """``tgp-report``: 0 with a report written; 2 (one paragraph, nothing written) for a folder that does
    not exist or holds no finished job, or a bad option."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.min_effect > 0:
        parser.error(f"--min-effect {args.min_effect:g}: must be a positive number of percentage points. "
                     "Fix: pass e.g. --min-effect 1 (one point of top-1).")
    try:
        res = run_report(args.sweep_dir, args.out, args.references, plots=not args.no_plots, wandb=args.wandb,
                         wandb_project=args.wandb_project, reference=args.reference, min_effect=args.min_effect,
                         checkpoint=args.checkpoint)
    except FileNotFoundError as e:
        print(f"tgp-report: error: {e}", file=sys.stderr)
        return 2
    except NothingToReport as e:
        _list_jobs(e.jobs)
        print(f"tgp-report: error: {e}", file=sys.stderr)
        return 2
    jobs = res["jobs"]
    print(summary_tables(res["groups"]) if res["groups"] else "(no finished job)")
    power = power_table(res["groups"])
    if power:
        print(f"\n{power}\n{power_sentence(res['groups'])}")
    print(f"\n{_counts(jobs)}")
    _list_jobs(jobs)
    print(f"wrote {res['out'] / 'report.md'}, {res['out'] / 'report.csv'} and {len(res['plots'])} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
