"""The compute thread: one thread for every caller, on the torch threads the entry point kept for it (the
entry point's thread keeping one), restored after the block; a core lent for one call; results and
exceptions handed back; nested calls run in place."""
import threading

import pytest
import torch

from grserve.engine import compute_threads as ct


def test_the_caller_keeps_one_thread_and_the_compute_thread_gets_the_rest():
    mine = torch.get_num_threads()
    with ct.threads_kept_for_compute():
        assert torch.get_num_threads() == 1 and ct.compute_threads() == mine
        assert ct.run_compute(torch.get_num_threads) == mine
        with ct.threads_kept_for_compute():  # nested: still the first count, not this thread's one
            assert ct.compute_threads() == mine
    assert torch.get_num_threads() == mine and ct.compute_threads() is None


def test_every_caller_gets_the_same_thread_and_a_lent_core_for_one_call():
    names = []
    callers = [threading.Thread(target=lambda: names.append(ct.run_compute(lambda: threading.current_thread())))
               for _ in range(3)]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    assert len(set(names)) == 1 and names[0] is not threading.current_thread()
    assert ct.run_compute(torch.get_num_threads, threads=1) == 1
    assert ct.run_compute(torch.get_num_threads) == ct.thread_count()  # the next call is full width again


def test_results_exceptions_and_nested_calls():
    assert ct.run_compute(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        ct.run_compute(lambda: 1 / 0)
    outer = ct.run_compute(lambda: (threading.current_thread(), ct.run_compute(threading.current_thread)))
    assert outer[0] is outer[1]  # a nested call does not wait for the thread it runs on
