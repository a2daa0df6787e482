"""Running the egs2/ recipes and tools/ scripts from tests: recipes in a copy of egs2/, with
this interpreter's `python`; scripts imported from their files."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("data", "dump", "exp", "downloads", "packed", "RESULTS.md")


def load_script(path: Path):
    """The Python script at ``path`` (e.g. tools/espeak_corpus.py, a recipe's local/*.py),
    imported as a module under its file name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_env() -> dict:
    """os.environ with the running interpreter's bin/ first, so the recipes' `python` is ours."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def file_stamps(recipe: Path) -> dict:
    """(size, mtime_ns) of every file under a recipe's outputs: a rerun that skips its finished
    stages leaves them all as they were."""
    outputs = [recipe / name for name in OUTPUTS if (recipe / name).exists()]
    files = [p for out in outputs for p in ([out] if out.is_file() else out.rglob("*")) if p.is_file()]
    return {str(p.relative_to(recipe)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def copy_recipes(root: Path, *recipes: str) -> None:
    """egs2/TEMPLATE and the named recipes (e.g. "mini_an4/ssl1") under root/egs2, without outputs."""
    shutil.copytree(REPO / "egs2/TEMPLATE", root / "egs2/TEMPLATE", symlinks=True)
    for recipe in recipes:
        shutil.copytree(REPO / "egs2" / recipe, root / "egs2" / recipe, symlinks=True,
                        ignore=shutil.ignore_patterns(*OUTPUTS))  # fmt: skip
