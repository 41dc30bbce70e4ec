"""The learning-rate range test's settings and their defaults (tasks/tune/lr_find.py runs it): here apart, so that the
command line reads them without importing Keras. Reads and writes nothing."""

MIN_RATE = 1e-6  # the first learning rate
MAX_RATE = 1.0  # the last learning rate (at most 10)
STEPS = 200  # batches, at most
