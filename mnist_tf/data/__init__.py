"""The data: MNIST sources and mirror, the tf.data pipeline, augmentation, user images."""
