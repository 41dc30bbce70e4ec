"""What the log says of the engine chosen (tasks/engines/engine.chosen_sentence): what was asked, what was chosen."""

from tasks.engines import engine

ROW = {"engine": "onnxruntime", "precision": "int8", "ms_per_image": 0.4, "agreement": 0.995, "images": 256}


def test_auto_says_fastest_and_int8_says_how_to_ask_for_fp32():
    sentence = engine.chosen_sentence(ROW, "auto", "auto")
    assert sentence.startswith("onnxruntime int8, the fastest that passed parity for this model (0.40 ms")
    assert "ask for `precision` fp32 to run it at full precision" in sentence  # the CLI says --precision


def test_an_engine_asked_for_is_not_called_the_fastest():
    sentence = engine.chosen_sentence(ROW, "onnxruntime", "auto")
    assert "engine onnxruntime as asked, at its fastest precision that passed parity" in sentence
    assert "the fastest that passed parity for this model" not in sentence
    precision_asked = engine.chosen_sentence({**ROW, "precision": "fp32"}, "auto", "fp32")
    assert "precision fp32 as asked, on the fastest engine that passed parity with it" in precision_asked
    assert "int8" not in precision_asked
