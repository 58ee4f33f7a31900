"""Handing torch's threads to the compute threads: the handing thread keeps one, a compute thread gets them
all, and the block restores both."""
import threading

import torch

from grserve.engine import compute_threads as ct


def test_the_caller_keeps_one_thread_and_compute_threads_get_the_rest():
    mine = torch.get_num_threads()
    with ct.threads_kept_for_compute():
        assert torch.get_num_threads() == 1 and ct.compute_threads() == mine
        assert ct.on_compute_thread(torch.get_num_threads) == mine
        seen = []
        worker = threading.Thread(target=lambda: seen.append(ct.enter_compute()))
        worker.start()
        worker.join()
        assert seen == [mine]
        with ct.threads_kept_for_compute():  # nested: still the first count, not this thread's one
            assert ct.compute_threads() == mine
    assert torch.get_num_threads() == mine and ct.compute_threads() is None


def test_without_an_entry_point_a_compute_thread_keeps_its_default():
    assert ct.compute_threads() is None
    assert ct.on_compute_thread(torch.get_num_threads) == torch.get_num_threads()
