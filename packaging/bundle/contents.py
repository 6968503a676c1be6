"""What the self-contained PneumoFL bundle must hold: its commands, the modules loaded by name, the data folders.

Shared by the PyInstaller spec (``pneumofl.spec``), the launcher and the test suite's check of both
(``tests/packaging``), so a command or a data folder the app needs cannot be forgotten in one of them.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Every program of the bundle is the one frozen executable, dispatching on the name it was started as. Flower
# starts its helpers by name from PATH (the SuperNode and SuperLink start flower-superexec, which starts
# flwr-clientapp / flwr-serverapp for every task); PneumoFL starts the SuperLink, SuperNodes and the flwr CLI.
COMMANDS: dict[str, str] = {
    "pneumofl": "desktop.cli.main:main",
    "flower-superlink": "flwr.superlink.cli:flower_superlink",
    "flower-supernode": "flwr.supernode.cli:flower_supernode",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr": "flwr.cli.app:app",
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
}

# Imported by name at run time, which PyInstaller's analysis cannot see: the Flower apps (named in the app bundle's
# pyproject.toml), Alembic's migration environment, the pydicom decoder plugins and the DB drivers.
HIDDEN_PACKAGES = (
    "core",
    "desktop",
    "flwr",
    "alembic",
    "pydicom",
    "pylibjpeg",
    "openjpeg",
    "rle",
    "psycopg",
    "dp_accounting",
    "captum",
    "onnxscript",
)

# (source, destination inside the bundle) for files read from disk rather than imported.
DATA: tuple[tuple[str, str], ...] = (
    ("core/persistence/migrations", "core/persistence/migrations"),  # Alembic reads the revisions as files
    ("core/federated/bundle", "core/federated/bundle"),  # the Flower app bundle `flwr run` submits
    # `flwr run` checks each app component by reading its module's source (find_spec's origin), never importing it.
    ("core/federated/server_app.py", "core/federated"),
    ("core/federated/client_app.py", "core/federated"),
    ("resources", "resources"),  # icons, style sheet, the browser dashboard (with its vendored uPlot)
)
# Packages whose own data files must come along (Flower's SuperLink migrations, Alembic's templates, ...).
# highdicom reads the DICOM standard's module tables (JSON) when it builds a structured report.
PACKAGE_DATA = ("flwr", "alembic", "pydicom", "certifi", "onnxscript", "captum", "flwr_datasets", "highdicom")
