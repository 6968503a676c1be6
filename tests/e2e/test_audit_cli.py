"""`pneumofl audit` as a site's IT person runs it: real processes on a real SQLite file, exit codes and sentences."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from core.audit import kinds, record
from core.persistence import Database
from tests.e2e.cli import pneumofl as _pneumofl


def pneumofl(*args: object, env: dict[str, str], check: int | None = None):
    return _pneumofl(*args, env=env, timeout=120, check=check, warnings_too=False)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """A SQLite database with three audit entries, written with this session's key folder (the CLI's too)."""
    path = tmp_path / "runs.db"
    with Database.open(f"sqlite:///{path}") as db:
        record(db, kinds.MODEL_EXPORTED, {"run_id": 12, "format": "onnx"}, os_user="alice")
        record(db, kinds.IMAGES_READ, {"count": 40, "run_id": 12}, os_user="bob")
        record(db, kinds.TOKEN_ROTATED, {"fingerprint": "0a1b2c"}, os_user="alice")
    return path


def test_verify_an_intact_trail_then_an_edited_one(trail: Path, env: dict[str, str]) -> None:
    intact = pneumofl("audit", "verify", "--db", f"sqlite:///{trail}", env=env, check=0)
    assert intact.stdout.strip() == "Audit trail intact: 3 entries."
    with sqlite3.connect(trail) as connection:
        connection.execute("""UPDATE audit_entries SET details = '{"count": 4, "run_id": 12}' WHERE seq = 2""")
    broken = pneumofl("audit", "verify", "--db", f"sqlite:///{trail}", env=env, check=2)
    assert broken.stderr.startswith("pneumofl: Entry 2 (images_read") and "altered" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_show_lists_entries_as_json_and_text(trail: Path, env: dict[str, str]) -> None:
    listed = json.loads(
        pneumofl("audit", "show", "--format", "json", "--db", f"sqlite:///{trail}", env=env, check=0).stdout
    )
    assert [(e["seq"], e["kind"], e["os_user"]) for e in listed] == [
        (1, "model_exported", "alice"),
        (2, "images_read", "bob"),
        (3, "token_rotated", "alice"),
    ]
    assert listed[1]["details"] == {"count": 40, "run_id": 12} and listed[1]["prev_hash"] == listed[0]["entry_hash"]
    text = pneumofl("audit", "show", "--kind", "images_read", "--db", f"sqlite:///{trail}", env=env, check=0).stdout
    lines = text.strip().splitlines()
    assert len(lines) == 2 and "bob" in lines[0] and "images_read" in lines[0] and "count=40, run_id=12" in lines[0]
    assert lines[1] == "1 audit entry shown."
    later = pneumofl("audit", "show", "--since", "2999-01-01", "--db", f"sqlite:///{trail}", env=env, check=0)
    assert later.stdout.strip() == "0 audit entries shown."
    bad = pneumofl("audit", "show", "--since", "last tuesday", "--db", f"sqlite:///{trail}", env=env, check=2)
    assert "'last tuesday' is not a date" in bad.stderr and "2026-12-01" in bad.stderr


def test_export_writes_json_lines(trail: Path, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "trail.jsonl"
    done = pneumofl("audit", "export", "-o", out, "--db", f"sqlite:///{trail}", env=env, check=0)
    assert done.stdout.strip() == f"Exported 3 audit entries to {out}."
    assert [json.loads(line)["kind"] for line in out.read_text().splitlines()] == [
        "model_exported",
        "images_read",
        "token_rotated",
    ]


def test_a_workstation_without_the_key_is_told_where_to_copy_it(trail: Path, env: dict[str, str], tmp_path) -> None:
    elsewhere = env | {"PNEUMOFL_AUDIT_KEY_DIR": str(tmp_path / "other-workstation")}
    proc = pneumofl("audit", "verify", "--db", f"sqlite:///{trail}", env=elsewhere, check=3)
    assert str(tmp_path / "other-workstation") in proc.stderr and "Copy the key file" in proc.stderr


def test_token_rotation_is_in_the_trail(env: dict[str, str], tmp_path: Path) -> None:
    env = env | {"XDG_CONFIG_HOME": str(tmp_path / "config")}  # the test's own viewer token, never the user's
    url = f"sqlite:///{tmp_path / 'node.db'}"
    new_token = pneumofl("token", "rotate", "--db", url, env=env, check=0).stdout.splitlines()[0]
    listed = json.loads(pneumofl("audit", "show", "--format", "json", "--db", url, env=env, check=0).stdout)
    assert [e["kind"] for e in listed] == ["token_rotated"] and new_token not in json.dumps(listed)
    assert pneumofl("audit", "verify", "--db", url, env=env, check=0).stdout.strip() == "Audit trail intact: 1 entry."
