"""The environment of the notebook kernels that the workbook starts: the course run, `make lab` and the tests.

`helpers` itself is found because the workbook is installed (`make setup` installs it editable), so
nothing here touches PYTHONPATH; the kernels only need to reach the same backend and work folder.
"""

from __future__ import annotations

from helpers.config import Config

HEADLESS_ONLY = ("MPLBACKEND", "WORKBOOK_HEADLESS")  # settings that hide plots and widgets in a browser


def kernel_environment(cfg: Config, *, headless: bool) -> dict[str, str]:
    """Variables for a kernel that runs the course on cfg: work and build folders, the local server's URL, headless mode."""
    env = {"WORKBOOK_WORK_DIR": str(cfg.work_dir), "WORKBOOK_BUILD_DIR": str(cfg.build_dir)}
    if cfg.is_local:
        # With the same port and work folder a kernel's load_config() finds this server and its key.
        env["LOCALAPI_PORT"] = str(cfg.local_port)
    if headless:
        env["WORKBOOK_HEADLESS"] = "1"
    return env
