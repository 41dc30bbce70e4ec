

def test_a_row_is_captioned_by_its_class_or_its_labels():
    import numpy as np

    from tasks.train.augment_preview import row_label

    names = ["cat", "dog", "outdoor"]
    assert row_label(np.int32(1), names) == "dog"
    assert row_label(np.array([1.0, 0.0, 1.0], np.float32), names) == "cat;outdoor"
    assert row_label(np.zeros(3, np.float32), names) == "(none)"
