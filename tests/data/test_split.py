from grserve.data.split import leave_one_out


def test_leave_one_out_by_hand():
    split = leave_one_out({"a": [1, 2, 3, 4], "b": [7, 8], "c": [5, 6, 9]})
    assert split.train == {"a": [1, 2], "b": [7, 8], "c": [5]}
    assert [(e.user, e.history, e.target) for e in split.valid] == [("a", [1, 2], 3), ("c", [5], 6)]
    assert [(e.user, e.history, e.target) for e in split.test] == [("a", [1, 2, 3], 4), ("c", [5, 6], 9)]
