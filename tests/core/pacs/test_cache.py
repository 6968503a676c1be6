"""The PACS cache: one private folder per retrieval, and `pacs empty-cache` removes what the user kept."""

from __future__ import annotations

from core.pacs.study import cache_root, empty_cache, retrieval_folder


def test_retrievals_get_private_folders_that_empty_cache_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = retrieval_folder(), retrieval_folder()
    (first / "a.dcm").write_bytes(b"x")
    assert first != second and first.parent == second.parent == cache_root()
    assert all((folder.stat().st_mode & 0o777) == 0o700 for folder in (cache_root(), first, second))
    assert empty_cache() == 2 and list(cache_root().iterdir()) == []
    assert empty_cache() == 0
