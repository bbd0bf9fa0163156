"""The installed workbook: `helpers` imports from any folder, and nbconvert runs the notebooks from outside the repository.

`make setup` installs the project editable into .venv/, so nothing puts the repository on PYTHONPATH
or sys.path: a kernel, a script or a test started anywhere finds `helpers`, and the work files are
located from the configuration (REPO_ROOT comes from the package's own file), not from the cwd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.config import REPO_ROOT

CLEARED = ("PYTHONPATH", "OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "FINETUNE_BASE_MODEL", "HUATUO_PATH",
           "HUATUO_SOURCE", "WORKBOOK_WORK_DIR", "WORKBOOK_BUILD_DIR", "WORKBOOK_HEADLESS", "LOCALAPI_KEY", "LOCALAPI_PORT",
           "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM")


def outside_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH and without any workbook setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return {**env, **extra}


def test_helpers_import_from_any_folder_and_find_the_repository(tmp_path: Path) -> None:
    """From an unrelated folder, without PYTHONPATH, the venv's Python imports helpers (and the server) from this checkout."""
    code = ("import json, helpers.localapi; from helpers.config import REPO_ROOT, load_config; cfg = load_config(); "
            "print(json.dumps([str(REPO_ROOT), str(cfg.work_dir), str(cfg.data_path)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=outside_env(WORKBOOK_WORK_DIR=str(tmp_path / "w")),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    root, work, data = json.loads(out.stdout.strip().splitlines()[-1])
    assert root == str(REPO_ROOT)
    assert work == str(tmp_path / "w")
    assert data == str(REPO_ROOT / "data" / "huatuo26M_test_datasets.jsonl")  # found from the configuration, not the cwd


def test_default_work_folder_is_in_the_repository_whatever_the_cwd(tmp_path: Path) -> None:
    """Without WORKBOOK_WORK_DIR the work folder is <repo>/data/work, also when Python starts in another folder."""
    code = "from helpers.config import REPO_ROOT, load_config; print(load_config(env_file=REPO_ROOT / 'no.env').work_dir)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=outside_env(LOCALAPI_KEY="k"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(REPO_ROOT / "data" / "work")


@pytest.mark.slow
def test_nbconvert_runs_01_to_03_from_a_folder_outside_the_repository(tmp_path: Path) -> None:
    """`<venv>/bin/jupyter nbconvert --to notebook --execute <repo>/notebooks/0N_*.ipynb --output-dir <here>` in order, as the README says."""
    jupyter = Path(sys.executable).parent / "jupyter"
    here = tmp_path / "elsewhere"
    here.mkdir()
    env = outside_env(HUATUO_SOURCE="fixture", WORKBOOK_WORK_DIR=str(tmp_path / "work"), FINETUNE_BACKEND="local",
                      FINETUNE_BASE_MODEL="tiny-test")
    for name in ("01_explore", "02_sample", "03_build_jsonl"):
        notebook = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        run = subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", str(notebook), "--output-dir", str(here),
                              "--ExecutePreprocessor.timeout=900"], cwd=here, env=env, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{name}:\n{run.stderr[-3000:]}"
        executed = json.loads((here / f"{name}.ipynb").read_text(encoding="utf-8"))
        errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert errors == [], name
    stats = json.loads((tmp_path / "work" / "train_stats.json").read_text(encoding="utf-8"))
    assert stats["n_examples"] == 100
    assert sorted(p.name for p in (tmp_path / "work").glob("*.jsonl")) == [
        "heldout.jsonl", "train.jsonl", "train_rows.jsonl", "valid.jsonl", "valid_rows.jsonl"]
    assert not (REPO_ROOT / "notebooks" / "01_explore.nbconvert.ipynb").exists()
