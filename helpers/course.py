"""The headless course run: `python -m helpers.course run` (what `make course` calls).

It starts the local API server when the backend is local, executes notebooks 01–08 in order (08 on the local backend only) with
nbclient into the build folder, writes a one-page HTML report (loss curves and the comparison
table) and prints where everything went. Everything the notebooks do is re-run safe, so running
the course twice reuses the uploads, the job and the cached answers of the first run.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers import memory
from helpers.config import REPO_ROOT, Config, env_flag, load_config
from helpers.files import write_text_atomic
from helpers.kernelenv import kernel_environment

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
COMPARE_METRICS = "compare_metrics.csv"
COMPARE_ANSWERS = "compare_answers.csv"


class CourseError(RuntimeError):
    """A notebook of the course failed; the message names it and the cell's error."""


@dataclass
class NotebookRun:
    """How one notebook went."""

    name: str
    seconds: float
    output: Path
    error: str | None = None


# Notebooks that need the local backend, and why (a remote run skips them and says so).
LOCAL_ONLY = {"08": "the local backend only: OpenAI does not release a fine-tuned model's weights to export"}


def course_notebooks(folder: Path = NOTEBOOK_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """The course's notebooks (`NN_*.ipynb`) in order, or just those whose number is in `only`."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if p.name[:2] in set(only)]
    if not found:
        raise CourseError(f"no notebooks NN_*.ipynb in {folder}" + (f" with numbers {', '.join(only)}" if only else ""))
    return found


def execute_notebook(path: Path, out_dir: Path, timeout: int = 1800, env: dict[str, str] | None = None) -> NotebookRun:
    """Run one notebook top to bottom in a fresh kernel (cwd: notebooks/) and save the executed copy into out_dir."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    out = out_dir / path.name
    start = time.monotonic()
    error = None
    try:
        client.execute(env={**os.environ, **(env or {})})
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    finally:
        write_text_atomic(out, nbformat.writes(nb) + "\n")
    return NotebookRun(path.name, time.monotonic() - start, out, error)


def _figure_png(results_csv: Path) -> str | None:
    """The loss/accuracy curves from the job's result CSV as a base64 PNG, or None if there is no CSV yet."""
    if not results_csv.is_file():
        return None
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    from helpers.fonts import setup_cjk_font
    from helpers.plots import plot_training_curves

    setup_cjk_font()  # the curves' labels are Chinese
    fig = plot_training_curves(pd.read_csv(results_csv))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(cfg: Config, runs: Sequence[NotebookRun], path: Path) -> Path:
    """A one-page HTML report: configuration, notebook timings, loss curves, the comparison table and example answers."""
    import pandas as pd  # here, not at the top: the runner sits beside the course's processes (0.08 GB; issue 17)

    parts = [f"<h1>微调实战：运行报告</h1><pre>{html.escape(cfg.describe())}</pre>", "<h2>Notebooks</h2>"]
    timing = pd.DataFrame([{"notebook": r.name, "seconds": round(r.seconds, 1), "result": r.error or "ok"} for r in runs])
    parts.append(timing.to_html(index=False))
    png = _figure_png(cfg.work_dir / "results.csv")
    parts.append("<h2>训练曲线</h2>" + (f'<img src="data:image/png;base64,{png}" style="max-width:100%">' if png else "<p>(no result file yet)</p>"))
    metrics_csv, answers_csv = cfg.work_dir / COMPARE_METRICS, cfg.work_dir / COMPARE_ANSWERS
    if metrics_csv.is_file():
        parts.append("<h2>对比（held-out）</h2>" + pd.read_csv(metrics_csv, index_col=0).round(2).to_html())
    if answers_csv.is_file():
        answers = pd.read_csv(answers_csv).head(3)
        parts.append("<h2>前三个问题</h2>" + answers.to_html(index=False))
    page = ("<!doctype html><html lang='zh-CN'><meta charset='utf-8'><title>微调实战 report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{vertical-align:top;font-size:13px}</style>"
            + "".join(parts) + "</html>")
    return write_text_atomic(path, page)


def run_course(cfg: Config, *, only: Sequence[str] | None = None, write_back: bool = False, timeout: int = 1800) -> list[NotebookRun]:
    """Start the local server if needed, execute the notebooks in order, write the report; raise CourseError on a failure."""
    env = kernel_environment(cfg, headless=True)
    started_here = False
    if cfg.is_local:
        need = memory.check(cfg.base_model)
        have = f"{need.available_gb:.1f} GB" if need.available_gb is not None else "unknown"
        print(f"memory: {have} available, the course on {cfg.base_model} needs up to {need.needed_gb:.1f} GB", flush=True)
        if not need.enough and not env_flag("WORKBOOK_SKIP_MEMORY_CHECK"):
            raise CourseError(memory.advice(need))
        from helpers.local_backend import ensure_server

        started_here = ensure_server(cfg)
        print(f"local API server: {cfg.base_url} ({'started' if started_here else 'already running, reused'})", flush=True)
    out_dir = cfg.build_dir / "notebooks"
    runs: list[NotebookRun] = []
    try:
        for path in course_notebooks(NOTEBOOK_DIR, only):
            if not cfg.is_local and path.name[:2] in LOCAL_ONLY:
                print(f"skipping {path.name}: {LOCAL_ONLY[path.name[:2]]}", flush=True)
                continue
            print(f"running {path.name} ...", flush=True)
            run = execute_notebook(path, out_dir, timeout, env)
            runs.append(run)
            print(f"  {'failed' if run.error else 'done'} in {run.seconds:.0f} s -> {run.output}", flush=True)
            if run.error:
                raise CourseError(f"{path.name} failed: {run.error}\nThe executed notebook with the error is {run.output}")
            if write_back:
                shutil.copyfile(run.output, path)
    finally:
        report = write_report(cfg, runs, cfg.build_dir / "report.html")
        print(f"report: {report}")
        finished = len(runs) == len(course_notebooks(NOTEBOOK_DIR, only)) and not any(r.error for r in runs)
        if started_here and finished:
            from helpers.local_backend import stop_server

            stop_server(cfg)
            print("local API server stopped (it was started by this run)")
        elif started_here:
            # A job may still be training: stopping the server would discard it. Leave it for the next run.
            print(f"local API server left running on {cfg.base_url} (a job may still be training); "
                  "the next `make course` picks it up. Stop it with: .venv/bin/python -m helpers.local_backend stop")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m helpers.course run [--only 04 05] [--write-back]`."""
    parser = argparse.ArgumentParser(prog="python -m helpers.course", description="Run the 微调实战 course headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks (01-09) in order into the build folder and write a report")
    run.add_argument("--only", nargs="+", metavar="NN", help="run only these notebook numbers, e.g. --only 06 07")
    run.add_argument("--write-back", action="store_true", help="also save the executed notebooks into notebooks/ (to commit outputs)")
    run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    args = parser.parse_args(argv)
    cfg = load_config()
    print(cfg.describe(), flush=True)
    start = time.monotonic()
    try:
        runs = run_course(cfg, only=args.only, write_back=args.write_back, timeout=args.timeout)
    except CourseError as exc:
        print(f"\nCOURSE FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\nall {len(runs)} notebooks ran in {time.monotonic() - start:.0f} s")
    print(f"executed notebooks : {cfg.build_dir / 'notebooks'}")
    print(f"report             : {cfg.build_dir / 'report.html'}")
    print(f"work folder        : {cfg.work_dir} (uploads, job, results.csv, compare_*.csv, eval_cache/)")
    if args.write_back:
        print(f"outputs written back into {NOTEBOOK_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
