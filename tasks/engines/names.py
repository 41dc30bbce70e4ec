"""The engines that can run a model and the precisions they run at, by name: the one list that the engine registry
(tasks/engines/engine.py), params.yaml's models and the `imgpipe` command read. Imports nothing; reads nothing."""

AUTO = "auto"  # choose the engine (or precision) from what train measured; see tasks/engines/engine.py
ENGINES = ("keras", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
