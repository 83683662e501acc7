"""The allowed values of settings whose code needs TensorFlow, without TensorFlow.

`mnist_tf.config` and the entry points check flags against these before
TensorFlow loads; the modules that act on a value (`training.distribute`,
`model.schedules`, `model.precision`, `devices`, `inference.evaluate`) import
them from here, so imports point down.
"""

import re

# --distribution: the tf.distribute strategy of the training loop.
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
# The most --cpu_replicas. Each logical CPU gets its own tf.data iterator, with
# an autotuner thread that --distribution's dataset cannot switch off; with many
# of them, deleting the iterators (at each epoch's end and at the run's end)
# stalls for minutes. Logical CPUs only emulate devices, so more would not
# train faster anyway.
MAX_CPU_REPLICAS = 8

# --lr_schedule.
LR_SCHEDULES = ("constant", "cosine")

# --precision, and the compute dtype each names.
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
PRECISIONS = tuple(COMPUTE_DTYPES)

# --device.
DEVICE_CHOICES = ("auto", "cpu", "gpu", "gpu:N")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|gpu|gpu:\d+)$")

# --split of `python -m mnist_tf.evaluate`: the held-out splits a checkpoint is
# evaluated on (validation is carved from train as the run's config says).
SPLITS = ("test", "validation")

# --keep_best: the validation metric that picks the best checkpoint ("none": off).
# The test split is never among them: it must not choose anything.
KEEP_BEST = ("none", "validation_accuracy", "validation_loss")

# --format of `python -m mnist_tf.export`: a SavedModel directory, or a LiteRT
# (TensorFlow Lite) flatbuffer.
FORMATS = ("saved_model", "tflite")

# --quantize of a --format=tflite export: float32 weights as trained ("none"),
# float16 weights, int8 weights with float activations ("dynamic"), or full
# integer arithmetic calibrated on training images ("int8").
QUANTIZE = ("none", "float16", "dynamic", "int8")

# --checkpoint of the tools (evaluate, predict, export, plot, serve) and
# `mnist_tf.load`: the newest rolling checkpoint, or the one --keep_best kept;
# any other value is a checkpoint prefix.
LATEST, BEST = "latest", "best"
