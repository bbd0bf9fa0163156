"""The training worker process and the typed records it sends the server over a queue.

`worker_main` runs in a process of its own (multiprocessing "spawn"): it calls `trainer.train` and turns each
of the trainer's events into one record below (`from_event`), then ends with a `Result` or an `Error`.
Only the server (jobs.JobManager) writes the database.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Union


@dataclass
class Metrics:
    """One optimiser step's numbers (`valid_*` on evaluation steps, `full_valid_*` at epoch ends).

    Supervised jobs report `*_mean_token_accuracy`; DPO jobs `*_accuracy` (pairs ranked right) and
    `*_reward_margin` (objectives.Dpo.metrics); `*_loss` is each method's loss.
    """

    step: int
    total_steps: int
    train_loss: float
    train_mean_token_accuracy: float | None = None
    epoch: int | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None
    train_accuracy: float | None = None
    train_reward_margin: float | None = None
    valid_accuracy: float | None = None
    valid_reward_margin: float | None = None
    full_valid_accuracy: float | None = None
    full_valid_reward_margin: float | None = None

    def data(self) -> dict:
        """The metrics as the event's `data` (the fields that are set)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Checkpoint:
    """An adapter saved at the end of an epoch."""

    step: int
    path: str
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class Message:
    """A line for the job's events."""

    message: str
    level: str = "info"
    data: dict | None = None  # the event's `data` (the base model's validation loss before the first step)


@dataclass
class Resumed:
    """The run continues from its saved state: the steps already done, their metrics, the checkpoints so far."""

    step: int
    metrics: list[dict] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


@dataclass
class Result:
    """The run ended: the trainer's result (a dict of `trainer.TrainResult`), and whether it was told to stop."""

    result: dict
    stopped: bool


@dataclass
class Error:
    """The run failed with an exception."""

    message: str
    traceback: str = ""
    code: str = "training_failed"  # "resume_state_unusable" when the saved state could not be used


WorkerRecord = Union[Metrics, Checkpoint, Message, Resumed, Result, Error]


def from_event(event: dict) -> WorkerRecord:
    """The record for one of the trainer's event dicts (`type` metrics, checkpoint or message)."""
    kind = event.get("type")
    body = {k: v for k, v in event.items() if k != "type"}
    if kind == "metrics":
        return Metrics(**{k: body[k] for k in Metrics.__dataclass_fields__ if k in body})
    if kind == "checkpoint":
        return _checkpoint(body)
    if kind == "resumed":
        return Resumed(int(body["step"]), [dict(m) for m in body.get("metrics") or []],
                       [_checkpoint(c) for c in body.get("checkpoints") or []])
    if kind == "message":
        return Message(str(body.get("message", "")), str(body.get("level", "info")), body.get("data"))
    raise ValueError(f"unknown trainer event type {kind!r}")


def _checkpoint(body: dict) -> Checkpoint:
    """A Checkpoint from the trainer's dict."""
    return Checkpoint(step=int(body["step"]), path=str(body["path"]), epoch=body.get("epoch"),
                      metrics=dict(body.get("metrics") or {}))


def worker_main(spec: dict, events: Any, stop: Any, parent_pid: int) -> None:
    """Entry point of the training process: run the trainer, report its events and its result over `events`."""
    import signal

    from helpers.localapi import heap, trainer
    from helpers.localapi.threads import limit_torch_threads

    limit_torch_threads()
    heap.cap_mmap_threshold()  # activations of ever-changing sizes would fragment the heap (heap.py)
    # Ctrl-C in the server's terminal reaches the whole process group: the server stops the job itself
    # (should_stop), so the worker must not die half-way with a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent_pid

    try:
        result = trainer.train(trainer.TrainSpec(**spec), on_event=lambda e: events.put(from_event(e)),
                               should_stop=should_stop)
        payload = asdict(result) if is_dataclass(result) else dict(vars(result))
        events.put(Result(_plain(payload), should_stop()))
    except BaseException as exc:  # report everything, including KeyboardInterrupt, then exit non-zero
        if isinstance(exc, trainer.ResumeStateError):
            events.put(Error(f"{exc}; the job cannot continue. Create a new job to train again.",
                             traceback.format_exc(), code="resume_state_unusable"))
        else:
            events.put(Error(f"{type(exc).__name__}: {exc}", traceback.format_exc()))
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
