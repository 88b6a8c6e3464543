"""chains.lock: the xtables flock, on a private lock file."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.errors import ChainsError, LockTimeout, TryAgain
from chains.lock import DEFAULT_LOCK_PATH, lock_path, xtables_lock


@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "xtables.lock"
    monkeypatch.setenv("XTABLES_LOCKFILE", str(path))
    return path


def held_elsewhere(path: Path) -> bool:
    return subprocess.run(["flock", "-n", str(path), "true"]).returncode != 0


@pytest.fixture
def other_holder(lock_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    holder = subprocess.Popen(["flock", "--close", str(lock_file), "sleep", "10"])
    deadline = time.monotonic() + 5
    while not held_elsewhere(lock_file) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_lock_path_honours_xtables_lockfile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XTABLES_LOCKFILE", raising=False)
    assert lock_path() == DEFAULT_LOCK_PATH == "/run/xtables.lock"
    monkeypatch.setenv("XTABLES_LOCKFILE", str(tmp_path / "x.lock"))
    assert lock_path() == str(tmp_path / "x.lock")


def test_lock_is_held_inside_the_block_only(lock_file: Path) -> None:
    with xtables_lock():
        assert lock_file.exists()
        assert held_elsewhere(lock_file)
    assert not held_elsewhere(lock_file)


def test_lock_is_released_when_the_block_raises(lock_file: Path) -> None:
    with pytest.raises(RuntimeError):
        with xtables_lock():
            raise RuntimeError("boom")
    assert not held_elsewhere(lock_file)


def test_nested_use_does_not_wait_for_itself(lock_file: Path) -> None:
    started = time.monotonic()
    with xtables_lock(wait=0.2), xtables_lock(wait=0.2):
        assert held_elsewhere(lock_file)
    assert time.monotonic() - started < 0.2
    assert not held_elsewhere(lock_file)


def test_busy_lock_times_out_as_try_again(lock_file: Path, other_holder: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="holding the xtables lock") as raised:
        with xtables_lock(wait=0.3):
            pytest.fail("got a lock someone else holds")
    assert isinstance(raised.value, TryAgain) and raised.value.code == 11
    assert 0.28 < time.monotonic() - started < 1.5


def test_waits_until_the_holder_lets_go(lock_file: Path, other_holder: subprocess.Popen[bytes]) -> None:
    def release_soon() -> None:
        time.sleep(0.3)
        other_holder.kill()

    import threading

    threading.Thread(target=release_soon).start()
    started = time.monotonic()
    with xtables_lock(wait=5):
        waited = time.monotonic() - started
    assert 0.25 < waited < 3


def test_unopenable_lock_file_is_a_hard_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XTABLES_LOCKFILE", str(tmp_path / "missing-dir" / "x.lock"))
    with pytest.raises(ChainsError, match="cannot open xtables lock file") as raised:
        with xtables_lock():
            pass
    assert not isinstance(raised.value, TryAgain)
