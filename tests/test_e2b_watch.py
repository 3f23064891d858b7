"""The watchdog on E2B transfers (sandbox/backends/e2b_watch.py): progress keeps a transfer
alive however long it takes; one that stops moving is given up on, and its worker is fenced
off the file it was writing or reading from then on."""

from __future__ import annotations

import io
import threading

import pytest

from sandboxrun.errors import ConfigError
from sandboxrun.sandbox.backends.e2b_errors import StalledTransfer, is_transient
from sandboxrun.sandbox.backends.e2b_watch import (
    WatchedReader,
    WatchedWriter,
    env_seconds,
    watched,
)


def test_a_transfer_that_keeps_moving_is_never_given_up_on():
    out = io.BytesIO()
    step = threading.Event()

    def transfer(progress) -> int:
        sink = WatchedWriter(out, progress)
        for _ in range(20):  # far longer in total than the idle bound, never idle that long
            step.wait(0.02)
            sink.write(b"x" * 10)
        return 200

    assert watched(transfer, idle=0.5, what="downloading") == 200
    assert out.getvalue() == b"x" * 200


def test_a_stalled_download_is_given_up_on_and_fenced_off_its_file():
    out = io.BytesIO()
    release, wrote_late = threading.Event(), threading.Event()
    late: list[BaseException] = []

    def transfer(progress) -> None:
        sink = WatchedWriter(out, progress)
        sink.write(b"first")
        release.wait(30)  # the connection hangs
        try:
            sink.write(b"late")
        except OSError as exc:
            late.append(exc)
        wrote_late.set()

    with pytest.raises(StalledTransfer, match="nothing moved") as err:
        watched(transfer, idle=0.3, what="downloading work.pack")
    assert is_transient(err.value)  # retried (or resumed) like a dropped connection
    release.set()
    assert wrote_late.wait(30)
    assert late and out.getvalue() == b"first"  # the abandoned worker wrote nothing more


def test_an_abandoned_upload_cannot_read_any_more():
    src = io.BytesIO(b"a" * 100)
    release, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def transfer(progress) -> None:
        reader = WatchedReader(src, progress)
        reader.read(10)
        release.wait(30)
        try:
            reader.read(10)
        except OSError as exc:
            errors.append(exc)
        done.set()

    with pytest.raises(StalledTransfer):
        watched(transfer, idle=0.3, what="uploading")
    release.set()
    assert done.wait(30) and errors and src.tell() == 10


def test_errors_and_results_pass_through():
    def boom(progress):
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        watched(boom, idle=5, what="x")
    assert watched(lambda p: 7, idle=5, what="x") == 7


def test_timeout_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SBR_T", "2.5")
    assert env_seconds("SBR_T", None) == 2.5
    for unset in ("", "  "):
        monkeypatch.setenv("SBR_T", unset)
        assert env_seconds("SBR_T", 60.0) == 60.0
    for bad in ("soon", "0", "-3", "nan", "inf"):  # an error naming it, not the default
        monkeypatch.setenv("SBR_T", bad)
        with pytest.raises(ConfigError) as err:
            env_seconds("SBR_T", 60.0)
        assert err.value.message == f"invalid value for SBR_T: {bad!r}"
        assert "number of seconds" in (err.value.hint or "") and "unset SBR_T" in (
            err.value.hint or ""
        )
