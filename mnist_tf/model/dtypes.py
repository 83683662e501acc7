"""The --precision values and the compute dtype each names, without TensorFlow.

`mnist_tf.config` checks --precision against these before TensorFlow loads;
`mnist_tf.model.precision` turns them into TensorFlow dtypes and loss scaling.
"""

COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
PRECISIONS = tuple(COMPUTE_DTYPES)
