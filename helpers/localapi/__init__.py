"""The offline OpenAI-compatible fine-tuning server: HTTP API, storage, job worker, model registry, trainer, generator.

Start it with `python -m helpers.localapi serve --host 127.0.0.1 --port 8765` (or from Python with
`helpers.local_backend.ensure_server(cfg)`, which reuses one already listening) and point the official SDK at
`http://127.0.0.1:8765/v1` with the bearer key from LOCALAPI_KEY or `<work_dir>/localapi/api_key`.

API half (HTTP):  app.py (endpoints, auth, errors), schemas.py (request/response shapes), uploads.py (streamed
                  multipart), storage.py (SQLite + blobs), jobs.py (validation, FIFO queue, worker process,
                  events, result CSV), engine.py (model ids, generation), faults.py (opt-in fault injection).
Model half:       models.py (registry, conversion, pool), trainer.py (LoRA SFT), generate.py (batched generation).
"""
