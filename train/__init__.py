"""Training: the U-Net builder, data, the tf.data pipeline, losses and the training CLI.

Importing `train` itself does not import TensorFlow; the submodules that need it do.
"""
