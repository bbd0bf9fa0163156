"""The offline OpenAI-compatible fine-tuning server: HTTP API, storage, job worker, model registry, trainer, generator."""
