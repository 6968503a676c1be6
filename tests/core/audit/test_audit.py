"""The audit trail on real SQLite files and a real PostgreSQL server: appends, every kind of tampering, races, keys."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update

from core.audit import entries, export_jsonl, kinds, record, record_safely, verify
from core.audit.chain import ZERO_HASH, entry_hash, head_mac
from core.audit.key import KEY_DIR_ENV, key_path, load_or_create_key
from core.broadcast.tokens import rotate_token
from core.errors import AuditError, AuditKeyMissing
from core.inference.models import ReadingModel
from core.inference.reader import Reading, record_readings
from core.persistence import Database
from core.persistence.identity import database_identity
from core.persistence.models import audit_entries_table, audit_head_table
from core.reporting import RunReport

REPO = Path(__file__).parents[3]


def append(db: Database, count: int, kind: str = kinds.IMAGES_READ) -> list[int]:
    return [record(db, kind, {"count": i, "model": "run 7", "ratio": i / 3, "tags": ["a", "é"]}) for i in range(count)]


def sql(db: Database, statement: str, **params: object) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(statement), params)


def identity_of(db: Database) -> str:
    with db.begin() as session:
        return database_identity(session)


def as_other_workstation(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workstation that holds a copy of the key but never wrote or verified this trail (no watermark)."""
    key = key_path(identity_of(db))
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "other-workstation"))
    key_path(identity_of(db)).parent.mkdir()
    shutil.copy(key, key_path(identity_of(db)))


def forge_head(db: Database, seq: int) -> None:
    """Point the head at entry ``seq`` with a signature made by someone without the key."""
    with db.engine.begin() as connection:
        last = connection.execute(
            select(audit_entries_table.c.entry_hash).where(audit_entries_table.c.seq == seq)
        ).scalar_one()
        mac = hmac.new(os.urandom(32), f"{identity_of(db)}:{seq}:{last}".encode(), hashlib.sha256).hexdigest()
        connection.execute(update(audit_head_table).values(seq=seq, entry_hash=last, mac=mac))


def test_entries_chain_and_verify(db: Database) -> None:
    assert append(db, 5) == [1, 2, 3, 4, 5]
    with db.begin() as session:
        found = entries(session)
    assert [e.seq for e in found] == [1, 2, 3, 4, 5]
    assert found[0].prev_hash == ZERO_HASH and all(b.prev_hash == a.entry_hash for a, b in pairwise(found))
    assert found[4].details == {"count": 4, "model": "run 7", "ratio": 4 / 3, "tags": ["a", "é"]}
    assert found[0].kind == "images_read" and found[0].os_user and found[0].recorded_at.tzinfo is not None
    result = verify(db)
    assert result.ok and result.entries_checked == 5 and result.first_bad_seq is None
    assert result.reason == "Audit trail intact: 5 entries."


def test_an_empty_trail_verifies(db: Database) -> None:
    assert verify(db).ok and verify(db).reason == "Audit trail intact: 0 entries."


def test_each_database_has_its_own_lasting_identity(db_url: str, tmp_path: Path) -> None:
    with Database.open(db_url) as db:
        first = identity_of(db)
    with Database.open(db_url) as db:
        assert identity_of(db) == first and len(first) == 32 and int(first, 16) >= 0
    with Database.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        assert identity_of(other) != first
        sql(other, "DELETE FROM database_identity")
        again = identity_of(other)
        assert again == identity_of(other) and again != first


def test_an_edited_entry_is_named(db: Database) -> None:
    append(db, 5)
    sql(db, """UPDATE audit_entries SET details = '{"count": 99}' WHERE seq = 3""")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.entries_checked) == (False, 3, 2)
    assert result.reason.startswith("Entry 3 (images_read") and "altered" in result.reason


def test_a_deleted_entry_is_named(db: Database) -> None:
    append(db, 5)
    sql(db, "DELETE FROM audit_entries WHERE seq = 3")
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert result.reason == "Entry 3 is missing: the trail goes from entry 2 to entry 4."


def test_swapped_entries_are_named(db: Database) -> None:
    append(db, 5)
    sql(db, "UPDATE audit_entries SET seq = -1 WHERE seq = 2")
    sql(db, "UPDATE audit_entries SET seq = 2 WHERE seq = 3")
    sql(db, "UPDATE audit_entries SET seq = 3 WHERE seq = -1")
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 2) and result.reason.startswith("Entry 2 ")


def test_swapped_contents_are_named(db: Database) -> None:
    append(db, 5)
    with db.engine.begin() as connection:
        rows = {r.seq: r._asdict() for r in connection.execute(select(audit_entries_table)).all()}
        for seq, other in ((3, 4), (4, 3)):
            values = {k: v for k, v in rows[other].items() if k != "seq"}
            connection.execute(update(audit_entries_table).where(audit_entries_table.c.seq == seq).values(**values))
    assert verify(db).first_bad_seq == 3


def test_cut_off_entries_are_named(db: Database) -> None:
    append(db, 5)
    sql(db, "DELETE FROM audit_entries WHERE seq >= 4")
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 4) and result.reason.startswith("Entries 4 to 5 are missing")


def test_cut_off_with_the_head_set_back_without_the_key(db: Database, tmp_path, monkeypatch) -> None:
    append(db, 5)
    sql(db, "DELETE FROM audit_entries WHERE seq >= 4")
    forge_head(db, 3)
    here = verify(db)  # this computer wrote entry 5: its watermark says where the trail really ended
    assert (here.ok, here.first_bad_seq) == (False, 4) and "this computer wrote or verified entry 5" in here.reason
    as_other_workstation(db, tmp_path, monkeypatch)
    elsewhere = verify(db)  # no watermark there: the forged signature alone gives it away
    assert (elsewhere.ok, elsewhere.first_bad_seq) == (False, 1)
    assert "not signed with this database's key" in elsewhere.reason


def test_a_chain_recomputed_without_the_key_is_caught(db: Database, tmp_path, monkeypatch) -> None:
    append(db, 5)
    with db.engine.begin() as connection:  # rewrite entry 2 and every hash after it, as a careful forger would
        previous = ZERO_HASH
        for row in connection.execute(select(audit_entries_table).order_by(audit_entries_table.c.seq)).all():
            details = {"count": 1000} if row.seq == 2 else row.details
            digest = entry_hash(row.seq, row.recorded_at, row.os_user, row.kind, details, previous)
            connection.execute(
                update(audit_entries_table)
                .where(audit_entries_table.c.seq == row.seq)
                .values(details=details, prev_hash=previous, entry_hash=digest)
            )
            previous = digest
    forge_head(db, 5)
    here = verify(db)
    as_other_workstation(db, tmp_path, monkeypatch)
    elsewhere = verify(db)  # a workstation that never saw the trail tells the same
    for result in (here, elsewhere):
        assert (result.ok, result.first_bad_seq) == (False, 1) and "rewritten" in result.reason


def test_a_head_rolled_back_to_an_older_copy_is_caught(db: Database) -> None:
    append(db, 3)
    with db.engine.begin() as connection:
        saved = connection.execute(select(audit_head_table)).one()._asdict()
    append(db, 2)
    with db.engine.begin() as connection:
        connection.execute(update(audit_head_table).values(**saved))
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 4) and "not covered by the audit head" in result.reason
    sql(db, "DELETE FROM audit_entries WHERE seq > 3")  # now a consistent, validly signed older trail
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "this computer wrote or verified entry 5" in result.reason
    with pytest.raises(AuditError, match="restored from a backup on purpose, delete"):  # nor is it extended
        record(db, kinds.POLICY_CHANGED, {})


def test_appending_refuses_a_forged_head(db: Database) -> None:
    append(db, 2)
    forge_head(db, 2)
    with pytest.raises(AuditError, match="fails its signature check"):
        record(db, kinds.TOKEN_ROTATED, {})
    assert record_safely(db, kinds.TOKEN_ROTATED, {}) is None


def test_details_that_are_not_json_are_refused_with_a_sentence(db: Database, caplog) -> None:
    with pytest.raises(AuditError, match=r"details\['file'\] is a PosixPath"):
        record(db, kinds.MODEL_EXPORTED, {"file": Path("/tmp/model.onnx")})
    with pytest.raises(AuditError, match=r"details\['auc'\] is nan"):
        record(db, kinds.MODEL_EXPORTED, {"auc": float("nan")})
    with pytest.raises(AuditError, match="not an audit kind"):
        record(db, "Model Exported!", {})
    with caplog.at_level(logging.WARNING):
        assert record_safely(db, kinds.MODEL_EXPORTED, {"when": datetime.now()}) is None
    assert "Could not add a model_exported entry" in caplog.text
    assert verify(db).entries_checked == 0  # nothing half-written


def test_the_key_file_is_private_and_kept(db: Database) -> None:
    append(db, 1)
    path = key_path(identity_of(db))
    key = path.read_bytes()
    assert len(key) == 32 and oct(path.stat().st_mode)[-3:] == "600" and oct(path.parent.stat().st_mode)[-3:] == "700"
    append(db, 1)
    assert path.read_bytes() == key and verify(db).ok


def test_a_workstation_without_the_key_is_told_where_to_copy_it_from(db: Database, tmp_path, monkeypatch) -> None:
    append(db, 2)
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "no-keys"))
    missing = key_path(identity_of(db))
    with pytest.raises(AuditKeyMissing) as info:
        verify(db)
    assert str(missing) in str(info.value) and "Copy the key file" in str(info.value)
    assert "from the workstation that created" in str(info.value)
    with pytest.raises(AuditKeyMissing):  # and it never starts a second key for the same trail
        record(db, kinds.POLICY_CHANGED, {})
    assert not missing.exists()


def test_entries_filtered_and_exported(db: Database, tmp_path: Path) -> None:
    append(db, 2)
    record(db, kinds.TOKEN_ROTATED, {"fingerprint": "abc"}, os_user="alice")
    with db.begin() as session:
        assert [e.seq for e in entries(session, kinds=[kinds.TOKEN_ROTATED])] == [3]
        assert entries(session, since=datetime.now(UTC) + timedelta(minutes=1)) == []
        assert len(entries(session, since=datetime.now(UTC) - timedelta(minutes=1))) == 3
        assert entries(session)[2].os_user == "alice"
    assert export_jsonl(db, tmp_path / "trail.jsonl") == 3
    lines = [json.loads(line) for line in (tmp_path / "trail.jsonl").read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3] and lines[2]["details"] == {"fingerprint": "abc"}
    assert lines[1]["prev_hash"] == lines[0]["entry_hash"]
    stream = io.StringIO()
    assert export_jsonl(db, stream, since=datetime.now(UTC) + timedelta(minutes=1)) == 0 and stream.getvalue() == ""
    with pytest.raises(AuditError, match="Cannot write"):
        export_jsonl(db, tmp_path / "no" / "such" / "folder" / "trail.jsonl")


WRITER = """
import sys, time
from pathlib import Path
from core.audit import record
from core.persistence import Database
url, writer, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
db = Database.open(url, migrate=False)
(folder / f"ready-{writer}").touch()
while not (folder / "go").exists():  # all four start appending at once
    time.sleep(0.005)
for i in range(25):
    record(db, "round_trained", {"writer": writer, "i": i})
"""


def test_four_processes_append_without_forking_the_chain(db: Database, db_url: str, tmp_path: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, str(n), str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    while any(writer.poll() is None for writer in writers):  # a reader checking meanwhile sees no false alarm
        assert verify(db).ok
    for writer in writers:
        assert writer.wait(timeout=240) == 0, writer.stderr.read() if writer.stderr else ""
    with db.begin() as session:
        found = entries(session)
    assert [e.seq for e in found] == list(range(1, 101))
    for n in range(4):  # each writer's entries in its own order
        assert [e.details["i"] for e in found if e.details["writer"] == n] == list(range(25))
    result = verify(db)
    assert result.ok and result.entries_checked == 100


def test_syslog_copy_without_a_syslog_never_fails(db: Database, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOFL_AUDIT_SYSLOG", "1")
    assert append(db, 2) == [1, 2] and verify(db).ok


def test_a_long_trail_verifies_in_seconds(tmp_path: Path) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'long.db'}") as db:
        identity, previous, rows = identity_of(db), ZERO_HASH, []
        start = datetime.now(UTC) - timedelta(days=30)
        for seq in range(1, 100_000):  # a month of readings, written as the key holder would have
            moment = start + timedelta(seconds=seq)
            details = {"count": seq % 17, "run_id": seq // 100, "model_sha256": "ab" * 32}
            previous = entry_hash(seq, moment, "alice", kinds.IMAGES_READ, details, previous)
            rows.append(
                {
                    "seq": seq,
                    "recorded_at": moment,
                    "os_user": "alice",
                    "kind": kinds.IMAGES_READ,
                    "details": details,
                    "prev_hash": rows[-1]["entry_hash"] if rows else ZERO_HASH,
                    "entry_hash": previous,
                }
            )
        mac = head_mac(load_or_create_key(identity), identity, 99_999, previous)
        with db.engine.begin() as connection:
            connection.execute(insert(audit_entries_table), rows)
            connection.execute(insert(audit_head_table).values(id=1, seq=99_999, entry_hash=previous, mac=mac))
        assert record(db, kinds.POLICY_CHANGED, {"policy": "v2"}) == 100_000
        began = time.perf_counter()
        result = verify(db)
        took = time.perf_counter() - began
    assert result.ok and result.entries_checked == 100_000
    assert took < 15, f"verifying 100,000 entries took {took:.1f} s"


def test_reading_images_and_rotating_the_token_are_audited(db: Database, tmp_path: Path, db_url: str) -> None:
    model = ReadingModel(name="run 7", backbone_name="small_cnn", image_size=32, weights_sha256="ab" * 32, report=RunReport())
    readings = [Reading(tmp_path / f"{n}.png", "youden", 0.5, "cd" * 32, 0.1 * n) for n in range(3)]
    readings.append(Reading(tmp_path / "broken.png", "youden", 0.5, error="unreadable"))
    assert record_readings(db, model, readings) == 3
    token = rotate_token(tmp_path / "viewer-token", db_url=db_url)
    with db.begin() as session:
        read, rotated = entries(session)
    assert read.kind == "images_read" and read.details == {
        "count": 3,
        "run_id": None,
        "model": "run 7",
        "model_sha256": "ab" * 32,
    }
    assert rotated.kind == "token_rotated" and token not in json.dumps(rotated.details)
    assert rotated.details["fingerprint"] == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert verify(db).ok


def test_an_exported_model_is_audited(tiny_dataset, tmp_path: Path) -> None:
    from core.export.exporter import export_model
    from core.training.recorded import train_and_record
    from tests.core.conftest import tiny_run_config

    config = tiny_run_config(tiny_dataset, experiment_name="audited", backbone="small_cnn", epochs=1)
    with Database.open(f"sqlite:///{tmp_path / 'runs.db'}") as db:
        run = train_and_record(config, db, work_dir=tmp_path / "ckpt")
        exported = export_model(db, run.run_id, "torchscript", tmp_path / "out")
        with db.begin() as session:
            (entry,) = entries(session, kinds=[kinds.MODEL_EXPORTED])
        assert verify(db).ok
    assert entry.details["run_id"] == run.run_id and entry.details["format"] == "torchscript"
    assert entry.details["file"] == str(exported.model_file)
    assert entry.details["file_sha256"] == hashlib.sha256(exported.model_file.read_bytes()).hexdigest()
