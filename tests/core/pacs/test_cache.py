"""The PACS cache: one private folder per retrieval, and `pacs empty-cache` removes what the user kept; what a
crashed process left behind is removed by the next retrieval."""

from __future__ import annotations

import socket
import subprocess
import sys

from core.pacs.nodes import PacsSettings, save_settings
from core.pacs.study import cache_root, empty_cache, retrieval_folder


def test_retrievals_get_private_folders_that_empty_cache_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = retrieval_folder(), retrieval_folder()
    (first / "a.dcm").write_bytes(b"x")
    assert first != second and first.parent == second.parent == cache_root()
    assert all((folder.stat().st_mode & 0o777) == 0o700 for folder in (cache_root(), first, second))
    assert empty_cache() == 2 and list(cache_root().iterdir()) == []
    assert empty_cache() == 0


def test_a_study_a_crashed_process_left_in_the_cache_is_removed_by_the_next_retrieval(tmp_path, monkeypatch):
    for name in ("CACHE", "CONFIG"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    crashed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = cache_root() / f"{int(crashed.stdout)}-0123456789abcdef-{socket.gethostname()}"  # as it named it
    left.mkdir()
    (left / "image.dcm").write_bytes(b"a patient's image")
    elsewhere = cache_root() / f"{int(crashed.stdout)}-0123456789abcdef-another-workstation"  # a shared home
    kept_by_name = cache_root() / "not-a-retrieval"
    for folder in (elsewhere, kept_by_name):
        folder.mkdir()

    save_settings(PacsSettings({}, keep_retrieved=True))  # the user keeps retrieved studies: nothing is removed
    ours = retrieval_folder()  # a retrieval of this (live) process, still being read
    assert left.exists()

    save_settings(PacsSettings({}))
    newest = retrieval_folder()
    assert not left.exists() and ours.exists() and newest.exists()
    assert elsewhere.exists() and kept_by_name.exists()  # not ours to judge
