"""Peak resident memory and time of the trainer's settings side by side, and of the course's processes.

    .venv/bin/python benchmarks/bench_memory.py train [--model qwen2.5-coder-0.5b-instruct] [--steps 4]
        [--variants before,fused-head,checkpointing,now] [--precision auto|fp32|bf16] [--isa avx2] [--rounds 1]
        [--env NAME=VALUE]
    .venv/bin/python benchmarks/bench_memory.py job [--variants before,now] [--epochs 3] [--isa avx2]
    .venv/bin/python benchmarks/bench_memory.py course [--only 06 07] [--interval 1] [--isa avx2] [--timeline F]

`train`: each variant trains the same optimiser steps of the course's job (the real data split as notebook 02
splits it, the trainer's epoch-1 batch order, seed 42: the batch holding the longest row first, then the first
`--steps - 1` other batches) in a process of its own, one variant after another (`--rounds 2`: A B A B, so that
a change of load hits every variant alike). Each process reports its peak resident memory while loading the
model and, separately, while training (Linux: /proc/self/clear_refs resets the peak between the two), the
wall time of every step, and every step's loss, so that variants whose arithmetic is the same can be checked
to give the same losses. Variants:
- `before`: the trainer as it was before issue 17: all labelled positions' logits at once, activations kept,
  micro-batches of up to 4,096 padded tokens;
- `fused-head`: the output layer and the loss a chunk of 256 positions at a time (trainer.head_loss);
- `checkpointing`: fused head, and each block's activations recomputed in the backward pass;
- `checkpointing-2048`, `now`: the same with micro-batches of 2,048 and 1,024 padded tokens (`now` is the trainer's
  default); `now-trim`: `now`, handing freed memory back to the system after every micro-batch (malloc_trim);
  `now` keeps the frozen base in bf16 (computed in float32 without native bf16, each layer widened as it runs);
  `fp32-base`: `now` on a base stored in float32 where training computes in float32 (LOCALAPI_TRAIN_BASE_WEIGHTS=fp32).
A variant named `now@TREE` is variant `now` run from the checkout at TREE (`git worktree add /tmp/old REV`): the
trainer of an older revision measured in the same run as today's.
`--isa avx2` runs the processes with ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2 and
ONEDNN_MAX_CPU_ISA=AVX2 and in float32 (what `precision="auto"` picks on a CPU without native bf16): this CPU's
cores then run the kernels a laptop CPU without AVX-512 runs. That is an emulation (clock, caches and memory
bandwidth stay this machine's): label its figures as such.

`job`: the course's whole training job (trainer.train: 100 rows, validation before training, every half epoch
and at epoch ends, checkpoints) once per variant, each in its own process: `before` (no checkpointing, micro-batches
of 4,096 padded tokens; the chunked output layer has no switch in train()) and `now` (the defaults); prints the
wall time, the process's peak resident memory and the full validation losses.

`course`: runs `python -m helpers.course run` (the `make course` command; `--only` passes through) and samples the
resident memory of every process it starts (the notebooks' kernels, the local server, the training worker) every
`--interval` seconds; prints the peak of each role and of their sum, with the wall time. The sum is
the figure the README's "peak memory" means. Pages shared between processes are counted in each; that
overstates the sum a little, so the peak of the summed proportional set sizes (shared pages divided among the
processes that map them) is printed beside it, with what each role held at the moment of the peak.

Every run prints the CPU model, whether it has native bf16 (AVX512-BF16 or AMX) and the precision path taken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine_data import make_split

from helpers.config import REPO_ROOT
from helpers.localapi import models as M

VARIANTS = {  # name: fused head, gradient checkpointing, tokens per micro-batch, malloc_trim after each micro-batch
    "before": dict(fused=False, checkpointing=False, max_tokens=4096, trim=False, base_weights="fp32"),  # the trainer before issue 17
    "fused-head": dict(fused=True, checkpointing=False, max_tokens=4096, trim=False, base_weights="fp32"),
    "checkpointing": dict(fused=True, checkpointing=True, max_tokens=4096, trim=False, base_weights="fp32"),
    "checkpointing-2048": dict(fused=True, checkpointing=True, max_tokens=2048, trim=False, base_weights="fp32"),
    "now": dict(fused=True, checkpointing=True, max_tokens=1024, trim=False),  # the trainer's defaults
    "now-trim": dict(fused=True, checkpointing=True, max_tokens=1024, trim=True),
    # `now` on a base stored in float32 where training computes in float32 (LOCALAPI_TRAIN_BASE_WEIGHTS=fp32); `now`
    # keeps it in bf16 and widens each layer as it runs (trainer.upcast_base_layers)
    "fp32-base": dict(fused=True, checkpointing=True, max_tokens=1024, trim=False, base_weights="fp32"),
}
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_line() -> str:
    """The CPU model, its core count and whether it has native bf16 / AMX / AVX-512 / AVX2."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"CPU: {model}, {os.cpu_count()} cores, flags {' '.join(has) or 'none of avx2/avx512'}; native bf16: "
            f"{'yes' if M.cpu_supports_bf16() else 'no'}; load average {os.getloadavg()[0]:.2f}")


def status_kb(field: str, pid: int | str = "self") -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    """A process's proportional set size in kB (each shared page divided among the processes mapping it), 0 when
    it is gone: summed over processes, it counts a page once, where VmRSS counts it in every process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset this process's peak resident memory (VmHWM) to its current value; False where Linux refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Hand memory that PyTorch has freed back to the operating system (glibc's `malloc_trim`; a no-op elsewhere).

    glibc keeps freed blocks of up to 32 MB in its heap for reuse, and after micro-batches of different sizes that
    heap holds gigabytes nobody uses; the `now-trim` variant measures what handing them back after every
    micro-batch saves.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return
    trim(0)


# ---- train: one variant in its own process ---------------------------------------------------------------

def child(args: argparse.Namespace) -> int:
    """Train `--steps` steps with one variant and print one JSON line: peaks, step times and losses."""
    import torch

    from helpers.localapi import trainer as T

    v = VARIANTS[args.variant]
    fused, checkpointing, max_tokens = v["fused"], v["checkpointing"], v["max_tokens"]
    precision = T.choose_precision(args.precision, M.default_device())
    widened = T.widens_base(precision, v.get("base_weights", "auto"))
    loaded = M.load_model(args.model, args.cache_dir, dtype="bfloat16" if widened else "float32")
    examples, _ = T.encode_file(Path(args.train), loaded.tokenizer, loaded.spec.max_seq_len, loaded.stop_ids)
    pad_id = loaded.tokenizer.pad_token_id
    model = T.add_lora(loaded.model, T.DEFAULT_LORA_RANK, 42, precision)
    if widened:
        T.upcast_base_layers(model)
    T.set_checkpointing(model, checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=loaded.spec.learning_rate, weight_decay=0.0)
    lengths = [len(e.input_ids) for e in examples]
    batches = T.length_grouped_batches(lengths, min(T.DEFAULT_BATCH_SIZE, len(examples)), random.Random(42))
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    plan = [batches[longest]] + [b for k, b in enumerate(batches) if k != longest][: args.steps - 1]
    load_peak, load_rss = status_kb("VmHWM"), status_kb("VmRSS")
    resettable = reset_peak()
    steps = []
    for batch in plan:
        started = time.perf_counter()
        n_labels = sum(examples[i].n_trainable for i in batch)
        loss_sum, tokens = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for group in T.micro_batches(batch, lengths, max_tokens):
            tensors = T.collate([examples[i] for i in group], pad_id, loaded.device)
            loss, _, _ = T.batch_loss(model, tensors, loaded.device, precision, fused_head=fused)
            (loss / n_labels).backward()
            loss_sum, tokens = loss_sum + float(loss.detach()), tokens + tensors["tokens"]
            del loss, tensors
            if v["trim"]:
                release_free_memory()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        steps.append({"seconds": time.perf_counter() - started, "tokens": tokens, "loss": loss_sum / n_labels,
                      "longest_row": max(lengths[i] for i in batch)})
    print(json.dumps({"variant": args.variant, "precision": precision, "threads": torch.get_num_threads(),
                      "load_peak_kb": load_peak, "rss_after_load_kb": load_rss,
                      "train_peak_kb": status_kb("VmHWM") if resettable else None, "steps": steps}), flush=True)
    return 0


JOB_VARIANTS = {  # name: gradient checkpointing, tokens per micro-batch (training and validation), base's storage
    "before": dict(checkpointing=False, max_tokens=4096, base_weights="fp32"),  # before issue 17, chunked output layer
    "now": dict(checkpointing=True, max_tokens=1024, base_weights="auto"),  # a bf16 base (widened where fp32 computes)
    "fp32-base": dict(checkpointing=True, max_tokens=1024, base_weights="fp32"),  # float32 base where fp32 computes
}


def job_child(args: argparse.Namespace) -> int:
    """Run the course's training job (trainer.train, validation and checkpoints included); print one JSON line."""
    from helpers.localapi import trainer as T

    from helpers.localapi import heap

    heap.cap_mmap_threshold()  # as the server's training worker does (worker.py)
    v = JOB_VARIANTS[args.variant]
    spec = T.TrainSpec(args.model, Path(args.train), Path(args.valid), Path(args.out), n_epochs=args.epochs,
                       precision=args.precision, cache_dir=args.cache_dir, gradient_checkpointing=v["checkpointing"],
                       micro_batch_tokens=v["max_tokens"], base_weights=v["base_weights"])
    events: list[dict] = []
    timeline: list[tuple[str, int, int]] = []  # (event, step, peak resident memory so far in kB)

    def on_event(event: dict) -> None:
        events.append(event)
        timeline.append((event["type"], event.get("step", 0), status_kb("VmHWM")))

    started = time.perf_counter()
    result = T.train(spec, on_event, lambda: False)
    full = [e["full_valid_loss"] for e in events if e["type"] == "metrics" and "full_valid_loss" in e]
    print(json.dumps({"variant": args.variant, "seconds": time.perf_counter() - started,
                      "precision": result.hyperparameters["precision"], "trained_tokens": result.trained_tokens,
                      "initial_valid_loss": result.initial_valid_loss, "full_valid_losses": full,
                      "peak_timeline": _peak_steps(timeline)}), flush=True)
    return 0


def _peak_steps(timeline: list[tuple[str, int, int]]) -> list[str]:
    """The events at which the process's peak resident memory grew by 50 MB or more, as 'event@step: GB'."""
    out, last = [], 0
    for kind, step, peak in timeline:
        if peak - last >= 50 * 1024:
            out.append(f"{kind}@{step}: {peak / 1024 ** 2:.2f}")
            last = peak
    return out


def job_main(args: argparse.Namespace) -> int:
    """Run the whole training job once per variant, one after another, and print the table."""
    env = _variant_env(args)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-job-"))
    split = make_split(work / "data")
    M.load_model(args.model, args.cache_dir)
    print(cpu_line())
    print(f"model {args.model}, precision {args.precision}, {args.epochs} epoch(s) of the course's job with its "
          f"20-row validation, kernels: {kernels_text(args)}", flush=True)
    rows = []
    for name in args.variants.split(","):
        cmd = [sys.executable, __file__, "_job", "--variant", name, "--model", args.model, "--precision", args.precision,
               "--train", str(split.train_path), "--valid", str(split.valid_path), "--out", str(work / name.replace("/", "_")),
               "--epochs", str(args.epochs), "--cache-dir", str(args.cache_dir)]
        report, peak_kb = _run_child(cmd, env, name)
        rows.append((name, report, peak_kb))
        print(f"  {name}: {report['seconds']:.0f} s, peak {peak_kb / 1024 ** 2:.2f} GB, full validation loss "
              f"{report['initial_valid_loss']:.4f} -> {' / '.join(f'{x:.4f}' for x in report['full_valid_losses'])}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        print(f"    where the peak grew (GB): {', '.join(report['peak_timeline'])}", flush=True)
    base = rows[0][1]["seconds"]
    print("\n| variant | precision | process peak | seconds | vs first | full validation loss before -> each epoch |")
    print("|---|---|---|---|---|---|")
    for name, report, peak_kb in rows:
        losses = " / ".join(f"{x:.4f}" for x in report["full_valid_losses"])
        print(f"| {name} | {report['precision']} | {peak_kb / 1024 ** 2:.2f} GB | {report['seconds']:.0f} | "
              f"{report['seconds'] / base:.2f}x | {report['initial_valid_loss']:.4f} -> {losses} |")
    return 0


def _variant_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the variants' processes (AVX2-only kernels with --isa avx2, and --env settings)."""
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
    if args.isa == "avx2":
        env.update(AVX2_ENV)
        if args.precision == "auto":
            args.precision = "fp32"  # what `auto` picks on a CPU without native bf16
    return env


def kernels_text(args: argparse.Namespace) -> str:
    """How the variants' kernels were chosen, in words."""
    if args.isa == "avx2":
        return "AVX2 only (emulated: " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) + ")"
    return "this CPU's best"


def _variant_script(name: str) -> tuple[str, str, dict[str, str]]:
    """(variant, this benchmark's script, extra environment) for a variant name; `now@TREE` runs variant `now` of
    the checkout at TREE (`git worktree add TREE REV`: an older revision), its own trainer and benchmark."""
    if "@" not in name:
        return name, __file__, {}
    variant, tree = name.split("@", 1)
    root = Path(tree).resolve()
    return variant, str(root / "benchmarks" / "bench_memory.py"), {"PYTHONPATH": str(root)}


def _run_child(cmd: list[str], env: dict[str, str], name: str) -> tuple[dict[str, Any], int]:
    """Run a variant's process: its JSON report and the peak resident memory (kB) the kernel recorded for it."""
    variant, script, extra = _variant_script(name)
    cmd = [sys.executable, script] + cmd[2:]
    cmd[cmd.index("--variant") + 1] = variant
    env = dict(env, **extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"variant {name} failed (exit status {status})")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss


def run_variant(name: str, args: argparse.Namespace, train_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one variant's process; its JSON report plus the peak resident memory the kernel recorded for it."""
    cmd = [sys.executable, __file__, "_child", "--variant", name, "--model", args.model, "--steps", str(args.steps),
           "--precision", args.precision, "--train", str(train_path), "--cache-dir", str(args.cache_dir)]
    report, peak_kb = _run_child(cmd, env, name)
    report["process_peak_kb"] = peak_kb
    return report


def train_main(args: argparse.Namespace) -> int:
    """Run the training variants side by side and print the table."""
    env = _variant_env(args)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    split = make_split(work / "data")
    M.load_model(args.model, args.cache_dir)  # converts once, outside the measurements
    print(cpu_line())
    print(f"model {args.model}, precision {args.precision}, kernels: {kernels_text(args)}; "
          f"{args.steps} steps per variant (the batch with the longest row first), {args.rounds} round(s)"
          + (f"; environment {' '.join(args.env)}" if args.env else ""), flush=True)
    names = args.variants.split(",")
    reports: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names:
            report = run_variant(name, args, split.train_path, env)
            reports[name].append(report)
            times = " ".join(f"{x['seconds']:.1f}" for x in report["steps"])
            losses = " ".join(f"{x['loss']:.4f}" for x in report["steps"])
            print(f"  round {rnd + 1} {name:<14} after loading {report['rss_after_load_kb'] / 1024 ** 2:4.2f} GB, "
                  f"train peak {report['train_peak_kb'] / 1024 ** 2:5.2f} GB, "
                  f"process peak {report['process_peak_kb'] / 1024 ** 2:5.2f} GB, "
                  f"steps {times} s, losses {losses}, load {os.getloadavg()[0]:.2f}", flush=True)
    base = names[0]
    base_time = sum(sum(x["seconds"] for x in r["steps"]) for r in reports[base])
    base_loss = [x["loss"] for x in reports[base][0]["steps"]]
    print(f"\n| variant | precision | peak RSS while training | process peak (load included) | seconds for "
          f"{args.steps} steps | vs {base} | tokens/s | largest loss difference vs {base} |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        runs = reports[name]
        seconds = sum(sum(x["seconds"] for x in r["steps"]) for r in runs)
        tokens = sum(sum(x["tokens"] for x in r["steps"]) for r in runs)
        peak = max(r["train_peak_kb"] or 0 for r in runs) / 1024 ** 2
        proc_peak = max(r["process_peak_kb"] for r in runs) / 1024 ** 2
        diff = max(abs(a - b) for a, b in zip([x["loss"] for x in runs[0]["steps"]], base_loss))
        print(f"| {name} | {runs[0]['precision']} | {peak:.2f} GB | {proc_peak:.2f} GB | {seconds / len(runs):.1f} | "
              f"{seconds / base_time:.2f}x | {tokens / seconds:.1f} | {diff:.2g} |")
    print(f"(load average at the end {os.getloadavg()[0]:.2f}; {args.rounds} round(s) averaged)")
    return 0


# ---- course: sample the process tree of a course run ----------------------------------------------------

def command(pid: int) -> str:
    """A process's command line (the first 100 characters), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")[:100]
    except OSError:
        return ""


def role(pid: int) -> str:
    """What a process of the course is, from its command line."""
    cmd = command(pid)
    if not cmd:
        return "gone"
    if "ipykernel" in cmd:
        return "kernel"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "worker"
    if "helpers.localapi" in cmd or "uvicorn" in cmd or "local_backend" in cmd:
        return "server"
    if "helpers.course" in cmd:
        return "runner"
    return "other"


def works_in(pid: int, work_dir: Path) -> bool:
    """True when a process's WORKBOOK_WORK_DIR is `work_dir`: the course's local server, not a test's beside it."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    value = next((item.split(b"=", 1)[1] for item in env if item.startswith(b"WORKBOOK_WORK_DIR=")), None)
    return value is not None and Path(value.decode("utf-8", "replace")).resolve() == work_dir.resolve()


def descendants(root: int) -> list[int]:
    """Every process below `root`, whichever parent it has now (found through /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for kid in children.get(pid, []):
            out.append(kid)
            todo.append(kid)
    return out


def course_main(args: argparse.Namespace) -> int:
    """Run the course headless and print the peak resident memory of each role and of their sum."""
    print(cpu_line(), flush=True)
    env = dict(os.environ, **(AVX2_ENV if args.isa == "avx2" else {}))
    print(f"kernels: {kernels_text(args)} (a local server already running keeps its own: stop it first)", flush=True)
    cmd = [sys.executable, "-m", "helpers.course", "run"] + (["--only", *args.only] if args.only else [])
    work_dir = Path(env.get("WORKBOOK_WORK_DIR") or REPO_ROOT / "data" / "work")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    peaks: dict[str, float] = {}
    total_peak, total_at, at_peak = 0.0, 0.0, {}
    pss_peak, pss_at = 0.0, 0.0
    seen_server: set[int] = set()
    others: dict[str, float] = {}  # what the processes of no known role are, and their peaks
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    timeline = open(args.timeline, "w", encoding="utf-8") if args.timeline else None  # noqa: SIM115
    while proc.poll() is None:
        pids = [proc.pid] + descendants(proc.pid)
        # the local server is started detached (it outlives the course run): find it by its command line and its
        # work folder (a test's server beside the course has another)
        for entry in Path("/proc").iterdir():
            if (entry.name.isdigit() and int(entry.name) not in pids and int(entry.name) not in seen_server
                    and role(int(entry.name)) == "server" and works_in(int(entry.name), work_dir)):
                seen_server.add(int(entry.name))
        for server in list(seen_server):
            pids += [server] + descendants(server)
        sizes: dict[str, float] = {}
        pss = 0.0
        for pid in set(pids):
            r = role(pid)
            rss = status_kb("VmRSS", pid) / 1024 ** 2
            pss += pss_kb(pid) / 1024 ** 2
            sizes[r] = sizes.get(r, 0.0) + rss
            if r == "other" and rss > others.get(command(pid), 0.0):
                others[command(pid)] = rss
        total = sum(sizes.values())
        for r, size in sizes.items():
            peaks[r] = max(peaks.get(r, 0.0), size)
        now = time.monotonic() - started
        if total > total_peak:
            total_peak, total_at, at_peak = total, now, dict(sizes)
        if pss > pss_peak:
            pss_peak, pss_at = pss, now
        if timeline is not None:
            timeline.write(json.dumps({"t": round(now, 1), "pss": round(pss, 3),
                                       **{r: round(size, 3) for r, size in sizes.items()}}) + "\n")
            timeline.flush()
        time.sleep(args.interval)
    reader.join(timeout=5)
    if timeline is not None:
        timeline.close()
    wall = time.monotonic() - started
    print("".join(lines[-30:]))
    print(f"course run: exit status {proc.returncode}, {wall:.0f} s ({wall / 60:.1f} min)")
    print("| process | peak resident memory |\n|---|---|")
    for r in ("kernel", "server", "worker", "runner", "other"):
        if r in peaks:
            print(f"| {r} | {peaks[r]:.2f} GB |")
    print(f"| **all together (sampled every {args.interval:g} s)** | **{total_peak:.2f} GB** (at {total_at:.0f} s) |")
    print(f"| all together, shared pages counted once (proportional set size) | {pss_peak:.2f} GB (at {pss_at:.0f} s) |")
    print("at the peak of all together: " + ", ".join(f"{r} {size:.2f} GB" for r, size in sorted(at_peak.items())))
    for name, size in sorted(others.items(), key=lambda item: -item[1])[:5]:
        print(f"other: {size:.2f} GB  {name}")
    return proc.returncode or 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="the trainer's memory and time, variant by variant")
    kid = sub.add_parser("_child")
    job = sub.add_parser("job", help="the whole training job, variant by variant")
    jkid = sub.add_parser("_job")
    for p in (train, kid, job, jkid):
        p.add_argument("--model", default=M.QWEN_MODEL)
        p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
        p.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "work" / "localapi" / "models")
    for p in (train, kid):
        p.add_argument("--steps", type=int, default=4)
    for p in (job, jkid):
        p.add_argument("--epochs", type=int, default=3)
    for p in (train, job):
        p.add_argument("--isa", choices=["native", "avx2"], default="native")
        p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="set in every variant's process (e.g. MALLOC_MMAP_THRESHOLD_=65536)")
    train.add_argument("--variants", default="before,fused-head,checkpointing,now")
    train.add_argument("--rounds", type=int, default=1)
    kid.add_argument("--variant", choices=list(VARIANTS), required=True)
    kid.add_argument("--train", required=True)
    job.add_argument("--variants", default="before,now")
    jkid.add_argument("--variant", choices=list(JOB_VARIANTS), required=True)
    for name in ("--train", "--valid", "--out"):
        jkid.add_argument(name, required=True)
    course = sub.add_parser("course", help="sample the memory of a headless course run")
    course.add_argument("--only", nargs="+", metavar="NN")
    course.add_argument("--interval", type=float, default=1.0)
    course.add_argument("--timeline", type=Path, help="write every sample (GB per role, and the PSS sum) as JSON lines")
    course.add_argument("--isa", choices=["native", "avx2"], default="native")
    args = parser.parse_args()
    commands = {"_child": child, "_job": job_child, "train": train_main, "job": job_main, "course": course_main}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
