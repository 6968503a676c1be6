"""The installer's bundle holds what the app needs: every command Flower starts by name, every module loaded by
name, every data folder read from disk. (Building the bundle is too heavy for every change: packaging/build.sh
builds it and smoke-tests it; this checks its recipe.)"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
BUNDLE = ROOT / "packaging" / "bundle"
sys.path.insert(0, str(BUNDLE))
import contents  # noqa: E402


def test_every_program_flower_starts_by_name_is_a_command_of_the_bundle():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    # What PneumoFL starts (core/federated/processes.py, control.py) and what Flower starts by name from PATH.
    started = {"flower-superlink", "flower-supernode", "flwr", "flower-superexec", "flwr-serverapp", "flwr-clientapp"}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "core" / "federated").glob("*.py"))
    assert all(f'"{name}"' in source for name in ("flower-superlink", "flower-supernode", "flwr"))
    for name in started:
        assert contents.COMMANDS[name] == scripts[name], f"{name} must dispatch to Flower's own entry point"
    assert contents.COMMANDS["pneumofl"] == scripts["pneumofl"]
    for target in contents.COMMANDS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_modules_loaded_by_name_and_data_read_from_disk_are_listed():
    bundle = (ROOT / "core" / "federated" / "bundle" / "pyproject.toml").read_text(encoding="utf-8")
    for app in ("core.federated.server_app:app", "core.federated.client_app:app"):
        assert app in bundle and app.split(".")[0] in contents.HIDDEN_PACKAGES
        # `flwr run` reads each component's source file before it submits the app: it must be on disk.
        source = app.split(":")[0].replace(".", "/") + ".py"
        assert (source, str(Path(source).parent)) in contents.DATA
    for source, target in contents.DATA:
        # Code finds them next to itself, frozen or not.
        assert ((ROOT / source).is_dir() and source == target) or (
            (ROOT / source).is_file() and Path(source).parent == Path(target)
        )
    migrations = ROOT / "core" / "persistence" / "migrations"
    assert any((migrations / "versions").glob("0005_*.py")) and (migrations / "env.py").is_file()
    assert (ROOT / "resources" / "web" / "index.html").is_file()
    assert any((ROOT / "resources" / "web" / "vendor").glob("uplot-*/LICENSE"))
    # Flower's SuperLink migrates its state with Alembic revisions kept as .py files: they must travel as files.
    flower = Path(importlib.import_module("flwr").__file__).parent
    assert any((flower / "supercore" / "state" / "alembic" / "versions").glob("rev_*.py"))
    spec = (BUNDLE / "pneumofl.spec").read_text(encoding="utf-8")
    assert "flwr" in contents.PACKAGE_DATA and 'include_py_files=package == "flwr"' in spec
    # Flower's processes refuse each other unless each finds Flower's own metadata ("package name 'unknown'").
    assert 'copy_metadata("pneumofl", recursive=True)' in spec
    torchvision = Path(importlib.import_module("torchvision").__file__).parent
    assert any(torchvision.glob("_C*.so")) and 'torchvision_dir.glob("*.so")' in spec  # its operators, by path


def test_the_spec_and_the_launcher_build_from_the_shared_contents():
    spec = ast.parse((BUNDLE / "pneumofl.spec").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(spec) if isinstance(n, ast.Name)}
    assert {"HIDDEN_PACKAGES", "DATA", "PACKAGE_DATA", "COLLECT"} <= names  # one folder, from contents.py
    assert "onefile" not in (BUNDLE / "pneumofl.spec").read_text(encoding="utf-8")
    launcher = (BUNDLE / "launcher.py").read_text(encoding="utf-8")
    assert "COMMANDS" in launcher and "freeze_support" in launcher
    build = (ROOT / "packaging" / "build.sh").read_text(encoding="utf-8")
    assert "smoke.sh" in build and "ln -sf pneumofl" in build and "--torch-index" in build
    smoke = (ROOT / "packaging" / "smoke.sh").read_text(encoding="utf-8")
    assert "pacs echo smoke" in smoke and "Orthanc" in smoke
