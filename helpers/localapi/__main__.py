"""`python -m helpers.localapi serve --host 127.0.0.1 --port 8765`: run the local OpenAI-compatible server.

`python -m helpers.localapi export MODEL --format peft|merged|gguf --out DIR`: export a fine-tuned model or
checkpoint of the server (export.py); `--work-dir` and `--model-cache` as for `serve`, `--copy-base` puts a copy
of the base GGUF into DIR (gguf only). Exit status 1 with one line naming the problem on bad input.

Options of `serve` (each also has an environment variable):
  --work-dir DIR           WORKBOOK_WORK_DIR (default data/work); state lives in DIR/localapi
  --max-upload-bytes N     LOCALAPI_MAX_UPLOAD_BYTES (default 512 MiB)
  --faults P               LOCALAPI_FAULTS: fraction of /v1 requests that get a 429, a 500 or a slow answer
  --fault-seed N           LOCALAPI_FAULT_SEED (default 0)
  --fault-slow S           LOCALAPI_FAULT_SLOW: delay of a "slow" fault (default 1.5 s)
  --latency S              LOCALAPI_LATENCY: seconds added to every /v1 request
  --model-cache DIR        LOCALAPI_MODEL_CACHE: where converted base models are kept (default DIR/localapi/models)
The bearer key is LOCALAPI_KEY, else the one stored in DIR/localapi/api_key (created on first start).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from helpers.config import REPO_ROOT, is_loopback_url, read_or_create_local_key


def _env_float(name: str, default: float) -> float:
    """A float from the environment, with a readable error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m helpers.localapi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("LOCALAPI_PORT", "8765")), help="port (LOCALAPI_PORT, default 8765)")
    serve.add_argument("--work-dir", type=Path, default=None, help="work folder (WORKBOOK_WORK_DIR, default data/work); state in WORK_DIR/localapi")
    serve.add_argument("--max-upload-bytes", type=int, default=int(_env_float("LOCALAPI_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)),
                       help="largest accepted upload (LOCALAPI_MAX_UPLOAD_BYTES, default 512 MiB)")
    serve.add_argument("--faults", type=float, default=_env_float("LOCALAPI_FAULTS", 0.0),
                       help="fraction of /v1 requests answered with 429, 500 or a delay, for tests (LOCALAPI_FAULTS)")
    serve.add_argument("--fault-seed", type=int, default=int(_env_float("LOCALAPI_FAULT_SEED", 0)),
                       help="seed of the fault sequence (LOCALAPI_FAULT_SEED, default 0)")
    serve.add_argument("--fault-slow", type=float, default=_env_float("LOCALAPI_FAULT_SLOW", 1.5),
                       help="seconds of a slow fault (LOCALAPI_FAULT_SLOW, default 1.5)")
    serve.add_argument("--model-cache", type=Path,
                       default=Path(os.environ["LOCALAPI_MODEL_CACHE"]) if os.environ.get("LOCALAPI_MODEL_CACHE") else None,
                       help="converted base models (LOCALAPI_MODEL_CACHE, default WORK_DIR/localapi/models)")
    serve.add_argument("--latency", type=float, default=_env_float("LOCALAPI_LATENCY", 0.0),
                       help="seconds added to every /v1 request, for benchmarks (LOCALAPI_LATENCY)")
    serve.add_argument("--train-base-weights", choices=["auto", "bf16", "fp32"],
                       default=os.environ.get("LOCALAPI_TRAIN_BASE_WEIGHTS", "auto") or "auto",
                       help="how training jobs keep the frozen base model (LOCALAPI_TRAIN_BASE_WEIGHTS): auto or bf16 "
                            "(in bf16; where training computes in float32 each layer is widened as it runs) or fp32 "
                            "(in float32 where training computes in float32: about 1 GB more for Qwen)")
    serve.add_argument("--log-level", default=os.environ.get("LOCALAPI_LOG_LEVEL", "info"),
                       help="debug, info, warning (LOCALAPI_LOG_LEVEL); debug also logs every request")
    export = sub.add_parser("export", help="export a fine-tuned model: PEFT adapter, merged model, or GGUF adapter for llama.cpp/Ollama")
    export.add_argument("model", help="a fine-tuned model id (ft:...) or one of its checkpoints")
    export.add_argument("--format", required=True, choices=["peft", "merged", "gguf"], help="what to write")
    export.add_argument("--out", required=True, type=Path, help="a new folder to write it into (must not exist)")
    export.add_argument("--copy-base", action="store_true", help="gguf: copy the base GGUF into the folder too")
    export.add_argument("--work-dir", type=Path, default=None, help="the server's work folder (WORKBOOK_WORK_DIR, default data/work)")
    export.add_argument("--model-cache", type=Path,
                        default=Path(os.environ["LOCALAPI_MODEL_CACHE"]) if os.environ.get("LOCALAPI_MODEL_CACHE") else None,
                        help="converted base models (LOCALAPI_MODEL_CACHE, default WORK_DIR/localapi/models)")
    args = parser.parse_args(argv)
    if args.command != "serve":
        return args
    if not 0 <= args.faults <= 1:
        parser.error("--faults must be a fraction between 0 and 1")
    return args


def _work_dir(args: argparse.Namespace) -> Path:
    """The work folder: --work-dir, else WORKBOOK_WORK_DIR, else data/work of the repository."""
    return (args.work_dir or Path(os.environ.get("WORKBOOK_WORK_DIR") or REPO_ROOT / "data" / "work")).resolve()


def export(args: argparse.Namespace) -> int:
    """Export a fine-tuned model of the server's work folder; print what was written (exit 1 with the reason on bad input)."""
    from helpers.localapi import export as exporter
    from helpers.localapi.settings import ServerSettings
    from helpers.localapi.storage import Storage
    from helpers.localapi.threads import limit_torch_threads

    limit_torch_threads()
    work_dir = _work_dir(args)
    root = ServerSettings(work_dir=work_dir, api_key="").root
    if not (root / "meta.sqlite3").is_file():
        print(f"error: no local server state in {work_dir} (nothing was fine-tuned there); pass --work-dir", file=sys.stderr)
        return 1
    storage = Storage(root, args.model_cache.resolve() if args.model_cache else None)
    try:
        result = exporter.export_model(storage, args.model, args.format, args.out, copy_base=args.copy_base)
    except exporter.ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    print(f"exported {result.model_id} as {result.format} to {result.out}")
    for name, size in result.files.items():
        print(f"  {name:32s} {size:>14,} bytes")
    if result.base_gguf is not None:
        print(f"  base GGUF: {result.base_gguf} (sha256 {result.base_sha256})")
    return 0


def serve(args: argparse.Namespace) -> None:
    """Build the app and run it with uvicorn until stopped (Ctrl-C, SIGTERM or POST /local/shutdown)."""
    import uvicorn

    from helpers.localapi.app import ServerSettings, create_app
    from helpers.localapi import heap
    from helpers.localapi.faults import FaultSettings
    from helpers.localapi.threads import limit_primitive_cache, limit_torch_threads

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_primitive_cache()  # before torch runs anything: a new prefill length is a new oneDNN primitive (threads.py)
    limit_torch_threads()
    # generation's KV caches and logits of ever-changing sizes would fragment the heap, as training's activations
    # do in the worker: the server grew from 2.7 to 3.7 GB over 07's answers (heap.py, benchmarks/README.md)
    heap.cap_mmap_threshold()
    work_dir = _work_dir(args)
    key, source = read_or_create_local_key(work_dir)
    if not is_loopback_url(f"http://{args.host}/"):
        logging.warning("listening on %s: other machines can reach this server (the bearer key still applies)", args.host)
    settings = ServerSettings(work_dir=work_dir, api_key=key, max_upload_bytes=args.max_upload_bytes,
                              faults=FaultSettings(rate=args.faults, seed=args.fault_seed, latency=args.latency,
                                                  slow_seconds=args.fault_slow),
                              model_cache=args.model_cache.resolve() if args.model_cache else None,
                              train_base_weights=args.train_base_weights)
    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                            access_log=args.log_level.lower() == "debug", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    settings.request_shutdown = lambda: setattr(server, "should_exit", True)
    logging.info("serving http://%s:%d/v1 (work folder %s, key %s%s)", args.host, args.port, work_dir, source,
                 f", faults {args.faults:.0%} seed {args.fault_seed}" if args.faults else "")
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has already shut down cleanly (jobs stopped, state saved)
        logging.info("stopped")


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    if args.command == "serve":
        serve(args)
    elif args.command == "export":
        raise SystemExit(export(args))


if __name__ == "__main__":
    main()
