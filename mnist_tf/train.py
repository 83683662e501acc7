"""Command line: `python -m mnist_tf.train [--config=default | --flagfile=FILE] [--flags]`."""

from __future__ import annotations

import signal
import sys
import time

_PROCESS_START = time.time()

from absl import flags, logging  # noqa: E402

from mnist_tf import cli, memory, workdir  # noqa: E402  (cli sets TF's log level before TF loads)
from mnist_tf.config import CONFIGS_SUBDIR, TrainConfig, shipped_configs, train_flags  # noqa: E402
from mnist_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "config", "hidden_sizes", "epochs", "train_steps", "batch_size",
              "learning_rate", "lr_schedule", "dropout", "weight_decay", "seed", "data_dir", "plot")
# The absl definer of each `config.Flag.kind`.
_DEFINE = {"boolean": flags.DEFINE_boolean, "integer": flags.DEFINE_integer,
           "float": flags.DEFINE_float, "string": flags.DEFINE_string}


def define_train_flags() -> None:
    """Defines the training flags; called only by this entry point.

    One flag per `TrainConfig` field, from its declaration (mnist_tf/config.py),
    plus the flags that are not part of the run's configuration.
    """
    # Read by cli.parse_flags before absl parses (it becomes --flagfile=PATH).
    cli.define_shipped_config_flag(
        f"A shipped config by name ({', '.join(shipped_configs())}: "
        f"{CONFIGS_SUBDIR}/NAME.cfg), from any directory; like --flagfile, "
        "flags after it override its values (e.g. --config=default --epochs=3).")
    flags.DEFINE_string("workdir", "runs/default",
                        "Directory for checkpoints, summaries and results.json, relative to "
                        "the current directory (the shipped configs' runs/NAME too). A "
                        "workdir with a checkpoint is resumed.")
    cli.define_data_flags()
    flags.DEFINE_boolean("plot", False,
                         "After training, write curves.png and predictions.png into the "
                         "workdir (python -m mnist_tf.plot; needs matplotlib).")
    for flag in train_flags():
        _DEFINE[flag.kind](flag.name, flag.default, flag.help)
    cli.define_short_help(SHORT_HELP)


def config_from_flags() -> TrainConfig:
    """Builds the validated `TrainConfig` from the parsed flags.

    Raises:
        ConfigError: naming the offending flag.
    """
    return TrainConfig.from_flag_values({flag.name: FLAGS[flag.name].value
                                         for flag in train_flags()})


def main(argv: list[str]) -> None:
    """Validates the flags, then trains and evaluates."""
    # absl's INFO lines (TF's checkpoint internals) drown the progress output.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if FLAGS.config:  # Only on the command line: one inside a flagfile reaches absl as is.
        cli.fail(f"--config={FLAGS.config}: give --config on the command line; inside a "
                 "flagfile, use --flagfile=PATH")
    try:
        config = config_from_flags()
        memory.check(config)  # Before TensorFlow loads; the trainer checks again.
        if not FLAGS.workdir:
            raise UserError("--workdir: must not be empty")
        print(f"Workdir: {workdir.prepare(FLAGS.workdir)}", flush=True)
        # A contradicting resume is refused before TensorFlow loads (~5 s); the
        # trainer checks again, for library callers.
        workdir.check_resume(FLAGS.workdir, config)
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
        from mnist_tf.training import distribute, preemption

        try:
            with preemption.StopRequest() as stop:
                trainer.train_and_evaluate(
                    config, FLAGS.workdir, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                    allow_download=FLAGS.download, process_start=_PROCESS_START,
                    strategy=made["strategy"], stop_request=stop,
                )
        except preemption.Stopped as stopped:
            distribute.wait_for_every_worker(made["strategy"])  # They all stopped at one step.
            print(f"Stopped: {stopped}", flush=True)
            sys.exit(128 + stopped.signum)  # The shell's convention for "ended by a signal".
        distribute.wait_for_every_worker(made["strategy"])
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
