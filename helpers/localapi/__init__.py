"""The offline OpenAI-compatible fine-tuning server: HTTP API, storage, job worker, model registry, trainer, generator.

Start it with `python -m helpers.localapi serve --host 127.0.0.1 --port 8765` (or from Python with
`helpers.local_backend.ensure_server(cfg)`, which reuses one already listening) and point the official SDK at
`http://127.0.0.1:8765/v1` with the bearer key from LOCALAPI_KEY or `<work_dir>/localapi/api_key`.

API half (HTTP):  app.py (the factory), routers/ (one per resource: files, fine_tuning, models, chat, service),
                  deps.py (injected storage/manager/engine/settings), auth.py, errors.py, schemas.py (request/
                  response shapes), uploads.py (streamed multipart), storage.py (SQLite + blobs), jobs.py (job
                  requests, FIFO queue, events, result CSV), worker.py (training process and its records),
                  chat.py (chat requests and answers), engine.py (model ids, generation), request_id.py,
                  faults.py.
Model half:       models.py (registry, conversion, pool), trainer.py (LoRA SFT), generate.py (batched generation).
"""
