"""The tf.data builders over the processed shards: uint8 batches, order kept for evaluation, augmentation reproducible."""

import numpy as np
import tensorflow as tf

from tasks import training_batches
from tasks.ingest import stage as ingest
from tasks.preprocess import stage as preprocess


def test_training_batches_are_uint8_and_augmented_reproducibly(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    size = config.preprocess.image_size

    def first_batch():
        tf.random.set_seed(0)
        data = training_batches.split_dataset(paths.processed, "train", size, 4, training=True,
                                              augment=config.preprocess.augment, seed=3)
        return next(iter(data))

    images_batch, labels_batch = first_batch()
    assert images_batch.dtype == tf.uint8 and images_batch.shape[1:] == (size, size, 3)
    assert labels_batch.dtype == tf.int32
    again, _ = first_batch()
    np.testing.assert_array_equal(images_batch.numpy(), again.numpy())
