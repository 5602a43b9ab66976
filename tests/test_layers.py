"""The layout's import contract (pyproject.toml, [tool.importlinter]): core's layers import only downwards, no
cycles anywhere in core, the trainer never imports the store, pages never import torch, core never imports
Streamlit. Checked with import-linter on the real import graph of the working tree."""

import shutil
import subprocess
import sys
import tomllib

import pytest

from core import PROJECT_ROOT

pytest.importorskip("importlinter", reason="import-linter is not installed (requirements-dev.txt)")


def lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(PROJECT_ROOT / ".venv" / "bin"))
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                                                  "sys.exit(lint_imports_command())"]
    return subprocess.run([*cmd, "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def test_every_import_contract_is_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout, result.stdout


def test_the_contract_names_every_layer_and_the_forbidden_imports():
    settings = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_id = {c["id"]: c for c in settings["contracts"]}
    layers = by_id["layers"]["layers"]
    subpackages = sorted(p.name for p in (PROJECT_ROOT / "core").iterdir()
                         if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(layer.removeprefix("core.") for layer in layers if layer.startswith("core.")) == subpackages
    assert layers[0] == "pages" and layers[-1] == "core.experiment"
    assert by_id["trainer-without-store"]["forbidden_modules"][0] == "core.store"
    assert by_id["pages-without-torch"]["forbidden_modules"] == ["torch"]
    assert by_id["no-cycles"]["type"] == "acyclic_siblings"


def test_modules_stay_short_or_say_why():
    """No module over about 400 lines without a reason written in its docstring ("Over 400 lines: ...")."""
    long = []
    for path in sorted((PROJECT_ROOT / "core").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 420 and "Over 400 lines" not in text[:3000]:
            long.append(f"{path.relative_to(PROJECT_ROOT)} ({text.count(chr(10))} lines)")
    assert not long, long
