"""Engines fail loudly, never hang: a thread that dies through an exception its loop did not handle (a bug,
or a BaseException) records why, logs it with the traceback, fails every waiting and running request with
EngineFailed and refuses new ones with it; the server answers 503 with the reason."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Callable


class EngineFailed(RuntimeError):
    """The engine cannot run requests any more (one of its threads died); the message says why."""


def guarded(loop: Callable[[], None], on_death: Callable[[str], None]) -> Callable[[], None]:
    """`loop` as a thread target: whatever escapes it is logged with its traceback and handed to `on_death`
    as a one-line reason, instead of ending the thread silently while the other threads wait for it."""
    def run() -> None:
        try:
            loop()
        except BaseException as e:  # noqa: B036 - any death, even KeyboardInterrupt, must fail the engine
            reason = f"engine thread {threading.current_thread().name} died: {type(e).__name__}: {e}"
            logging.getLogger("grserve").error(reason, exc_info=e)
            on_death(reason)
    return run


def settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Sets the future's result (or error) unless it is already done: a dying engine may have failed it
    while another thread was still computing it."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
