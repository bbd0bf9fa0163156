"""Fine-tuning jobs: validation, a FIFO queue with one job training at a time, and the training worker process.

Life of a job (the statuses of OpenAI's API):
    validating_files -> queued -> running -> succeeded | failed | cancelled
Validation runs in a thread of the server with the workbook's validator (helpers/validate.py, the same one
notebook 03 uses). Training runs in a separate process (multiprocessing "spawn") so the server keeps
answering; the worker sends the trainer's events over a queue and only the server writes the database.
If the server dies, the worker notices (its parent changes) and stops; on the next start a job left
`running` is marked `failed` with a message saying so, and queued jobs run as before.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import threading
import time
import traceback
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable

from helpers.localapi.storage import Storage, new_id, now
from helpers.files import write_bytes_atomic

log = logging.getLogger("helpers.localapi.jobs")

ACTIVE = ("validating_files", "queued", "running")
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


class ValidationFailed(Exception):
    """A training or validation file is not a usable chat fine-tuning file."""

    def __init__(self, code: str, message: str, param: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.problem = code, message, param, problem


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:local:<suffix>:<8 chars of the job id>` (the suffix may be empty, as on OpenAI)."""
    return f"ft:{base}:local:{suffix or ''}:{job_id[-8:]}"


def validate_file(path: Path, model: str, *, training: bool = True) -> tuple[int, list[str]]:
    """Check one uploaded JSONL with the workbook's validator: (examples, warnings), or raise ValidationFailed.

    The first problem names its line; the count of further problems follows. Fewer than 10 examples is a
    problem only for the training file (as on OpenAI).
    """
    from helpers import validate  # the same validator as notebook 03 and `python -m helpers.validate`

    report = validate.validate_file(path, model=model, min_examples=validate.MIN_EXAMPLES if training else 1)
    if report.problems:
        first = report.problems[0]
        where = f"line {first.line}: " if first.line else ""
        more = f" ({len(report.problems) - 1} more problem(s) in this file)" if len(report.problems) > 1 else ""
        raise ValidationFailed(first.code, f"{where}{first.message}{more}", "")
    warnings = [(f"line {w.line}: " if w.line else "") + w.message for w in report.warnings]
    return int(report.n_examples), warnings


def overlap_warnings(train: Path, valid: Path) -> list[str]:
    """Validation lines whose question is also in the training file (allowed, as on OpenAI, but worth a warning)."""
    from helpers import validate

    found = validate.check_overlap(train, valid)
    return [f"validation file line {p.line}: {p.message}" for p in found[:5]] + (
        [f"... and {len(found) - 5} more overlapping validation lines"] if len(found) > 5 else [])


def result_csv(metrics: list[dict]) -> bytes:
    """OpenAI's result file: one row per step, validation columns empty when there was no validation file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
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


def worker_main(spec: dict, events: Any, stop: Any, parent_pid: int) -> None:
    """Entry point of the training process: run the trainer, report its events and its result over `events`."""
    import signal

    from helpers.localapi import trainer
    from helpers.localapi.threads import limit_torch_threads

    limit_torch_threads()
    # Ctrl-C in the server's terminal reaches the whole process group: the server stops the job itself
    # (should_stop), so the worker must not die half-way with a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent_pid

    try:
        result = trainer.train(trainer.TrainSpec(**spec), on_event=events.put, should_stop=should_stop)
        payload = asdict(result) if is_dataclass(result) else dict(vars(result))
        events.put({"type": "result", "result": _plain(payload), "stopped": should_stop()})
    except BaseException as exc:  # report everything, including KeyboardInterrupt, then exit non-zero
        events.put({"type": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        _flush(events, parent_pid)
        raise SystemExit(1) from None
    _flush(events, parent_pid)


def _flush(events: Any, parent_pid: int) -> None:
    """Deliver what is queued before exiting, unless the server is gone (then nobody reads: do not hang)."""
    if os.getppid() == parent_pid:
        events.close()
        events.join_thread()
    else:
        events.cancel_join_thread()


def _plain(value: Any) -> Any:
    """Paths and dataclasses as JSON-friendly values."""
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class JobManager:
    """Owns the job queue: validation threads, one scheduler thread, one training process at a time."""

    def __init__(self, storage: Storage, *, validate: Callable[..., tuple[int, list[str]]] = validate_file) -> None:
        self.storage = storage
        self.validate = validate
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stop_event: Any = None
        self._process: mp.process.BaseProcess | None = None
        self._current: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Recover state left by a previous server, then start the scheduler."""
        for job in self.storage.jobs_with_status("running"):
            step = f" at step {job['step']} of {job['total_steps']}" if job["total_steps"] else ""
            message = (f"The local server stopped while this job was running{step}; "
                       "the partial training was discarded. Create a new job to train again.")
            self._finish(job["id"], "failed", error={"code": "server_restarted", "message": message, "param": None})
        for job in self.storage.jobs_with_status("validating_files"):
            self._spawn_validation(job["id"])
        self._thread = threading.Thread(target=self._schedule, name="ftjob-scheduler", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the scheduler; a running job is stopped and marked failed (the server is going away)."""
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
                                                         training=param == "training_file")
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
        self.storage.add_event(job_id, f"Files validated ({counts['training_file']} training examples"
                               + (f", {counts['validation_file']} validation examples" if "validation_file" in counts else "")
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
        from helpers.localapi import trainer

        job_id = job["id"]
        fresh = self.storage.get_job(job_id)
        if fresh is None or fresh["status"] != "queued":  # cancelled since it was picked
            return
        hp = dict(job["hyperparameters"])
        n_examples = int(job["n_examples"] or 0)
        resolved = trainer.resolve_hyperparameters(job["model"], n_examples, hp.get("n_epochs", "auto"),
                                                   hp.get("batch_size", "auto"), hp.get("learning_rate_multiplier", "auto"))
        details = dict(resolved)
        resolved = {k: resolved[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        output_dir = self.storage.jobs_dir / job_id
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True)
        started = now()
        self.storage.update_job(job_id, status="running", hyperparameters=resolved, started_at=started)
        self.storage.add_event(job_id, "Fine-tuning job started", data={"hyperparameters": details, "n_examples": n_examples})
        spec = {
            "base_model": job["model"],
            "train_path": str(self.storage.blob_path(job["training_file"])),
            "valid_path": str(self.storage.blob_path(job["validation_file"])) if job["validation_file"] else None,
            "output_dir": str(output_dir),
            "n_epochs": resolved["n_epochs"],
            "batch_size": resolved["batch_size"],
            "learning_rate_multiplier": resolved["learning_rate_multiplier"],
            "seed": job["seed"],
            "cache_dir": str(self.storage.models_dir),
        }
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        self._stop_event = ctx.Event()
        self._current = job_id
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
                    if self._closing or self._cancelled(job_id):
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
            if not run.done:
                self._after_exit(job_id, proc.exitcode)
        finally:
            self._process = None
            self._stop_event = None
            self._current = None
            events.close()

    @staticmethod
    def _drain(events: Any) -> dict | None:
        try:
            return events.get(timeout=0.5)
        except queue_mod.Empty:
            return None

    def _cancelled(self, job_id: str) -> bool:
        job = self.storage.get_job(job_id)
        return job is None or bool(job["cancel_requested"]) or job["status"] == "cancelled"

    def _after_exit(self, job_id: str, exitcode: int | None) -> None:
        """The worker ended without a result: cancelled, server closing, or a crash."""
        if self._cancelled(job_id):
            return
        if self._closing:
            self._fail(job_id, "server_restarted", "The local server was stopped while this job was running; "
                       "the partial training was discarded. Create a new job to train again.")
        else:
            self._fail(job_id, "training_crashed", f"The training process exited unexpectedly (exit code {exitcode}); "
                       "see server.log in the server's work folder.")

    def _handle(self, job: dict, run: "_Run", msg: dict) -> bool:
        """Apply one message from the worker; True when the job is over."""
        job_id = job["id"]
        kind = msg.get("type")
        cancelled = self._cancelled(job_id)
        if kind == "metrics":
            if cancelled:
                return False
            data = {k: msg[k] for k in ("step", "total_steps", "train_loss", "train_mean_token_accuracy",
                                         "valid_loss", "valid_mean_token_accuracy") if msg.get(k) is not None}
            for k in ("full_valid_loss", "full_valid_mean_token_accuracy", "epoch"):
                if msg.get(k) is not None:
                    data[k] = msg[k]
            run.metrics.append(data)
            step, total = int(msg["step"]), int(msg["total_steps"])
            elapsed = time.time() - run.started
            eta = int(time.time() + elapsed / max(step, 1) * (total - step))
            self.storage.update_job(job_id, step=step, total_steps=total, estimated_finish=eta)
            text = f"Step {step}/{total}: training loss={msg['train_loss']:.4f}"
            if msg.get("valid_loss") is not None:
                text += f", validation loss={msg['valid_loss']:.4f}"
            self.storage.add_event(job_id, text, type_="metrics", data=data)
        elif kind == "checkpoint":
            if cancelled:
                return False
            step = int(msg["step"])
            model_id = fine_tuned_model_id(job["model"], job["suffix"], job_id) + f":ckpt-step-{step}"
            metrics = {"step": float(step), **{k: v for k, v in (msg.get("metrics") or {}).items() if v is not None}}
            self.storage.add_checkpoint({"id": new_id("ftckpt_"), "job_id": job_id, "created_at": now(),
                                         "step_number": step, "model_id": model_id, "metrics": metrics,
                                         "path": str(msg["path"])})
            self.storage.add_model({"id": model_id, "created": now(), "kind": "checkpoint", "base_model": job["model"],
                                    "adapter_dir": str(msg["path"]), "job_id": job_id})
            epoch = f" (end of epoch {msg['epoch']})" if msg.get("epoch") is not None else ""
            self.storage.add_event(job_id, f"Checkpoint created at step {step}{epoch} with Snapshot ID: {model_id}",
                                   data={"step": step, "checkpoint": model_id})
        elif kind == "message":
            if not cancelled:
                self.storage.add_event(job_id, str(msg.get("message", "")), level=str(msg.get("level", "info")))
        elif kind == "error":
            run.done = True
            log.error("job %s failed in training:\n%s", job_id, msg.get("traceback", ""))
            if not cancelled:
                self._fail(job_id, "training_failed", f"Training failed: {msg.get('message')}")
            return True
        elif kind == "result":
            run.done = True
            if cancelled:
                return True
            if msg.get("stopped") or msg["result"].get("cancelled"):
                self._after_exit(job_id, 0)
                return True
            self._succeed(job, run, msg["result"])
            return True
        return False

    def _succeed(self, job: dict, run: "_Run", result: dict) -> None:
        job_id = job["id"]
        content = result_csv(run.metrics)
        file_id = new_id("file-", 22)
        write_bytes_atomic(self.storage.blob_path(file_id), content)
        self.storage.add_file({"id": file_id, "created_at": now(), "bytes": len(content), "filename": "step_metrics.csv",
                               "purpose": "fine-tune-results", "status": "processed", "status_details": None,
                               "sha256": hashlib.sha256(content).hexdigest()})
        model_id = fine_tuned_model_id(job["model"], job["suffix"], job_id)
        self.storage.add_model({"id": model_id, "created": now(), "kind": "fine-tune", "base_model": job["model"],
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
        self.metrics: list[dict] = []
        self.done = False
