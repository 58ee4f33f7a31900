"""The engine's core loan: a loan starts only once no step runs a thread team on every thread."""
import threading

from grserve.engine.gr.core_loan import CoreLoan


def test_steps_run_on_one_thread_fewer_while_the_core_is_lent():
    loan = CoreLoan()
    assert loan.step_threads(4) == 4
    loan.step_done()
    loan.set()  # no step running: at once
    assert loan.is_set() and loan.step_threads(4) == 3 and loan.step_threads(1) == 1
    loan.step_done()
    loan.clear()
    assert not loan.is_set() and loan.step_threads(2) == 2


def test_a_loan_waits_for_the_step_on_every_thread_to_end():
    loan = CoreLoan(wait_s=60)
    assert loan.step_threads(2) == 2  # a step on both threads is running
    lent = threading.Event()
    borrower = threading.Thread(target=lambda: (loan.set(), lent.set()))
    borrower.start()
    assert not lent.wait(0.3)  # it cannot start beside that step (only step_done lets it)
    assert loan.is_set()  # but the next step already leaves the core
    loan.step_done()
    assert lent.wait(30)
    borrower.join()
    assert loan.step_threads(2) == 1
    loan.step_done()


def test_a_single_threaded_step_is_not_waited_for():
    loan = CoreLoan(wait_s=60)
    assert loan.step_threads(1) == 1  # one thread is no team: nothing a loan must wait for
    done = threading.Thread(target=loan.set)
    done.start()
    done.join(30)
    assert not done.is_alive()
    loan.step_done()
