"""Command line: `python -m mnist_tf.train [--flagfile=configs/default.cfg] [--flags]`."""

from __future__ import annotations

import signal
import sys
import time

_PROCESS_START = time.time()

from absl import flags, logging  # noqa: E402

from mnist_tf import cli, files  # noqa: E402  (cli sets TF's log level before TF loads)
from mnist_tf.config import (  # noqa: E402
    DISTRIBUTIONS,
    LR_SCHEDULES,
    NAN_POLICIES,
    PRECISIONS,
    TrainConfig,
    parse_hidden_sizes,
    parse_profile_steps,
)
from mnist_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
_DEFAULTS = TrainConfig()


def define_train_flags() -> None:
    """Defines the training flags; called only by this entry point."""
    flags.DEFINE_string("workdir", "runs/default",
                        "Directory for checkpoints, summaries and results.json. A workdir "
                        "with a checkpoint is resumed.")
    cli.define_data_flags()
    flags.DEFINE_string("hidden_sizes", ",".join(map(str, _DEFAULTS.hidden_sizes)),
                        "Comma-separated hidden layer widths, e.g. 512,256.")
    flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Training batch size.")
    flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Epochs to train (see --train_steps).")
    flags.DEFINE_integer("train_steps", _DEFAULTS.train_steps,
                         "Total optimizer steps; overrides --epochs when > 0. A resumed run "
                         "continues to the same total.")
    flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam's (peak) learning rate.")
    flags.DEFINE_string("lr_schedule", _DEFAULTS.lr_schedule,
                        f"Learning-rate schedule: {' or '.join(LR_SCHEDULES)}.")
    flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps,
                         "Steps of linear learning-rate warmup.")
    flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay,
                       "L2 coefficient: loss += weight_decay * sum(kernel**2) / 2.")
    flags.DEFINE_float("dropout", _DEFAULTS.dropout,
                       "Dropout rate after each hidden layer, in [0, 1).")
    flags.DEFINE_integer("validation_size", _DEFAULTS.validation_size,
                         "Examples carved from the end of the train split for validation "
                         "(0: none).")
    flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of weights, data order and dropout.")
    flags.DEFINE_boolean("deterministic", _DEFAULTS.deterministic,
                         "Deterministic ops (tf.config.experimental.enable_op_determinism): "
                         "two runs with one seed give identical parameters.")
    flags.DEFINE_integer("log_every_steps", _DEFAULTS.log_every_steps,
                         "Steps between progress lines and train summaries.")
    flags.DEFINE_integer("checkpoint_every_steps", _DEFAULTS.checkpoint_every_steps,
                         "Steps between checkpoints (one is always saved at the end).")
    flags.DEFINE_integer("keep_checkpoints", _DEFAULTS.keep_checkpoints,
                         "How many recent checkpoints to keep.")
    flags.DEFINE_boolean("jit_compile", _DEFAULTS.jit_compile,
                         "Compile the train and eval steps with XLA.")
    flags.DEFINE_integer("eval_batch_size", _DEFAULTS.eval_batch_size,
                         "Batch size of evaluation.")
    flags.DEFINE_integer("histogram_every_steps", _DEFAULTS.histogram_every_steps,
                         "Steps between TensorBoard histograms of every weight and of the "
                         "gradients applied at that step (weights/<layer>/kernel, "
                         "gradients/<layer>/kernel, ...; also at the last step). 0: none.")
    flags.DEFINE_boolean("plot", False,
                         "After training, write curves.png and predictions.png into the "
                         "workdir (python -m mnist_tf.plot; needs matplotlib).")
    flags.DEFINE_boolean("data_on_device", _DEFAULTS.data_on_device,
                         "Hold the training split as tensors (on the GPU if there is one) and "
                         "index each batch from them instead of streaming tf.data batches; "
                         "each epoch's order is a stateless shuffle of (seed, epoch).")
    flags.DEFINE_integer("steps_per_call", _DEFAULTS.steps_per_call,
                         "Optimizer steps per traced call (needs --data_on_device); calls "
                         "stop early wherever a log line, checkpoint or epoch end is due.")
    flags.DEFINE_float("augment_rotation_degrees", _DEFAULTS.augment_rotation_degrees,
                       "Augmentation: rotate each training image by a random angle in "
                       "[-this, this] degrees (0: no rotation).")
    flags.DEFINE_float("augment_scale", _DEFAULTS.augment_scale,
                       "Augmentation: scale each training image by a random factor in "
                       "[1-this, 1+this] (0: no scaling).")
    flags.DEFINE_float("augment_shift_pixels", _DEFAULTS.augment_shift_pixels,
                       "Augmentation: shift each training image by a random offset in "
                       "[-this, this] pixels in x and y (0: no shift). With all three 0 the "
                       "images are not augmented.")
    flags.DEFINE_integer("eval_every_steps", _DEFAULTS.eval_every_steps,
                         "Also evaluate (validation and test) every this many steps; "
                         "0: only at the end of each epoch.")
    flags.DEFINE_float("stop_at_test_accuracy", _DEFAULTS.stop_at_test_accuracy,
                       "Stop as soon as an evaluation's test accuracy reaches this fraction "
                       "(e.g. 0.98) and record when in results.json (target_reached); for "
                       "time-to-accuracy benchmarks. 0: train to the end.")
    flags.DEFINE_string("precision", _DEFAULTS.precision,
                        f"Compute precision: {' | '.join(PRECISIONS)}. The mixed ones compute "
                        "the layers in bfloat16/float16; weights, Adam slots, softmax and loss "
                        "stay float32; mixed_float16 adds dynamic loss scaling.")
    flags.DEFINE_string("device", _DEFAULTS.device,
                        "auto (the first GPU if TensorFlow sees one, else the CPU) | cpu | gpu | "
                        "gpu:N. Asking for a GPU that is not there is an error.")
    flags.DEFINE_boolean("enable_tensor_float_32", _DEFAULTS.enable_tensor_float_32,
                         "Allow TF32 matmuls on GPUs that have them (Ampere and newer): faster, "
                         "with a 10-bit mantissa. Off by default, so float32 means float32; "
                         "no effect on CPUs.")
    flags.DEFINE_string("distribution", _DEFAULTS.distribution,
                        f"{' | '.join(DISTRIBUTIONS)}: tf.distribute strategy of the training "
                        "loop. mirrored: MirroredStrategy over this machine's GPUs (or "
                        "--cpu_replicas logical CPUs); multi_worker: "
                        "MultiWorkerMirroredStrategy, one process per worker, each given its "
                        "role by TF_CONFIG. --batch_size is the global batch.")
    flags.DEFINE_integer("cpu_replicas", _DEFAULTS.cpu_replicas,
                         "With --distribution=mirrored and no GPU: split the CPU into this many "
                         "logical devices (replicas), e.g. to try mirrored training on a laptop.")
    flags.DEFINE_string("nan_policy", _DEFAULTS.nan_policy,
                        f"{' | '.join(NAN_POLICIES)}: what a non-finite loss does. stop: end "
                        "the run with an error naming the step, keeping the last good "
                        "checkpoint; skip_step: skip updates whose gradients are not finite "
                        "(counted in results.json and TensorBoard) and go on.")
    flags.DEFINE_string("profile_steps", "",
                        "START,END: run TensorFlow's profiler while the global step (as in "
                        "the progress lines) goes from START to END, i.e. over END-START "
                        "training steps (e.g. 100,110; needs 0 <= START < END), and write the "
                        "trace to WORKDIR/summaries/train/plugins/profile/ for TensorBoard's "
                        "Profile tab (pip install tensorboard-plugin-profile). Empty: off.")


def config_from_flags() -> TrainConfig:
    """Builds the validated `TrainConfig` from the parsed flags.

    Raises:
        ConfigError: naming the offending flag.
    """
    return TrainConfig(
        hidden_sizes=parse_hidden_sizes(FLAGS.hidden_sizes),
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        train_steps=FLAGS.train_steps,
        learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
        warmup_steps=FLAGS.warmup_steps,
        weight_decay=FLAGS.weight_decay,
        dropout=FLAGS.dropout,
        validation_size=FLAGS.validation_size,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        log_every_steps=FLAGS.log_every_steps,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints,
        jit_compile=FLAGS.jit_compile,
        eval_batch_size=FLAGS.eval_batch_size,
        histogram_every_steps=FLAGS.histogram_every_steps,
        profile_steps=parse_profile_steps(FLAGS.profile_steps),
        data_on_device=FLAGS.data_on_device,
        steps_per_call=FLAGS.steps_per_call,
        augment_rotation_degrees=FLAGS.augment_rotation_degrees,
        augment_scale=FLAGS.augment_scale,
        augment_shift_pixels=FLAGS.augment_shift_pixels,
        eval_every_steps=FLAGS.eval_every_steps,
        precision=FLAGS.precision,
        device=FLAGS.device,
        enable_tensor_float_32=FLAGS.enable_tensor_float_32,
        distribution=FLAGS.distribution,
        cpu_replicas=FLAGS.cpu_replicas,
        nan_policy=FLAGS.nan_policy,
        stop_at_test_accuracy=FLAGS.stop_at_test_accuracy,
    )


def main(argv: list[str]) -> None:
    """Validates the flags, then trains and evaluates."""
    # absl's INFO lines (TF's checkpoint internals) drown the progress output.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        config = config_from_flags()
        if not FLAGS.workdir:
            raise UserError("--workdir: must not be empty")
        files.prepare_workdir(FLAGS.workdir)
        # Imported here so that bad flags are rejected before TensorFlow loads.
        made = {}

        def make_strategy():  # Before TensorFlow's runtime starts (see distribute.py).
            from mnist_tf.training import distribute

            made["strategy"] = distribute.make_strategy(config.distribution, config.cpu_replicas)

        cli.import_tensorflow_quietly(setup=make_strategy)
        from mnist_tf.training import trainer

        if FLAGS.plot:
            from mnist_tf import plot

            plot.import_pyplot()  # A missing matplotlib is reported before training.
        from mnist_tf.training import preemption

        try:
            with preemption.StopRequest() as stop:
                trainer.train_and_evaluate(
                    config, FLAGS.workdir, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                    allow_download=FLAGS.download, process_start=_PROCESS_START,
                    strategy=made["strategy"], stop_request=stop,
                )
        except preemption.Stopped as stopped:
            print(f"Stopped: {stopped}", flush=True)
            sys.exit(128 + stopped.signum)  # The shell's convention for "ended by a signal".
        if FLAGS.plot:
            plot.plot_workdir(FLAGS.workdir, data_dir=FLAGS.data_dir,
                              allow_download=FLAGS.download)
    except UserError as e:
        cli.fail(str(e))
    except KeyboardInterrupt:
        print("error: aborted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    define_train_flags()
    cli.run(main)
