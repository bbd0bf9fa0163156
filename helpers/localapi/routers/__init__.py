"""One APIRouter per resource of the local server (files, fine-tuning jobs, models, chat) and its service routes."""
