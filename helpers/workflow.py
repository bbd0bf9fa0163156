"""Upload, launch, watch and clean up a fine-tuning job: the steps that cost money, made re-run safe.

Everything goes through the official `openai` SDK, so the same code drives OpenAI, a compatible
provider, or the offline server in `helpers/localapi/`. What was done is recorded in the work
folder (`run_state.json`, keyed by the API's base URL) and always checked against the API's own
lists before it is reused:

- uploads are identified by the SHA-256 of their bytes (also part of the uploaded file name, so a
  lost state file does not lead to a second upload);
- jobs are identified by `metadata.run_id`, a hash of the two uploads and the training parameters;
  a job with that identity is reused unless it failed or was cancelled, and a second one is only
  created when the reader sets `FINETUNE_NEW_JOB=1`;
- on a remote backend a new job needs the reader's confirmation of the estimated cost
  (`FINETUNE_CONFIRM=1` for headless runs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pandas as pd
from openai import OpenAI

from helpers import event_text
from helpers.config import Config
from helpers.files import write_json_atomic, write_text_atomic

STATE_FILE = "run_state.json"
RESULTS_CSV = "results.csv"
IN_PROGRESS = ("validating_files", "queued", "running")
STOPPED = ("failed", "cancelled")
RUN_TAG = "huatuo-workbook"
# Errors after which a create request may or may not have reached the server: look before retrying.
TRANSIENT_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)


class WorkflowError(RuntimeError):
    """A step of the fine-tuning workflow cannot go on; the message says what to do."""


class FileProcessingError(WorkflowError):
    """An uploaded file was rejected by the API (status `error`)."""


class CostNotConfirmed(WorkflowError):
    """A paid job was not launched because nobody confirmed the estimated cost."""


class JobFailed(WorkflowError):
    """The fine-tuning job ended with status `failed`."""


class JobCancelled(WorkflowError):
    """The fine-tuning job ended with status `cancelled`."""


class PollTimeout(WorkflowError):
    """The job was still in progress when the overall waiting time ran out."""


# ---------------------------------------------------------------- state in the work folder


def load_state(cfg: Config) -> dict[str, Any]:
    """This backend's part of `run_state.json` (empty dict when nothing was recorded yet)."""
    path = cfg.work_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); delete the file to start over") from None
    return data.get(cfg.base_url, {})


def update_state(cfg: Config, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into this backend's part of `run_state.json` and return it."""
    path = cfg.work_dir / STATE_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    section = data.setdefault(cfg.base_url, {})
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key].update(value)
        else:
            section[key] = value
    write_json_atomic(path, data)
    return section


# ---------------------------------------------------------------- uploads


@dataclass
class Upload:
    """One uploaded file and whether it was reused instead of uploaded again."""

    file_id: str
    filename: str
    sha256: str
    bytes: int
    status: str
    reused: bool


def upload_name(path: Path) -> str:
    """Notebook 04: the name a file is uploaded under, its stem plus the start of its content hash (train-1ea326543a23.jsonl)."""
    path = Path(path)
    return f"{path.stem}-{hashlib.sha256(_read_training_file(path)).hexdigest()[:12]}{path.suffix}"


def _read_training_file(path: Path) -> bytes:
    """The bytes of a file notebook 03 wrote, with advice when it is missing."""
    if not Path(path).is_file():
        raise WorkflowError(f"{Path(path).name} does not exist in the work folder: run notebook 03 first to write the fine-tuning files")
    return Path(path).read_bytes()


def _list_files(client: OpenAI, purpose: str) -> list[Any]:
    """All files of one purpose (the SDK follows the pages)."""
    return list(client.files.list(purpose=purpose))


def _find_upload(files: Iterable[Any], file_id: str | None, name: str, size: int) -> Any | None:
    """The listed file recorded under `file_id`, else one with our hashed name and size, skipping failed ones."""
    usable = [f for f in files if getattr(f, "status", "processed") != "error"]
    for f in usable:
        if file_id and f.id == file_id and f.bytes == size:
            return f
    matches = [f for f in usable if f.filename == name and f.bytes == size]
    return max(matches, key=lambda f: f.created_at) if matches else None


def find_upload(client: OpenAI, cfg: Config, path: Path, purpose: str = "fine-tune") -> Any | None:
    """Notebook 04: the API's file holding these bytes (the id recorded in run_state.json, else the hashed name), or None."""
    data = _read_training_file(path)
    digest = hashlib.sha256(data).hexdigest()
    recorded = load_state(cfg).get("uploads", {}).get(digest, {})
    return _find_upload(_list_files(client, purpose), recorded.get("file_id"), upload_name(path), len(data))


def create_once(client: OpenAI, create: Callable[[OpenAI], Any], find: Callable[[], Any | None], *, what: str,
                retries: int = 5) -> Any:
    """Notebooks 04 and 05: call `create(client)` with the SDK's own retries off; after a lost answer, `find()` before sending again.

    A create whose answer was lost (timeout, 429, 5xx) may still have reached the server; the SDK
    would simply send it again (a second upload, a second paid job). Here each retry first asks
    `find()` whether the object exists now, and returns it if so.
    """
    once = client.with_options(max_retries=0)
    for attempt in range(retries + 1):
        try:
            return create(once)
        except TRANSIENT_ERRORS as exc:
            if attempt == retries:
                raise WorkflowError(f"{what}失败了 {retries + 1} 次（最后一次：{exc}）；请重新运行这一格") from exc
            time.sleep(min(2**attempt, 10))
            found = find()
            if found is not None:
                return found
    raise AssertionError("unreachable")


def record_upload(cfg: Config, path: Path, file: Any, *, reused: bool) -> Upload:
    """Notebook 04: note the upload in run_state.json (content hash -> file id) and return it as an Upload."""
    data = _read_training_file(path)
    digest = hashlib.sha256(data).hexdigest()
    update_state(cfg, uploads={digest: {"file_id": file.id, "filename": file.filename, "path": Path(path).name, "bytes": len(data)}})
    return Upload(file.id, file.filename, digest, len(data), getattr(file, "status", "processed") or "processed", reused)


def upload_file(client: OpenAI, cfg: Config, path: Path, purpose: str = "fine-tune", retries: int = 5) -> Upload:
    """Notebooks 04 and 05 in one call: find_upload, else files.create through create_once, then record_upload."""
    path = Path(path)
    found = find_upload(client, cfg, path, purpose)
    reused = found is not None
    if found is None:
        name, data = upload_name(path), _read_training_file(path)
        found = create_once(client, lambda c: c.files.create(file=(name, data, "application/jsonl"), purpose=purpose),
                            lambda: find_upload(client, cfg, path, purpose), what=f"上传 {path.name}", retries=retries)
    return record_upload(cfg, path, found, reused=reused)


def files_table(client: OpenAI, purpose: str = "fine-tune") -> pd.DataFrame:
    """Notebook 04: the API's list of uploaded files of one purpose, newest first, as a table."""
    rows = [{"id": f.id, "filename": f.filename, "bytes": f.bytes, "status": f.status,
             "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.created_at))} for f in _list_files(client, purpose)]
    frame = pd.DataFrame(rows, columns=["id", "filename", "bytes", "status", "created"])
    return frame.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def wait_for_processing(client: OpenAI, file_id: str, timeout: float = 600.0, interval: float = 1.0) -> Any:
    """Notebook 04: wait until an uploaded file is `processed`; raise FileProcessingError on `error`, PollTimeout after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        f = client.files.retrieve(file_id)
        if f.status == "processed":
            return f
        if f.status == "error":
            raise FileProcessingError(f"file {file_id} ({f.filename}) was rejected: {f.status_details or 'no details given'}")
        if time.monotonic() > deadline:
            raise PollTimeout(f"file {file_id} still '{f.status}' after {timeout:.0f} s; re-run the cell to keep waiting")
        time.sleep(interval)


# ---------------------------------------------------------------- launching a job


@dataclass
class JobPlan:
    """What a fine-tuning job will be: everything that goes into `jobs.create` and its identity."""

    model: str
    training_file: str
    validation_file: str | None
    n_epochs: int | str
    batch_size: int | str
    learning_rate_multiplier: float | str
    seed: int
    suffix: str
    train_sha256: str
    valid_sha256: str | None
    method: str = "supervised"  # or "dpo" (notebook 09)
    beta: float | str | None = None  # DPO only
    metadata: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        params = {"model": self.model, "n_epochs": self.n_epochs, "batch_size": self.batch_size,
                  "lr_mult": self.learning_rate_multiplier, "seed": self.seed, "suffix": self.suffix}
        if self.method != "supervised":  # a supervised plan's identity stays what it always was
            params.update(method=self.method, beta=self.beta)
        identity = json.dumps({"train": self.train_sha256, "valid": self.valid_sha256, **params}, sort_keys=True)
        self.metadata = {
            "workbook": RUN_TAG,
            "run_id": hashlib.sha256(identity.encode()).hexdigest()[:16],
            "train_sha256": self.train_sha256[:16],
            "valid_sha256": (self.valid_sha256 or "")[:16],
            "params": json.dumps(params, sort_keys=True, separators=(",", ":")),
        }

    @property
    def run_id(self) -> str:
        """The identity of the run: same data and parameters, same id."""
        return self.metadata["run_id"]

    @property
    def state_key(self) -> str:
        """Where run_state.json keeps this plan's job: `job` (notebooks 05-07) or `dpo_job` (notebook 09)."""
        return "job" if self.method == "supervised" else f"{self.method}_job"

    def hyperparameters(self) -> dict[str, Any]:
        """The `method.<type>.hyperparameters` of `jobs.create`."""
        hyper = {"n_epochs": self.n_epochs, "batch_size": self.batch_size, "learning_rate_multiplier": self.learning_rate_multiplier}
        return {**({"beta": self.beta} if self.method == "dpo" else {}), **hyper}

    def create_kwargs(self) -> dict[str, Any]:
        """Notebooks 05 and 09: the keyword arguments for `client.fine_tuning.jobs.create`."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "training_file": self.training_file,
            "method": {"type": self.method, self.method: {"hyperparameters": self.hyperparameters()}},
            "suffix": self.suffix,
            "seed": self.seed,
            "metadata": self.metadata,
        }
        if self.validation_file:
            kwargs["validation_file"] = self.validation_file
        return kwargs


def plan_job(cfg: Config, train: Upload, valid: Upload | None, *, suffix: str = "huatuo", batch_size: int | str = "auto",
             learning_rate_multiplier: float | str = "auto", n_epochs: int | None = None) -> JobPlan:
    """Notebook 05: the job for these uploads and the configured base model, epochs and seed."""
    return JobPlan(model=cfg.base_model, training_file=train.file_id, validation_file=valid.file_id if valid else None,
                   n_epochs=n_epochs or cfg.n_epochs, batch_size=batch_size, learning_rate_multiplier=learning_rate_multiplier,
                   seed=cfg.seed, suffix=suffix, train_sha256=train.sha256, valid_sha256=valid.sha256 if valid else None)


PLAN_LABELS = {
    "model": "基础模型", "training_file": "训练文件（第 04 节上传）", "validation_file": "验证文件（第 04 节上传）",
    "method.type": "方法：supervised 是监督微调", "beta": "beta：离参考模型多远（auto：服务器选 0.1）",
    "n_epochs": "轮数", "batch_size": "批次大小（auto：服务器按数据量选）",
    "learning_rate_multiplier": "学习率倍数（auto：服务器按模型选）", "suffix": "微调后模型名字里的后缀",
    "seed": "随机种子", "metadata.run_id": "作业的身份：数据哈希 + 参数", "metadata.train_sha256": "训练文件的内容哈希（前 16 位）",
    "metadata.valid_sha256": "验证文件的内容哈希（前 16 位）",
}


def plan_table(plan: JobPlan, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Notebooks 05 and 09: what `jobs.create` will get, one argument a row, with what it means in Chinese (`labels`
    overrides PLAN_LABELS' wording)."""
    values = {"model": plan.model, "training_file": plan.training_file, "validation_file": plan.validation_file or "-",
              "method.type": plan.method, **({"beta": plan.beta} if plan.method == "dpo" else {}),
              "n_epochs": plan.n_epochs, "batch_size": plan.batch_size,
              "learning_rate_multiplier": plan.learning_rate_multiplier, "suffix": plan.suffix, "seed": plan.seed,
              "metadata.run_id": plan.run_id, "metadata.train_sha256": plan.metadata["train_sha256"],
              "metadata.valid_sha256": plan.metadata["valid_sha256"] or "-"}
    wording = {**PLAN_LABELS, **(labels or {})}
    return pd.DataFrame([{"参数": name, "值": str(value), "含义": wording[name]} for name, value in values.items()])


def list_jobs(client: OpenAI, max_jobs: int = 1000, metadata: dict[str, str] | None = None) -> list[Any]:
    """Up to `max_jobs` fine-tuning jobs (only those with the given metadata, if any), newest first."""
    jobs = []
    for job in client.fine_tuning.jobs.list(limit=100, **({"metadata": metadata} if metadata else {})):
        jobs.append(job)
        if len(jobs) >= max_jobs:
            break
    return sorted(jobs, key=lambda j: j.created_at, reverse=True)


def find_jobs(client: OpenAI, run_id: str) -> list[Any]:
    """Notebook 05: the jobs launched for this run identity, newest first."""
    listed = list_jobs(client, metadata={"run_id": run_id})
    return [j for j in listed if (j.metadata or {}).get("run_id") == run_id]  # also where the filter is ignored


def confirm_cost(cfg: Config, estimate_usd: float | None, ask: Callable[[str], str] | None = None) -> None:
    """Notebook 05: on a remote backend, require FINETUNE_CONFIRM=1 or an interactive 'yes'; raise CostNotConfirmed otherwise."""
    if cfg.is_local or cfg.confirm_cost:
        return
    cost = "多少未知（运行第 03 节可以得到估计）" if estimate_usd is None else f"约 ${estimate_usd:.2f}"
    question = f"在 {cfg.base_url} 上为 {cfg.base_model} 启动一个微调作业，花费{cost}。输入 yes 启动："
    cannot_ask = f"没有启动：会花费{cost}，而这次运行无法询问你。要接受这笔花费，请设置 FINETUNE_CONFIRM=1。"
    ask = ask or input
    if ask is input and not _stdin_available():
        raise CostNotConfirmed(cannot_ask)
    try:
        answer = ask(question)
    except (EOFError, NotImplementedError, OSError):  # headless kernels raise StdinNotImplementedError
        raise CostNotConfirmed(cannot_ask) from None
    if answer.strip().lower() not in {"y", "yes", "是"}:
        raise CostNotConfirmed(f"没有启动：你输入的是 {answer.strip()!r}。重新运行这一格并输入 yes，或设置 FINETUNE_CONFIRM=1。")


def _stdin_available() -> bool:
    """True in an IPython kernel (which may forward input()) or on a terminal."""
    return "ipykernel" in sys.modules or sys.stdin is not None and sys.stdin.isatty()


@dataclass
class JobLookup:
    """Notebook 05: what the API lists for a plan's identity, and the job to reuse (None: create one)."""

    run_id: str
    job: Any | None
    existing: list[Any]  # every job with this identity, newest first


def find_job(client: OpenAI, cfg: Config, plan: JobPlan) -> JobLookup:
    """Notebook 05: the newest job with the plan's run_id unless it failed/was cancelled or FINETUNE_NEW_JOB=1."""
    existing = find_jobs(client, plan.run_id)
    usable = [j for j in existing if j.status not in STOPPED]
    return JobLookup(plan.run_id, usable[0] if usable and not cfg.allow_new_job else None, existing)


def find_new_job(client: OpenAI, lookup: JobLookup) -> Any | None:
    """Notebook 05: a job with the lookup's identity that was not there at lookup time (a create whose answer was lost)."""
    known = {j.id for j in lookup.existing}
    fresh = [j for j in find_jobs(client, lookup.run_id) if j.id not in known]
    return fresh[0] if fresh else None


def record_job(cfg: Config, job: Any, run_id: str, key: str = "job") -> None:
    """Notebook 05: note the job id in run_state.json for notebook 06 (notebook 09 keeps its DPO job under `dpo_job`)."""
    update_state(cfg, **{key: {"id": job.id, "run_id": run_id}})


@dataclass
class LaunchResult:
    """The job to follow and how it was chosen."""

    job: Any
    reused: bool
    previous: list[Any]  # other jobs with the same identity, newest first


def find_or_create_job(client: OpenAI, cfg: Config, plan: JobPlan, *, estimate_usd: float | None = None,
                       ask: Callable[[str], str] | None = None, retries: int = 5) -> LaunchResult:
    """Notebook 05 in one call: find_job, else confirm_cost and jobs.create through create_once, then record_job."""
    lookup = find_job(client, cfg, plan)
    if lookup.job is not None:
        record_job(cfg, lookup.job, plan.run_id, plan.state_key)
        return LaunchResult(lookup.job, True, [j for j in lookup.existing if j.id != lookup.job.id])
    confirm_cost(cfg, estimate_usd, ask)
    kwargs = plan.create_kwargs()
    job = create_once(client, lambda c: c.fine_tuning.jobs.create(**kwargs), lambda: find_new_job(client, lookup),
                      what="创建微调作业", retries=retries)
    record_job(cfg, job, plan.run_id, plan.state_key)
    return LaunchResult(job, False, lookup.existing)


WHERE_LAUNCHED = {"job": "notebook 05", "dpo_job": "notebook 09's launch cell"}


def recorded_job_id(cfg: Config, key: str = "job") -> str:
    """Notebook 06: the id of the job notebook 05 launched or reused on this backend (from run_state.json)."""
    job_id = load_state(cfg).get(key, {}).get("id")
    if not job_id:
        raise WorkflowError(f"no job recorded in the work folder's {STATE_FILE} for {cfg.base_url}: "
                            f"run {WHERE_LAUNCHED.get(key, 'the launching notebook')} first")
    return job_id


def current_job(client: OpenAI, cfg: Config) -> Any:
    """The job recorded by notebook 05 for this backend, fetched fresh from the API."""
    return client.fine_tuning.jobs.retrieve(recorded_job_id(cfg))


# ---------------------------------------------------------------- polling


class PlainProgress:
    """Notebook 06 (headless): progress as plain text lines, one per status change and per 10% of the steps."""

    def __init__(self, print_fn: Callable[[str], None] = print) -> None:
        self._print = print_fn
        self._status = ""
        self._bucket = -1

    def update(self, status: str, step: int | None, total: int | None) -> None:
        """Print a line when the status changed or the step count crossed another tenth of the total."""
        bucket = int(10 * step / total) if step is not None and total else -1
        if status != self._status or bucket > self._bucket:
            where = f"第 {step}/{total} 步（{100 * step / total:.0f}%）" if bucket >= 0 else "还没有训练步"
            self._print(f"进度：{status}，{where}")
        self._status, self._bucket = status, max(bucket, self._bucket)

    def close(self, status: str) -> None:
        """Nothing to tidy up for plain lines."""


class EventLog:
    """Fetches a job's events page by page and yields each event once, oldest first."""

    def __init__(self, client: OpenAI, job_id: str, page_size: int = 100) -> None:
        self.client, self.job_id, self.page_size = client, job_id, page_size
        self.seen: set[str] = set()
        self.step: int | None = None
        self.total_steps: int | None = None

    def new_events(self) -> list[Any]:
        """Events not returned before, oldest first; the API lists newest first, so stop at the first known one."""
        fresh = []
        for event in self.client.fine_tuning.jobs.list_events(self.job_id, limit=self.page_size):
            if event.id in self.seen:
                break
            self.seen.add(event.id)
            fresh.append(event)
        fresh.reverse()  # newest first -> oldest first
        fresh.sort(key=lambda e: e.created_at)  # stable: events within one second keep their order
        for event in fresh:
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "metrics" and "step" in data:
                self.step = int(data["step"])
                self.total_steps = int(data.get("total_steps") or self.total_steps or 0) or None
        return fresh


def format_event(event: Any) -> str:
    """Notebook 06: one line for an event: time, level, message (in Chinese where event_text knows it)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.created_at))
    return f"{stamp} [{event.level}] {event_text.zh(event.message)}"


def event_worth_printing(event: Any, every: int) -> bool:
    """Notebook 06's log: every message, warning and validation, the first and last step, and every `every`-th step."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type != "metrics" or event.level != "info" or "step" not in data:
        return True
    step, total = int(data["step"]), data.get("total_steps")
    return "valid_loss" in data or "full_valid_loss" in data or step == 1 or step % max(every, 1) == 0 or step == total


def poll_job(client: OpenAI, job_id: str, *, timeout: float = 3600.0, interval: float = 2.0, progress: Any = None,
             print_fn: Callable[[str], None] = print, page_size: int = 100, log_every: int = 1) -> Any:
    """Notebook 06: follow a job until it ends, printing each new event once (steps: every `log_every`-th, see
    event_worth_printing); return it on success, raise JobFailed/JobCancelled/PollTimeout."""
    progress = progress or PlainProgress(print_fn)
    log = EventLog(client, job_id, page_size)
    deadline = time.monotonic() + timeout
    status = "unknown"
    try:
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            status = job.status
            for event in log.new_events():
                if event_worth_printing(event, log_every):
                    print_fn(format_event(event))
            progress.update(job.status, log.step, log.total_steps)
            if job.status not in IN_PROGRESS:
                break
            if time.monotonic() > deadline:
                raise PollTimeout(f"job {job_id} is still '{job.status}' after {timeout:.0f} s; it keeps running on the server — "
                                  "re-run this cell to keep watching the same job")
            time.sleep(interval)
    except KeyboardInterrupt:
        print_fn(f"Stopped watching. Job {job_id} keeps running on the server; re-run this cell to pick it up again.")
        raise
    finally:
        progress.close(status)
    if job.status == "failed":
        err = job.error
        detail = f"{err.code}: {err.message}" if err is not None else "no error details given"
        raise JobFailed(f"job {job_id} failed — {detail}. Fix the cause, then launch again in notebook 05 (a failed job is not reused).")
    if job.status == "cancelled":
        raise JobCancelled(f"job {job_id} was cancelled. Launch it again in notebook 05 (a cancelled job is not reused).")
    return job


# ---------------------------------------------------------------- results


def decode_result_bytes(raw: bytes) -> str:
    """The CSV text of a result file, which OpenAI serves base64-encoded and other servers as plain text."""
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    if text.lstrip().lower().startswith("step"):
        return text
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True).decode("utf-8-sig")
    except (binascii.Error, UnicodeDecodeError):
        raise WorkflowError("the result file is neither CSV nor base64-encoded CSV (it does not start with a 'step' column)") from None
    if not decoded.lstrip().lower().startswith("step"):
        raise WorkflowError("the result file decodes from base64 but is not the expected CSV (no 'step' column)")
    return decoded


def read_results(cfg: Config, raw: bytes, name: str = RESULTS_CSV) -> pd.DataFrame:
    """Notebook 06: the bytes of a job's result file (from client.files.content) as a DataFrame, also saved as `name`
    (results.csv; notebook 09's DPO job: dpo_results.csv)."""
    text = decode_result_bytes(raw)
    frame = pd.read_csv(io.StringIO(text))
    write_text_atomic(cfg.work_dir / name, text)
    return frame


def download_results(client: OpenAI, cfg: Config, job: Any) -> pd.DataFrame:
    """Notebook 06 in one call: client.files.content of the job's first result file, read by read_results."""
    if not job.result_files:
        raise WorkflowError(f"job {job.id} has no result file (status '{job.status}'); wait until it succeeded")
    return read_results(cfg, client.files.content(job.result_files[0]).content)


def checkpoints_table(checkpoints: Iterable[Any]) -> pd.DataFrame:
    """Notebook 06: checkpoints (from client.fine_tuning.jobs.checkpoints.list) as a table: step, model id, metrics; oldest first."""
    rows = []
    for ckpt in checkpoints:
        metrics = ckpt.metrics.model_dump(exclude_none=True) if ckpt.metrics is not None else {}
        rows.append({"step": ckpt.step_number, "model": ckpt.fine_tuned_model_checkpoint, **{k: v for k, v in metrics.items() if k != "step"}})
    return pd.DataFrame(rows).sort_values("step").reset_index(drop=True) if rows else pd.DataFrame(columns=["step", "model"])


def list_checkpoints(client: OpenAI, job_id: str) -> pd.DataFrame:
    """Notebook 06 in one call: client.fine_tuning.jobs.checkpoints.list, as checkpoints_table."""
    return checkpoints_table(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))


FULL_VALID_COLUMNS = ("full_valid_loss", "full_valid_mean_token_accuracy")


def best_checkpoint(checkpoints: pd.DataFrame) -> pd.Series | None:
    """Notebooks 06 and 07: the checkpoint with the lowest full validation loss (None when none reports one)."""
    if "full_valid_loss" not in checkpoints.columns or checkpoints["full_valid_loss"].dropna().empty:
        return None
    return checkpoints.loc[checkpoints["full_valid_loss"].idxmin()]


def best_checkpoint_model(checkpoints: pd.DataFrame) -> tuple[str | None, str]:
    """Notebook 07: the best checkpoint's model id when it is not the final one (None otherwise), and a sentence saying so."""
    best = best_checkpoint(checkpoints)
    if best is None:
        return None, "检查点没有报告完整验证损失：只评估最终模型"
    final_step = int(checkpoints["step"].max())
    loss = f"完整验证损失 {best['full_valid_loss']:.3f}"
    if int(best["step"]) == final_step:
        return None, f"最佳检查点就是最终模型（第 {final_step} 步，{loss}）：不需要另加一组"
    return str(best["model"]), f"最佳检查点是第 {int(best['step'])} 步（{loss}），不是最终模型（第 {final_step} 步）：另加一组"


def base_validation(events: Iterable[Any]) -> tuple[float, float | None] | None:
    """Notebook 06: (full validation loss, token accuracy or None) of the model before the first step, from the `data`
    of the job's event for step 0 (the local server sends one; OpenAI sends none)."""
    for event in events:
        data = getattr(event, "data", None)
        data = data if isinstance(data, dict) else {}
        if data.get("step") == 0 and data.get("full_valid_loss") is not None:
            return float(data["full_valid_loss"]), data.get("full_valid_mean_token_accuracy")
    return None


def with_full_validation(results: pd.DataFrame, checkpoints: pd.DataFrame,
                         before: tuple[float, float] | None = None) -> pd.DataFrame:
    """Notebook 06: the result rows with the checkpoints' full validation metrics merged in by step (OpenAI keeps them
    there), and, given the base model's (loss, accuracy) before training, a row for step 0."""
    merged = results.copy()
    for column in FULL_VALID_COLUMNS:
        if column not in checkpoints.columns:
            continue
        by_step = checkpoints.set_index(checkpoints["step"].astype(int))[column]
        from_checkpoints = merged["step"].astype(int).map(by_step)
        merged[column] = merged[column].fillna(from_checkpoints) if column in merged.columns else from_checkpoints
    if before is not None:
        start = pd.DataFrame([{"step": 0, "full_valid_loss": before[0], "full_valid_mean_token_accuracy": before[1]}])
        merged = pd.concat([start, merged], ignore_index=True)
    return merged


@dataclass
class TrainingSummary:
    """Notebook 06: the numbers its closing paragraph quotes, rounded as printed."""

    first_step: int
    last_step: int
    first_train_loss: float
    last_train_loss: float
    mean_train_loss_last5: float
    full_valid_loss: list[tuple[int, float]]  # (step, loss) at each epoch end

    def lines(self) -> list[str]:
        """The summary as printed, one fact per line."""
        out = [f"训练损失：第 {self.first_step} 步 {self.first_train_loss:.3f} → 第 {self.last_step} 步 {self.last_train_loss:.3f}"
               f"（最后 5 步平均 {self.mean_train_loss_last5:.3f}）"]
        if self.full_valid_loss:
            before = [f"训练前（第 0 步）{loss:.3f}" for step, loss in self.full_valid_loss if step == 0]
            epochs = [(step, loss) for step, loss in self.full_valid_loss if step > 0]
            per_epoch = [f"第 {i} 轮末（第 {step} 步）{loss:.3f}" for i, (step, loss) in enumerate(epochs, 1)]
            out.append(f"完整验证集损失：{'，'.join(before + per_epoch)}")
        else:
            out.append("完整验证集损失：结果里没有（没有验证文件，或服务器没有报告）")
        return out


def training_summary(results: pd.DataFrame, print_fn: Callable[[str], None] | None = print) -> TrainingSummary:
    """Notebook 06: train loss first to last step and full validation loss per epoch, printed with 3 decimals."""
    train = results[["step", "train_loss"]].dropna()
    if train.empty:
        raise WorkflowError("the result file has no train_loss rows: is the job finished?")
    full = results[["step", "full_valid_loss"]].dropna() if "full_valid_loss" in results.columns else results.iloc[0:0]
    summary = TrainingSummary(int(train["step"].iloc[0]), int(train["step"].iloc[-1]), round(float(train["train_loss"].iloc[0]), 3),
                              round(float(train["train_loss"].iloc[-1]), 3), round(float(train["train_loss"].tail(5).mean()), 3),
                              [(int(r.step), round(float(r.full_valid_loss), 3)) for r in full.itertuples()])
    if print_fn is not None:
        for line in summary.lines():
            print_fn(line)
    return summary


def store_fine_tuned_model(cfg: Config, job: Any, key: str = "job") -> str:
    """Notebook 06: record the fine-tuned model id (and the job's trained_tokens) for notebook 07 (09: key `dpo_job`)."""
    if not job.fine_tuned_model:
        raise WorkflowError(f"job {job.id} has no fine-tuned model yet (status '{job.status}')")
    update_state(cfg, **{key: {"id": job.id, "fine_tuned_model": job.fine_tuned_model, "trained_tokens": job.trained_tokens}})
    return job.fine_tuned_model


def load_fine_tuned_model(cfg: Config) -> str:
    """The fine-tuned model id stored by notebook 06."""
    model = load_state(cfg).get("job", {}).get("fine_tuned_model")
    if not model:
        raise WorkflowError(f"no fine-tuned model recorded in the work folder's {STATE_FILE} for {cfg.base_url}: run notebook 06 first")
    return model


# ---------------------------------------------------------------- the closing section


def load_train_stats(cfg: Config) -> dict[str, Any]:
    """Notebook 05: read notebook 03's `train_stats.json` (token counts and the cost estimate)."""
    path = cfg.work_dir / "train_stats.json"
    if not path.is_file():
        raise WorkflowError(f"{path} does not exist: run notebook 03 first")
    return json.loads(path.read_text(encoding="utf-8"))


def cost_summary(cfg: Config, job: Any) -> pd.DataFrame:
    """Estimated (notebook 03) against reported (`job.trained_tokens`) billed tokens."""
    stats = load_train_stats(cfg)
    estimated = stats.get("billed_tokens")
    reported = job.trained_tokens
    ratio = f"{reported / estimated:.2f}" if estimated and reported else "-"
    rows = [("预计计费词元数（第 03 节）", estimated), ("作业报告的 trained_tokens", reported),
            ("实际 / 预计", ratio), ("预计费用，美元（第 03 节）", stats.get("estimated_cost_usd")),
            ("估计用的编码", stats.get("encoding"))]
    return pd.DataFrame([{"项目": what, "值": "-" if value is None else str(value)} for what, value in rows]).set_index("项目")


def cleanup(client: OpenAI, cfg: Config, *, delete_files: bool = True, delete_model: bool = True) -> list[str]:
    """Delete the recorded uploads and fine-tuned model on the API; return what was deleted. Not undoable."""
    state = load_state(cfg)
    done = []
    if delete_model and state.get("job", {}).get("fine_tuned_model"):
        model = state["job"]["fine_tuned_model"]
        try:
            client.models.delete(model)
            done.append(f"model {model}")
        except openai.NotFoundError:
            done.append(f"model {model} (already gone)")
    if delete_files:
        for digest, record in state.get("uploads", {}).items():
            try:
                client.files.delete(record["file_id"])
                done.append(f"file {record['file_id']} ({record['filename']})")
            except openai.NotFoundError:
                done.append(f"file {record['file_id']} (already gone)")
    path = cfg.work_dir / STATE_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        section = data.setdefault(cfg.base_url, {})
        if delete_files:
            section["uploads"] = {}
        if delete_model:
            section.pop("job", None)
        write_json_atomic(path, data)
    return done
