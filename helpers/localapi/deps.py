"""Dependencies the routers declare (FastAPI `Depends`): the server's storage, job manager, engine, settings.

They live on `app.state`, set once by `app.create_app`; a router asks for them by type, e.g.
`def handler(storage: StorageDep)`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from helpers.localapi.engine import Engine
from helpers.localapi.jobs import JobManager
from helpers.localapi.settings import ServerSettings
from helpers.localapi.storage import Storage


def get_storage(request: Request) -> Storage:
    """The server's storage."""
    return request.app.state.storage


def get_manager(request: Request) -> JobManager:
    """The server's job manager."""
    return request.app.state.manager


def get_engine(request: Request) -> Engine:
    """The server's model engine."""
    return request.app.state.engine


def get_settings(request: Request) -> ServerSettings:
    """The server's settings."""
    return request.app.state.settings


StorageDep = Annotated[Storage, Depends(get_storage)]
ManagerDep = Annotated[JobManager, Depends(get_manager)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
