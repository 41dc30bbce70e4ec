"""One run at a time per repository, and notifications that never break a run."""

import threading
import time

import pytest

from flows import notify
from flows.run_lock import WorkspaceBusy, workspace_lock


def test_a_second_run_waits_for_the_lock_up_to_its_timeout(tmp_path):
    released = threading.Event()

    def hold_briefly():
        with workspace_lock(tmp_path, timeout=0):
            holding.set()
            time.sleep(0.5)
        released.set()

    holding = threading.Event()
    holder = threading.Thread(target=hold_briefly)
    holder.start()
    holding.wait(5)
    with pytest.raises(WorkspaceBusy, match=f"another imgpipe run is using {tmp_path}.*--lock-timeout"):
        with workspace_lock(tmp_path, timeout=0):
            pass
    with workspace_lock(tmp_path, timeout=10):  # waits for the holder, then gets it
        assert released.is_set()
    holder.join()


def test_notifications_are_optional_and_never_raise(monkeypatch):
    monkeypatch.delenv(notify.NOTIFY_URL_VARIABLE, raising=False)
    assert notify.send("title", "body") is False
    monkeypatch.setenv(notify.NOTIFY_URL_VARIABLE, "not-a-url-scheme://x")
    assert notify.send("title", "body") is False
    monkeypatch.setenv(notify.NOTIFY_URL_VARIABLE, "json://127.0.0.1:9/nobody-listens")  # port 9: refused
    assert notify.send("title", "body") is False
