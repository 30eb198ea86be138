"""The adapters folder as it changes, without a model: lazy lookup, completeness, the byte cache,
mix groups. Stand-in notebook functions (tests/unit/stub_notebooks.py); the runtime is real."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from worker.adapters import (
    BASE_GROUP,
    AdapterCache,
    Loaded,
    alone_group,
    check_complete,
    default_cache_bytes,
    join_group,
    mixed_group,
    publish_folder,
    staging_folder,
)
from worker.config import WorkerConfig
from worker.errors import ErrorCode, WorkerError
from worker.runtime import Worker

from .stub_notebooks import stub_functions, write_stub_adapter

_HEADER = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'  # 16 bytes of data


def set_up(adapters_dir: Path, **overrides) -> Worker:
    config = WorkerConfig(
        base_model="base", adapters_dir=str(adapters_dir), device="cpu", log_level="ERROR", **overrides
    )
    return Worker(stub_functions()).setup(config)


def predict(worker: Worker, adapter: str) -> dict:
    from .test_worker_dispatch import png_b64

    return worker.handle({"id": "j", "input": {"images": png_b64(), "adapter": adapter}})


def test_ten_thousand_folders_are_not_read_at_setup(tmp_path, monkeypatch):
    for i in range(10_000):
        (tmp_path / f"a{i:05d}").mkdir()
    for i in range(20):  # the first ones by name are real adapters (preloaded with `*`)
        (tmp_path / f"a{i:05d}").rmdir()
        write_stub_adapter(tmp_path / f"a{i:05d}")
    read: list[str] = []
    from worker.adapters import AdapterCatalog

    original = AdapterCatalog._read
    monkeypatch.setattr(AdapterCatalog, "_read", lambda self, name: read.append(name) or original(self, name))
    worker = set_up(tmp_path)
    assert len(set(read)) <= 16 + 8, "setup looks at the preloaded folders and a few sizes, not all 10,000"
    assert predict(worker, "a09999")["code"] == "ADAPTER_INCOMPLETE", "a folder with no config yet"
    assert predict(worker, "a00019")["status"] == "success", "one not preloaded loads on its first request"


def test_an_adapter_added_changed_and_removed_after_setup(tmp_path):
    worker = set_up(tmp_path, adapter_recheck_ms=0, preload_adapters=())
    assert predict(worker, "late")["code"] == "UNKNOWN_ADAPTER"
    staged = staging_folder(tmp_path / "late")
    (staged / "adapter_config.json").write_text("{}")
    (staged / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    assert predict(worker, "late")["code"] == "UNKNOWN_ADAPTER", "a staging folder is never served"
    publish_folder(staged, tmp_path / "late")
    assert predict(worker, "late")["status"] == "success"
    cache = worker.host.cache_state()
    assert cache["loaded"] == ["late"] and cache["loads"] == 1
    (tmp_path / "late" / "adapter_config.json").write_text('{"r": 8}')  # rewritten: a new version
    assert predict(worker, "late")["status"] == "success"
    assert worker.host.cache_state()["reloads"] == 1
    for path in (tmp_path / "late").iterdir():
        path.unlink()
    (tmp_path / "late").rmdir()
    assert predict(worker, "late")["code"] == "UNKNOWN_ADAPTER"
    assert worker.host.cache_state()["loaded"] == []
    assert [p.name for p in tmp_path.iterdir()] == [], "publishing leaves nothing behind"


@pytest.mark.parametrize(
    ("weights", "says"),
    [
        (b"", "shorter than its header"),
        (struct.pack("<Q", 200) + b"{", "shorter than its header"),
        (struct.pack("<Q", len(_HEADER)) + _HEADER + b"\0" * 4, f"describes {8 + len(_HEADER) + 16}"),
    ],
    ids=["empty", "header-cut", "data-cut"],
)
def test_a_half_copied_weights_file_is_incomplete_not_loaded(tmp_path, weights, says):
    folder = write_stub_adapter(tmp_path / "half")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    with pytest.raises(WorkerError) as caught:
        check_complete(folder)
    assert caught.value.code is ErrorCode.ADAPTER_INCOMPLETE and says in caught.value.message
    answer = predict(set_up(tmp_path, preload_adapters=()), "half")
    assert answer["code"] == "ADAPTER_INCOMPLETE" and "retried" in answer["message"]


def loaded(name: str, nbytes: int) -> Loaded:
    return Loaded(name, f"k-{name}", (), nbytes, BASE_GROUP)


def test_the_cache_evicts_least_recently_used_by_bytes_never_a_pinned_one():
    cache = AdapterCache(budget_bytes=100)
    a, b, c = loaded("a", 40), loaded("b", 40), loaded("c", 40)
    assert cache.add(a) == [] and cache.add(b) == []
    assert cache.add(c) == [], "a and b are pinned (in use): the cache runs over its budget"
    assert cache.release(a) == [a], "once free, the least recently used goes"
    assert cache.release(b) == [] and cache.release(c) == []
    assert list(cache.entries) == ["b", "c"] and cache.nbytes == 80
    assert cache.hit("b", ()) is b
    cache.release(b)
    assert cache.add(loaded("d", 50)) == [c], "b was used more recently than c"
    assert list(cache.entries) == ["b", "d"] and cache.nbytes == 90 and cache.counters["evictions"] == 2


def test_mix_groups():
    m, other = mixed_group((("classifier",), False)), mixed_group(((), False))
    assert join_group(BASE_GROUP, m) == m and join_group(m, BASE_GROUP) == m and join_group(m, m) == m
    assert join_group(m, other) is None, "different modules_to_save never share a forward"
    assert join_group(alone_group("k1"), alone_group("k1")) == alone_group("k1")
    assert (
        join_group(alone_group("k1"), BASE_GROUP) is None and join_group(alone_group("k1"), alone_group("k2")) is None
    )


def test_default_cache_is_room_for_many_adapters_within_a_tenth_of_free_memory():
    mib = 2**20
    assert default_cache_bytes(64 * 1024 * mib, [1 * mib]) == 256 * mib
    assert default_cache_bytes(64 * 1024 * mib, [10 * mib]) == 1280 * mib
    assert default_cache_bytes(1024 * mib, [10 * mib]) == 1024 * mib // 10
