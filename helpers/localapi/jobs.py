"""Fine-tuning jobs: what a job request may ask, a FIFO queue with one job training at a time, and its lifecycle.

Life of a job (the statuses of OpenAI's API):
    validating_files -> queued -> running -> succeeded | failed | cancelled
                                  running <-> paused  (POST .../pause, .../resume; a paused job waits, even
                                                       across a server restart, until it is resumed)
Validation runs in a thread of the server with the workbook's validator (helpers/validate.py, the same one
notebook 03 uses). Training runs in a separate process (worker.py, multiprocessing "spawn") so the server keeps
answering; the worker sends typed records over a queue and only the server writes the database.
The trainer saves a resumable state in the job's folder (trainer.py: before the first step, at every
checkpoint, at least every 30 s, and when it is told to stop). If the server stops or dies, the worker
stops too (it notices its parent change); on the next start a job left `running` is queued again and
continues from its saved state ("Fine-tuning job resumed from step N"): no step trained twice into the
result file, none skipped. If the worker process alone dies (killed, out of memory), the job is retried once
from its saved state, then fails with the reason. Only a saved state that cannot be used (missing, corrupt)
fails a job that was interrupted.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from helpers.localapi import schemas
from helpers.localapi.errors import bad_request
from helpers.localapi.storage import Storage, new_id, now
from helpers.localapi.worker import Checkpoint, Error, Message, Metrics, Result, Resumed, WorkerRecord, worker_main
from helpers.files import write_bytes_atomic

log = logging.getLogger("helpers.localapi.jobs")

ACTIVE = ("validating_files", "queued", "running", "paused")
PAUSABLE = ("queued", "running")
WORKER_RETRIES = 1  # a worker that dies is restarted this many times from the saved state
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
# DPO: OpenAI publishes no columns for its DPO result files; the same first four (the loss is DPO's, the accuracy
# the share of pairs ranked right), then the reward margin (docs/ARCHITECTURE.md)
DPO_RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "train_reward_margin",
                      "valid_reward_margin"]
MAX_SUFFIX = 64


class ValidationFailed(Exception):
    """A training or validation file is not a usable chat fine-tuning file."""

    def __init__(self, code: str, message: str, param: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.problem = code, message, param, problem


# ---- job requests ------------------------------------------------------------------------------
def check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's metadata limits: 16 pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return
    if len(metadata) > 16:
        raise bad_request("metadata may have at most 16 key-value pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request(f"metadata key {key[:70]!r} is longer than 64 characters.", param="metadata")
        if len(value) > 512:
            raise bad_request(f"metadata value of {key!r} is longer than 512 characters.", param="metadata")


def check_hyperparameters(hp: schemas.Hyperparameters, where: str) -> dict:
    """Range checks of supervised (or DPO) hyperparameters; returns them as a dict ("auto" kept)."""
    if hp.n_epochs != "auto" and not 1 <= hp.n_epochs <= 50:
        raise bad_request(f"{where}.n_epochs must be 'auto' or between 1 and 50.", param=f"{where}.n_epochs")
    if hp.batch_size != "auto" and not 1 <= hp.batch_size <= 256:
        raise bad_request(f"{where}.batch_size must be 'auto' or between 1 and 256.", param=f"{where}.batch_size")
    if hp.learning_rate_multiplier != "auto" and not 0 < hp.learning_rate_multiplier <= 10:
        raise bad_request(f"{where}.learning_rate_multiplier must be 'auto' or in (0, 10].",
                          param=f"{where}.learning_rate_multiplier")
    checked = {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier}
    if isinstance(hp, schemas.DpoHyperparameters):
        if hp.beta != "auto" and not 0 < hp.beta <= 2:
            raise bad_request(f"{where}.beta must be 'auto' or in (0, 2].", param=f"{where}.beta")
        checked["beta"] = hp.beta
    return checked


def requested_method(body: schemas.JobCreate) -> tuple[str, dict]:
    """The method of a request ("supervised" or "dpo") and its hyperparameters (in `method` or, for supervised
    jobs, the deprecated top level), checked."""
    if body.method is not None and body.hyperparameters is not None:
        raise bad_request("Specify hyperparameters inside 'method' only; the top-level 'hyperparameters' is deprecated "
                          "and cannot be combined with 'method'.", param="hyperparameters")
    if body.method is None:
        return "supervised", check_hyperparameters(body.hyperparameters or schemas.Hyperparameters(), "hyperparameters")
    method = body.method.type
    if method not in ("supervised", "dpo"):
        raise bad_request(f"Fine-tuning method '{method}' is not supported by the local server; use 'supervised' or "
                          "'dpo'.", param="method.type")
    for other in ("supervised", "dpo", "reinforcement"):
        if other != method and getattr(body.method, other) is not None:
            raise bad_request(f"method.{other} was given, but method.type is '{method}': put the hyperparameters in "
                              f"method.{method}.", param=f"method.{other}")
    config = getattr(body.method, method)
    hp = config.hyperparameters if config is not None and config.hyperparameters is not None else (
        schemas.DpoHyperparameters() if method == "dpo" else schemas.Hyperparameters())
    return method, check_hyperparameters(hp, f"method.{method}.hyperparameters")


def new_job_row(body: schemas.JobCreate, storage: Storage, base_models: list[str]) -> dict:
    """Validate a job request against what the server has; the new row in `validating_files`."""
    if body.model not in base_models and storage.get_model(body.model) is None:  # ft: models continue training
        raise bad_request(f"Model {body.model} is not available for fine-tuning on the local server; use one of: "
                          f"{', '.join(base_models)}, or a fine-tuned model or checkpoint of this server.",
                          param="model", code="model_not_available")
    for param in ("training_file", "validation_file"):
        file_id = getattr(body, param)
        if file_id is None:
            continue
        row = storage.get_file(file_id)
        if row is None:
            raise bad_request(f"invalid {param}: {file_id} (no such file)", param=param, code="invalid_file_id")
        if row["purpose"] != "fine-tune":
            raise bad_request(f"File {file_id} has purpose '{row['purpose']}'; fine-tuning needs purpose 'fine-tune'.",
                              param=param, code="invalid_file_purpose")
    if body.suffix is not None and (len(body.suffix) > MAX_SUFFIX or not re.fullmatch(r"[A-Za-z0-9_.\-]*", body.suffix)):
        raise bad_request(f"suffix must be at most {MAX_SUFFIX} characters of letters, digits, '-', '_' and '.'.",
                          param="suffix")
    check_metadata(body.metadata)
    if body.integrations:
        raise bad_request("Integrations (e.g. wandb) are not supported by the local server.", param="integrations")
    method, hyper = requested_method(body)
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return {"id": new_id("ftjob-"), "created_at": now(), "model": body.model, "training_file": body.training_file,
            "validation_file": body.validation_file, "suffix": body.suffix, "seed": seed, "metadata": body.metadata,
            "hyperparameters": hyper, "method": method, "status": "validating_files", "result_files": []}


def metrics_text(data: dict) -> str:
    """The message of a step's `metrics` event."""
    text = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
    if data.get("valid_loss") is not None:
        text += f", validation loss={data['valid_loss']:.4f}"
    if data.get("full_valid_loss") is not None:  # scored on the whole validation file (epoch ends), as OpenAI's last step
        text += f", full validation loss={data['full_valid_loss']:.4f}"
    return text


def exit_reason(exitcode: int) -> str:
    """A worker's exit code in words (a negative code is the signal that ended it)."""
    if exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = "; the system kills a process this way when it runs out of memory" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:local:<suffix>:<8 chars of the job id>` (the suffix may be empty, as on OpenAI)."""
    return f"ft:{base}:local:{suffix or ''}:{job_id[-8:]}"


def validate_file(path: Path, model: str, *, training: bool = True, cache_dir: Path | None = None,
                  method: str = "supervised") -> tuple[int, list[str]]:
    """Check one uploaded JSONL with the workbook's validator: (examples, warnings), or raise ValidationFailed.

    `method` is the job's: "supervised" files hold chat examples, "dpo" files preference pairs (a line of the other
    kind is a problem that says so).

    The first problem names its line; the count of further problems follows. Fewer than 10 examples is a
    problem only for the training file (as on OpenAI). With `cache_dir` (the server's model cache) each example is
    also counted with the base model's own tokenizer: examples the trainer would cut are warnings, and tool-calling
    data for a model whose chat template cannot render tools is rejected here, before the job is queued.
    """
    from helpers import validate  # the same validator as notebook 03 and `python -m helpers.validate`
    from helpers.tokens import local_training_counter

    counter = local_training_counter(model, cache_dir) if cache_dir is not None else None
    report = validate.validate_file(path, model=model, min_examples=validate.MIN_EXAMPLES if training else 1,
                                    training=counter, method=method)
    if report.problems:
        first = report.problems[0]
        where = f"line {first.line}: " if first.line else ""
        more = f" ({len(report.problems) - 1} more problem(s) in this file)" if len(report.problems) > 1 else ""
        raise ValidationFailed(first.code, f"{where}{first.message}{more}", "")
    warnings = [(f"line {w.line}: " if w.line else "") + w.message for w in report.warnings]
    return int(report.n_examples), warnings


def base_and_adapter(storage: Storage, model: str) -> tuple[str, str | None]:
    """A job's base model and the adapter it continues from: `model` is a base id, or a fine-tuned model or checkpoint."""
    row = storage.get_model(model)
    return (row["base_model"], row["adapter_dir"]) if row else (model, None)


def overlap_warnings(train: Path, valid: Path) -> list[str]:
    """Validation lines whose question is also in the training file (allowed, as on OpenAI, but worth a warning)."""
    from helpers import validate

    found = validate.check_overlap(train, valid)
    return [f"validation file line {p.line}: {p.message}" for p in found[:5]] + (
        [f"... and {len(found) - 5} more overlapping validation lines"] if len(found) > 5 else [])


def result_csv(metrics: list[dict], method: str = "supervised") -> bytes:
    """OpenAI's result CSV: one row per step, validation columns empty when there was no validation file.

    The stored result file is this CSV base64-encoded, as OpenAI serves it (`base64.b64decode(content)`).
    A DPO job's file has DPO_RESULT_COLUMNS (each the metric of that name).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if method == "dpo":
        writer.writerow(DPO_RESULT_COLUMNS)
        for m in metrics:
            writer.writerow([m.get("step")] + [_fmt(m.get(column)) for column in DPO_RESULT_COLUMNS[1:]])
        return out.getvalue().encode("utf-8")
    writer.writerow(RESULT_COLUMNS)
    for m in metrics:
        writer.writerow([
            m.get("step"), _fmt(m.get("train_loss")), _fmt(m.get("train_mean_token_accuracy")),
            _fmt(m.get("valid_loss")), _fmt(m.get("valid_mean_token_accuracy")),
        ])
    return out.getvalue().encode("utf-8")


def _fmt(value: Any) -> str:
    """A number for the CSV, or an empty cell."""
    return "" if value is None else f"{float(value):.6g}"


class JobManager:
    """Owns the job queue: validation threads, one scheduler thread, one training process at a time."""

    def __init__(self, storage: Storage, *, validate: Callable[..., tuple[int, list[str]]] = validate_file,
                 before_training: Callable[[], Any] | None = None, base_weights: str = "auto") -> None:
        self.storage = storage
        self.base_weights = base_weights  # TrainSpec.base_weights of every job (ServerSettings.train_base_weights)
        self.validate = validate
        # Called before each training process starts: the app unloads the generation models, so that the server
        # does not hold a copy of the weights beside the worker's (benchmarks/README.md, "Memory").
        self.before_training = before_training
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stop_event: Any = None
        self._process: mp.process.BaseProcess | None = None
        self._current: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Recover state left by a previous server (interrupted jobs are queued to resume), then schedule."""
        for job in self.storage.jobs_with_status("running"):
            step = f" at step {job['step']} of {job['total_steps']}" if job["total_steps"] else ""
            self.storage.update_job(job["id"], status="queued", resume_pending=1, estimated_finish=None)
            self.storage.add_event(job["id"], f"The local server restarted while this job was running{step}; "
                                   "it is queued again and continues from its last saved state.")
        for job in self.storage.jobs_with_status("validating_files"):
            self._spawn_validation(job["id"])
        self._thread = threading.Thread(target=self._schedule, name="ftjob-scheduler", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the scheduler; a running job saves its state and stays `running`, to resume at the next start."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        proc = self._process
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)

    def training(self) -> dict | None:
        """The job being trained right now and its worker's pid, or None."""
        proc, job_id = self._process, self._current
        if proc is None or job_id is None:
            return None
        return {"job_id": job_id, "pid": proc.pid}

    # ---- API operations ----------------------------------------------------------------
    def create(self, row: dict) -> dict:
        """Store a new job (a checked `new_job_row`), say so in its events, and start validating its files."""
        self.storage.add_job(row)
        self.storage.add_event(row["id"], f"Created fine-tuning job: {row['id']}")
        self.submit(row["id"])
        return self.storage.get_job(row["id"])

    def submit(self, job_id: str) -> None:
        """A new job: validate its files in the background."""
        self._spawn_validation(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not finished; a running one is told to stop."""
        job = self.storage.get_job(job_id)
        if job is None or job["status"] not in ACTIVE:
            return
        self.storage.update_job(job_id, cancel_requested=1)
        self._finish(job_id, "cancelled")
        if self._current == job_id and self._stop_event is not None:
            self._stop_event.set()
        with self._wake:
            self._wake.notify_all()

    def pause(self, job_id: str) -> None:
        """Pause a queued or running job (a running one saves its state and stops between two steps)."""
        job = self.storage.get_job(job_id)
        if job is None or job["status"] not in PAUSABLE:
            return
        was_running = job["status"] == "running"
        self.storage.update_job(job_id, status="paused", resume_pending=int(was_running or job["resume_pending"]),
                                estimated_finish=None)
        where = f" at step {job['step']}" if was_running else ""
        self.storage.add_event(job_id, f"Fine-tuning job paused{where}")
        if self._current == job_id and self._stop_event is not None:
            self._stop_event.set()

    def resume(self, job_id: str) -> None:
        """Queue a paused job again; it continues from its saved state when its turn comes."""
        job = self.storage.get_job(job_id)
        if job is None or job["status"] != "paused":
            return
        self.storage.update_job(job_id, status="queued")
        self.storage.add_event(job_id, "Fine-tuning job queued to resume")
        with self._wake:
            self._wake.notify_all()

    # ---- validation --------------------------------------------------------------------
    def _spawn_validation(self, job_id: str) -> None:
        threading.Thread(target=self._validate_job, args=(job_id,), name=f"validate-{job_id}", daemon=True).start()

    def _validate_job(self, job_id: str) -> None:
        job = self.storage.get_job(job_id)
        if job is None:
            return
        files = [("training_file", job["training_file"])]
        if job["validation_file"]:
            files.append(("validation_file", job["validation_file"]))
        names = " and ".join(f"{p.replace('_', ' ')}: {f}" for p, f in files)
        self.storage.add_event(job_id, f"Validating {names}")
        counts: dict[str, int] = {}
        warnings: list[str] = []
        try:
            for param, file_id in files:
                row = self.storage.get_file(file_id)
                if row is None:
                    raise ValidationFailed(f"invalid_{param}", f"The {param.replace('_', ' ')} {file_id} was deleted "
                                           "before the job could validate it.", param)
                try:
                    counts[param], found = self.validate(self.storage.blob_path(file_id), job["model"],
                                                         training=param == "training_file",
                                                         cache_dir=self.storage.models_dir, method=job["method"])
                except ValidationFailed as exc:
                    raise ValidationFailed(f"invalid_{param}",
                                           f"The job failed due to an invalid {param.replace('_', ' ')} "
                                           f"{file_id} ({row['filename']}), {exc.message}", param,
                                           problem=exc.code) from None
                warnings += [f"{row['filename']} {w}" for w in found]
            if job["validation_file"]:
                warnings += overlap_warnings(self.storage.blob_path(job["training_file"]),
                                             self.storage.blob_path(job["validation_file"]))
        except ValidationFailed as exc:  # OpenAI's event carries the code and param in `data`
            self.storage.add_event(job_id, exc.message, level="error",
                                   data={"error_code": exc.code, "error_param": exc.param, "problem": exc.problem})
            self._finish(job_id, "failed", error={"code": exc.code, "message": exc.message, "param": exc.param})
            return
        except Exception as exc:  # a bug or an unreadable blob: fail the job, say why
            log.exception("validation of %s crashed", job_id)
            message = f"Validating the files failed unexpectedly: {type(exc).__name__}: {exc}"
            self.storage.add_event(job_id, message, level="error")
            self._finish(job_id, "failed", error={"code": "validation_error", "message": message, "param": None})
            return
        job = self.storage.get_job(job_id)
        if job is None or job["status"] != "validating_files":  # cancelled meanwhile
            return
        for warning in warnings:
            self.storage.add_event(job_id, f"Warning: {warning}", level="warn")
        self.storage.update_job(job_id, status="queued", n_examples=counts["training_file"])
        what = "preference pairs" if job["method"] == "dpo" else "examples"
        self.storage.add_event(job_id, f"Files validated ({counts['training_file']} training {what}"
                               + (f", {counts['validation_file']} validation {what}" if "validation_file" in counts else "")
                               + "), moving job to queued state")
        with self._wake:
            self._wake.notify_all()

    # ---- scheduling and training -------------------------------------------------------
    def _schedule(self) -> None:
        while True:
            with self._wake:
                if self._closing:
                    return
                queued = self.storage.jobs_with_status("queued")
                if not queued:
                    self._wake.wait(timeout=1.0)
                    continue
            job = queued[0]
            try:
                self._run(job)
            except Exception as exc:
                log.exception("job %s crashed the scheduler", job["id"])
                self._fail(job["id"], "server_error", f"The local server could not run this job: {type(exc).__name__}: {exc}")

    def _run(self, job: dict) -> None:
        """Train one queued job: fresh, or resumed from its saved state; a worker that dies is retried once."""
        from helpers.localapi import trainer

        job_id = job["id"]
        fresh = self.storage.get_job(job_id)
        if fresh is None or fresh["status"] != "queued":  # cancelled or paused since it was picked
            return
        hp = dict(job["hyperparameters"])
        n_examples = int(job["n_examples"] or 0)
        base, init_adapter = base_and_adapter(self.storage, job["model"])
        method = job["method"]
        resolved = trainer.resolve_hyperparameters(base, n_examples, hp.get("n_epochs", "auto"),
                                                   hp.get("batch_size", "auto"), hp.get("learning_rate_multiplier", "auto"),
                                                   method=method, beta=hp.get("beta", "auto"))
        details = dict(resolved)
        resolved = {k: resolved[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta") if k in resolved}
        output_dir = self.storage.jobs_dir / job_id
        resume = self._can_resume(fresh, output_dir / trainer.STATE_FILE)
        if resume is None:
            return
        if not resume:
            if output_dir.exists():
                shutil.rmtree(output_dir)
            output_dir.mkdir(parents=True)
            self.storage.update_job(job_id, status="running", hyperparameters=resolved, started_at=now())
            self.storage.add_event(job_id, "Fine-tuning job started",
                                   data={"hyperparameters": details, "n_examples": n_examples})
        else:
            self.storage.update_job(job_id, status="running", hyperparameters=resolved)
        spec = {
            "base_model": base,
            "init_adapter": init_adapter,
            "train_name": self._file_name(job["training_file"]),
            "valid_name": self._file_name(job["validation_file"]) if job["validation_file"] else None,
            "train_path": str(self.storage.blob_path(job["training_file"])),
            "valid_path": str(self.storage.blob_path(job["validation_file"])) if job["validation_file"] else None,
            "output_dir": str(output_dir),
            "n_epochs": resolved["n_epochs"],
            "batch_size": resolved["batch_size"],
            "learning_rate_multiplier": resolved["learning_rate_multiplier"],
            "seed": job["seed"],
            "cache_dir": str(self.storage.models_dir),
            "method": method,
            "beta": resolved.get("beta"),
            "base_weights": self.base_weights,
        }
        for attempt in range(WORKER_RETRIES + 1):
            exitcode = self._train_once(job, {**spec, "resume": resume})
            if exitcode is None:  # the job is over, paused, or waits for the next server start
                return
            job_now = self.storage.get_job(job_id)
            step = int(job_now["step"]) if job_now else 0
            if attempt < WORKER_RETRIES:
                self.storage.add_event(job_id, f"The training process ended unexpectedly ({exit_reason(exitcode)}) "
                                       f"at step {step}; retrying from the last saved state.", level="warn")
                resume = self._can_resume(job_now, output_dir / trainer.STATE_FILE)
                if resume is None:
                    return
                continue
            self._fail(job_id, "training_crashed", f"The training process ended unexpectedly "
                       f"({exit_reason(exitcode)}) again after a retry, at step {step}. It may have run out of "
                       "memory; see server.log in the server's work folder.")

    def _can_resume(self, job: dict, state: Path) -> bool | None:
        """Whether the job continues from a saved state (True) or starts over (False); None when it failed."""
        if not job["resume_pending"]:
            return False
        if state.exists():
            return True
        if not job["step"]:  # interrupted before its first state was saved: nothing trained yet
            return False
        self._fail(job["id"], "resume_state_unusable", f"The job was interrupted at step {job['step']}, and the saved "
                   "training state it would continue from is missing, so it cannot resume. Create a new job to "
                   "train again.")
        return None

    def _train_once(self, job: dict, spec: dict) -> int | None:
        """Run one worker process for the job; None when the job needs no retry, else the worker's exit code."""
        job_id = job["id"]
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        self._stop_event = ctx.Event()
        self._current = job_id
        self.storage.update_job(job_id, resume_pending=1)  # from now on, an interruption resumes
        if self.before_training is not None and (released := self.before_training()):
            log.info("unloaded %s generation model(s) before training job %s", released, job_id)
        proc = ctx.Process(target=worker_main, args=(spec, events, self._stop_event, os.getpid()),
                           name=f"train-{job_id}", daemon=True)
        self._process = proc
        proc.start()
        run = _Run(job_id=job_id, started=time.time())
        try:
            while True:
                try:
                    msg = events.get(timeout=0.5)
                except queue_mod.Empty:
                    if self._closing or self._stopping(job_id):
                        self._stop_event.set()
                    if not proc.is_alive():
                        msg = self._drain(events)
                        if msg is None:
                            break
                    else:
                        continue
                if self._handle(job, run, msg):
                    break
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if run.done:
                return None
            return self._after_exit(job_id, proc.exitcode)
        finally:
            self._process = None
            self._stop_event = None
            self._current = None
            events.close()

    def _file_name(self, file_id: str) -> str:
        """How training errors name an uploaded file: its id and filename (never its path on the server)."""
        row = self.storage.get_file(file_id)
        return f"{file_id} ({row['filename']})" if row else file_id

    @staticmethod
    def _drain(events: Any) -> WorkerRecord | None:
        try:
            return events.get(timeout=0.5)
        except queue_mod.Empty:
            return None

    def _cancelled(self, job_id: str) -> bool:
        job = self.storage.get_job(job_id)
        return job is None or bool(job["cancel_requested"]) or job["status"] == "cancelled"

    def _stopping(self, job_id: str) -> bool:
        """The running job was cancelled or paused: its worker should stop."""
        job = self.storage.get_job(job_id)
        return self._cancelled(job_id) or job is None or job["status"] != "running"

    def _after_exit(self, job_id: str, exitcode: int | None) -> int | None:
        """The worker ended without a result or was stopped; its exit code when it died and may be retried."""
        job = self.storage.get_job(job_id)
        if self._cancelled(job_id) or job is None or job["status"] != "running":
            return None  # cancelled, or paused (and perhaps resumed again): its state is saved
        if self._closing:
            return None  # stays `running`: the next server start queues it to resume
        return exitcode if exitcode is not None else -1

    def _handle(self, job: dict, run: "_Run", msg: WorkerRecord) -> bool:
        """Apply one record from the worker; True when the job is over."""
        job_id = job["id"]
        cancelled = self._cancelled(job_id)
        if isinstance(msg, Metrics):
            if not cancelled:
                self._record_metrics(job_id, run, msg)
        elif isinstance(msg, Checkpoint):
            if not cancelled:
                self._record_checkpoint(job, msg)
        elif isinstance(msg, Message):
            if not cancelled:
                self.storage.add_event(job_id, msg.message, level=msg.level, data=msg.data)
        elif isinstance(msg, Resumed):
            if not cancelled:
                self._record_resume(job, run, msg)
        elif isinstance(msg, Error):
            run.done = True
            log.error("job %s failed in training:\n%s", job_id, msg.traceback)
            if not cancelled:
                prefix = "Training could not resume: " if msg.code == "resume_state_unusable" else "Training failed: "
                self._fail(job_id, msg.code, prefix + msg.message)
            return True
        elif isinstance(msg, Result):
            run.done = True
            if not cancelled and not msg.stopped and not msg.result.get("cancelled"):
                self._succeed(job, run, msg.result)
            return True  # stopped: cancelled, paused, or the server is closing (its state is saved)
        return False

    def _record_metrics(self, job_id: str, run: "_Run", msg: Metrics) -> None:
        """A step's metrics: the job's progress, a `metrics` event, a row of the result CSV."""
        data = msg.data()
        run.metrics.append(data)
        step, total = msg.step, msg.total_steps
        elapsed = time.time() - run.started
        eta = int(time.time() + elapsed / max(step - run.first_step, 1) * (total - step))
        self.storage.update_job(job_id, step=step, total_steps=total, estimated_finish=eta)
        self.storage.add_event(job_id, metrics_text(data), type_="metrics", data=data)

    def _record_resume(self, job: dict, run: "_Run", msg: Resumed) -> None:
        """The worker continues from step N: the result rows so far, and nothing recorded of later steps."""
        job_id = job["id"]
        run.metrics, run.first_step = [dict(m) for m in msg.metrics], msg.step
        self.storage.delete_metrics_events_after(job_id, msg.step)
        self.storage.delete_checkpoints_after(job_id, msg.step)
        reported = {int(e["data"]["step"]) for e in self.storage.all_events(job_id, "metrics") if e["data"]}
        for data in run.metrics:  # steps the saved state has but whose event was lost when the run stopped
            if int(data["step"]) not in reported:
                self.storage.add_event(job_id, metrics_text(data), type_="metrics", data=data)
        for checkpoint in msg.checkpoints:  # one whose event was lost when the run stopped
            self._record_checkpoint(job, checkpoint)
        self.storage.update_job(job_id, step=msg.step)
        self.storage.add_event(job_id, f"Fine-tuning job resumed from step {msg.step}", data={"step": msg.step})

    def _record_checkpoint(self, job: dict, msg: Checkpoint) -> None:
        """A checkpoint: its row, its model id, its event (once per step, also when a resumed run repeats it)."""
        job_id, step = job["id"], msg.step
        if any(c["step_number"] == step for c in self.storage.job_checkpoints(job_id)):
            return
        base = base_and_adapter(self.storage, job["model"])[0]
        model_id = fine_tuned_model_id(base, job["suffix"], job_id) + f":ckpt-step-{step}"
        metrics = {"step": float(step), **{k: v for k, v in msg.metrics.items() if v is not None}}
        self.storage.add_checkpoint({"id": new_id("ftckpt_"), "job_id": job_id, "created_at": now(),
                                     "step_number": step, "model_id": model_id, "metrics": metrics, "path": msg.path})
        self.storage.add_model({"id": model_id, "created": now(), "kind": "checkpoint", "base_model": base,
                                "adapter_dir": msg.path, "job_id": job_id})
        epoch = f" (end of epoch {msg.epoch})" if msg.epoch is not None else ""
        self.storage.add_event(job_id, f"Checkpoint created at step {step}{epoch} with Snapshot ID: {model_id}",
                               data={"step": step, "checkpoint": model_id})

    def _succeed(self, job: dict, run: "_Run", result: dict) -> None:
        job_id = job["id"]
        content = base64.b64encode(result_csv(run.metrics, job["method"]))  # as OpenAI serves it
        file_id = new_id("file-", 22)
        write_bytes_atomic(self.storage.blob_path(file_id), content)
        self.storage.add_file({"id": file_id, "created_at": now(), "bytes": len(content), "filename": "step_metrics.csv",
                               "purpose": "fine-tune-results", "status": "processed", "status_details": None,
                               "sha256": hashlib.sha256(content).hexdigest()})
        base = base_and_adapter(self.storage, job["model"])[0]
        model_id = fine_tuned_model_id(base, job["suffix"], job_id)
        self.storage.add_model({"id": model_id, "created": now(), "kind": "fine-tune", "base_model": base,
                                "adapter_dir": str(result["adapter_dir"]), "job_id": job_id})
        self.storage.add_event(job_id, f"New fine-tuned model created: {model_id}", data={"model": model_id})
        self.storage.update_job(job_id, fine_tuned_model=model_id, trained_tokens=int(result["trained_tokens"]),
                                result_files=[file_id])
        self._finish(job_id, "succeeded")
        self.storage.add_event(job_id, "The job has successfully completed")

    def _fail(self, job_id: str, code: str, message: str) -> None:
        self.storage.add_event(job_id, message, level="error")
        self._finish(job_id, "failed", error={"code": code, "message": message, "param": None})

    def _finish(self, job_id: str, status: str, error: dict | None = None) -> None:
        self.storage.update_job(job_id, status=status, error=error, finished_at=now(), estimated_finish=None)
        if status == "cancelled":
            self.storage.add_event(job_id, "Fine-tuning job cancelled")


class _Run:
    """What the server keeps about the job it is training right now."""

    def __init__(self, job_id: str, started: float) -> None:
        self.job_id = job_id
        self.started = started
        self.first_step = 0  # the step this worker started from (N when resumed from step N)
        self.metrics: list[dict] = []
        self.done = False
