"""Prompt-lookup proposals and greedy acceptance, by hand."""
from grserve.engine.llm.speculative import accept_greedy, propose_ngram


def test_propose_takes_the_continuation_of_the_latest_match():
    seq = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert propose_ngram(seq, 2) == [7, 8]  # the latest earlier "1 2 3" is followed by 7 8
    assert propose_ngram([4, 5, 6], 3) == []
    assert propose_ngram([5, 1, 5], 3) == [1, 5]  # falls back to a 1-gram match


def test_accept_greedy():
    assert accept_greedy([4, 5, 6], [4, 5, 6, 7]) == [4, 5, 6, 7]  # all accepted, plus the bonus token
    assert accept_greedy([4, 5, 6], [4, 9, 6, 7]) == [4, 9]
    assert accept_greedy([], [3]) == [3]
