"""The training configuration: one frozen dataclass whose fields declare their flags."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import typing
from collections.abc import Callable, Mapping
from typing import NamedTuple

from mnist_tf.choices import (
    DEVICE_CHOICES,
    DEVICE_PATTERN,
    DISTRIBUTIONS,
    KEEP_BEST,
    LR_SCHEDULES,
    MAX_CPU_REPLICAS,
    PRECISIONS,
)
from mnist_tf.errors import UserError

# (Nothing above imports TensorFlow: the entry points build this config,
# rejecting bad flags, before TensorFlow loads.)
NAN_POLICIES = ("stop", "skip_step")

# What resuming a workdir may do with a setting (`Setting.on_resume`; checked by
# `mnist_tf.workdir.check_resume` against the workdir's config.json):
# FIXED: it shaped the steps taken so far (the weights, the data order, the
#   learning-rate curve); another value would give a run that no straight run
#   gives, so it must match.
FIXED = "fixed"
# FREE: it only decides how the steps run, are logged or are saved; the steps
#   stay bit-identical (or differ by float rounding) and checkpoints are
#   interchangeable, so it may change.
FREE = "free"
# RUN_LENGTH (--epochs, --train_steps): a longer run continues where it stopped,
#   exactly a straight run of the new length under --lr_schedule=constant; under
#   cosine the length sets the decay, so it must match there.
RUN_LENGTH = "run_length"
ON_RESUME = (FIXED, FREE, RUN_LENGTH)
BOUNDS = ("positive", "non_negative")
# The largest --seed: numpy's global seed (`trainer.set_seeds`) takes 32 bits;
# the TensorFlow generators and stateless shuffles seeded from it take more.
MAX_SEED = 2**32 - 1

# The shipped configs (`--config=NAME`, a flagfile each). They are package data,
# found beside this module however the package is installed (editable or not);
# `configs` at the repository root links here, for `--flagfile=configs/NAME.cfg`.
CONFIGS_SUBDIR = "configs"
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), CONFIGS_SUBDIR)
CONFIG_SUFFIX = ".cfg"


def shipped_configs() -> list[str]:
    """The names of the shipped configs (`default`, `fast`, ...), sorted."""
    return sorted(name[:-len(CONFIG_SUFFIX)] for name in os.listdir(CONFIGS_DIR)
                  if name.endswith(CONFIG_SUFFIX))


def shipped_config(name: str) -> str:
    """The path of the shipped config `name` (`default` or `default.cfg`), for `--config`.

    Raises:
        UserError: naming the shipped configs, if `name` is none of them.
    """
    stem = name[:-len(CONFIG_SUFFIX)] if name.endswith(CONFIG_SUFFIX) else name
    if stem not in shipped_configs():
        raise UserError(f"--config: no shipped config {name!r}; choose one of "
                        f"{', '.join(shipped_configs())}, or give a file with --flagfile=PATH")
    return os.path.join(CONFIGS_DIR, stem + CONFIG_SUFFIX)


class ConfigError(UserError):
    """An invalid configuration value.

    Attributes:
        field: the name of the offending field; entry points map it to the flag
            of the same name.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"--{field}: {message}")
        self.field = field


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """Parses a comma-separated list of hidden layer widths such as "256,128".

    An empty string means no hidden layer (a linear classifier).

    Raises:
        ConfigError: if an entry is not a positive integer.
    """
    text = text.strip()
    if not text:
        return ()
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise ConfigError(
                "hidden_sizes",
                f"{text!r} is not a comma-separated list of positive integers (e.g. 256,128)",
            )
        sizes.append(int(part))
    return tuple(sizes)


def parse_profile_steps(text: str) -> tuple[int, ...]:
    """Parses a profiler window "START,END" (global steps); "" means no profiling.

    Raises:
        ConfigError: unless the text is empty or two integers 0 <= START < END.
    """
    text = text.strip()
    if not text:
        return ()
    parts = [part.strip() for part in text.split(",")]
    try:
        start, end = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(
            "profile_steps", f"{text!r} is not two integers START,END (e.g. 100,110)"
        ) from None
    steps = (start, end)
    _check_profile_steps(steps)
    return steps


def _check_profile_steps(steps: tuple[int, ...]) -> None:
    if not steps:
        return
    if len(steps) != 2 or not all(isinstance(s, int) for s in steps):
        raise ConfigError("profile_steps", f"{steps} is not two integers START,END")
    start, end = steps
    if not 0 <= start < end:
        raise ConfigError(
            "profile_steps", f"needs 0 <= START < END, got {start},{end} (e.g. 100,110)"
        )


def _check_elastic(alpha: float, sigma: float) -> None:
    # The bounds keep the warp a distortion of the digit: a field of more than
    # half the image, or a Gaussian wider than it, destroys it.
    if alpha > 14.0 * 4:
        raise ConfigError("augment_elastic_alpha", f"must be at most 56 pixels, got {alpha}")
    if sigma > 14.0:
        raise ConfigError("augment_elastic_sigma", f"must be at most 14 pixels, got {sigma}")
    if alpha > 0.0 and sigma < 0.5:
        raise ConfigError("augment_elastic_sigma", f"must be at least 0.5 pixels with "
                          f"--augment_elastic_alpha={alpha}, got {sigma} (e.g. 4)")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A `TrainConfig` field's life outside Python: its flag, checks, resume rule, docs.

    Attributes:
        help: the help text of the field's flag, also its row of README.md.
        on_resume: FIXED, FREE or RUN_LENGTH (see their comments).
        hparam: whether it is logged as a TensorBoard HParam. Settings that can
            change what a run learns are, so runs sharing a --logdir compare
            side by side; logging-only ones would only add columns. Their
            column order: `hparam_names`.
        choices: the allowed values of a string setting (their spellings where
            `pattern` decides, e.g. gpu:N).
        pattern: a regex that valid values match, for choices with placeholders.
        parse: for a tuple field, the parser of its flag's text.
        bound: "positive", "non_negative" (finite, >= 0) or None.
    """

    help: str
    on_resume: str
    hparam: bool = False
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    parse: Callable[[str], tuple] | None = None
    bound: str | None = None


def setting(default, help: str, *, on_resume: str, hparam: bool = False,
            choices: tuple[str, ...] = (), pattern: re.Pattern | None = None,
            parse: Callable[[str], tuple] | None = None, bound: str | None = None):
    """Declares a `TrainConfig` field: its default and its `Setting` (metadata["setting"]).

    Args:
        default: the field's default value.
        help: see `Setting`; so are the keyword arguments.
        on_resume: FIXED, FREE or RUN_LENGTH.
        hparam: whether TensorBoard's HParams records it.
        choices: allowed values of a string setting.
        pattern: regex of valid values, where `choices` has placeholders.
        parse: parser of a tuple field's flag text.
        bound: "positive", "non_negative" or None.

    Returns:
        A `dataclasses.field`.
    """
    if on_resume not in ON_RESUME or bound not in (*BOUNDS, None):
        raise ValueError(f"on_resume={on_resume!r}, bound={bound!r}")  # A typo in this file.
    return dataclasses.field(default=default, metadata={"setting": Setting(
        help, on_resume, hparam, tuple(choices), pattern, parse, bound)})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Each field is one flag of `python -m mnist_tf.train` (same name), declared
    by `setting`: its help, checks and resume rule are derived from there.
    """

    # The architecture: the checkpoint's shapes.
    hidden_sizes: tuple[int, ...] = setting(
        (512, 256), "Comma-separated hidden layer widths, e.g. 512,256 (empty: no hidden "
        "layer, a linear classifier).",
        on_resume=FIXED, hparam=True, parse=parse_hidden_sizes)
    # The batches, and with the split and seed the data order a resume rebuilds.
    batch_size: int = setting(
        128, "Training batch size.", on_resume=FIXED, hparam=True, bound="positive")
    epochs: int = setting(
        10, "Epochs to train (see --train_steps).",
        on_resume=RUN_LENGTH, hparam=True, bound="positive")
    train_steps: int = setting(
        0, "Total optimizer steps; overrides --epochs when > 0. A resumed run trains to this "
        "total; a new one (or new --epochs) is refused under --lr_schedule=cosine, whose "
        "decay the run's length sets.",
        on_resume=RUN_LENGTH, hparam=True, bound="non_negative")
    # The learning-rate curve and the loss: the recipe of every step.
    learning_rate: float = setting(
        1e-3, "Adam's (peak) learning rate.", on_resume=FIXED, hparam=True, bound="positive")
    lr_schedule: str = setting(
        "constant", f"Learning-rate schedule: {' or '.join(LR_SCHEDULES)}.",
        on_resume=FIXED, hparam=True, choices=LR_SCHEDULES)
    warmup_steps: int = setting(
        0, "Steps of linear learning-rate warmup.",
        on_resume=FIXED, hparam=True, bound="non_negative")
    weight_decay: float = setting(
        0.0, "L2 coefficient: loss += weight_decay * sum(kernel**2) / 2.",
        on_resume=FIXED, hparam=True, bound="non_negative")
    # Scales a step's update down when its gradients are large.
    clip_grad_norm: float = setting(
        0.0, "Clip the gradients by their global norm to at most this (0: off): after float16 "
        "loss scaling is undone and, under --distribution, after the all-reduce, so every "
        "replica clips alike. The global norm is a TensorBoard scalar either way "
        "(train/grad_norm); with clipping, so is the fraction of clipped steps.",
        on_resume=FIXED, hparam=True, bound="non_negative")
    dropout: float = setting(
        0.0, "Dropout rate after each hidden layer, in [0, 1).", on_resume=FIXED, hparam=True)
    ema_decay: float = setting(
        0.0, "Weight averaging: keep an exponential moving average of the weights with this "
        "decay, in [0, 1) (e.g. 0.999; 0: off). When on, evaluation, results.json, evaluate, "
        "predict, export and the Python API use the averaged weights, and say so.",
        on_resume=FIXED, hparam=True)
    deskew: bool = setting(
        False, "Deskew each digit before the first layer: undo its slant (the shear that "
        "its pixel moments give) and centre it, in training, evaluation, predict, export and "
        "the Python API alike (mnist_tf/model/deskew.py; no variables).",
        on_resume=FIXED, hparam=True)
    # The training split (a resume must see the same examples) and the seed of
    # the weights, the data order and the dropout masks.
    validation_size: int = setting(
        5000, "Examples carved from the end of the train split for validation (0: none).",
        on_resume=FIXED, hparam=True, bound="non_negative")
    seed: int = setting(
        0, "Seed of weights, data order and dropout (0 to 2**32 - 1).",
        on_resume=FIXED, hparam=True, bound="non_negative")
    # Which kernels run, not what they compute.
    deterministic: bool = setting(
        False, "Deterministic ops (tf.config.experimental.enable_op_determinism): two runs "
        "with one seed give identical parameters.", on_resume=FREE, hparam=True)
    # Logging, saving and evaluation: the training steps are bit-identical whatever they are.
    log_every_steps: int = setting(
        100, "Steps between progress lines and train summaries.",
        on_resume=FREE, bound="positive")
    checkpoint_every_steps: int = setting(
        1000, "Steps between checkpoints (one is always saved at the end).",
        on_resume=FREE, bound="positive")
    keep_checkpoints: int = setting(
        3, "How many recent checkpoints to keep.", on_resume=FREE, bound="positive")
    # The same step compiled by XLA (results differ by float rounding at most).
    jit_compile: bool = setting(
        True, "Compile the train and eval steps with XLA (--nojit_compile for op-by-op "
        "debugging and profiles). Under --distribution the step runs without XLA, said in "
        "one line.", on_resume=FREE, hparam=True)
    eval_batch_size: int = setting(
        1000, "Batch size of evaluation.", on_resume=FREE, bound="positive")
    histogram_every_steps: int = setting(
        500, "Steps between TensorBoard histograms of every weight and of the gradients "
        "applied at that step (weights/<layer>/kernel, gradients/<layer>/kernel, ...; also "
        "at the last step). 0: none.", on_resume=FREE, bound="non_negative")
    profile_steps: tuple[int, ...] = setting(
        (), "START,END: run TensorFlow's profiler while the global step (as in the progress "
        "lines) goes from START to END, i.e. over END-START training steps (e.g. 100,110; "
        "needs 0 <= START < END), and write the trace to "
        "WORKDIR/train/plugins/profile/ for TensorBoard's Profile tab (pip install "
        "tensorboard-plugin-profile). Empty: off.", on_resume=FREE, parse=parse_profile_steps)
    # How batches reach the step and how many steps a call runs: the same
    # batches and arithmetic either way (tested bit-identical).
    data_on_device: bool = setting(
        False, "Build each epoch's order as a tensor and index it inside the XLA-compiled "
        "loop, instead of streaming each call's batch indices through tf.data (the default); "
        "either way the loop gathers the batches from the training split held on the device "
        "(the GPU if there is one), in the order of a stateless shuffle of (seed, epoch). "
        "Under --distribution, tf.data batches are used, said in one line.", on_resume=FREE)
    steps_per_call: int = setting(
        50, "Optimizer steps per traced call (1: one step per call, for debugging); calls "
        "stop early wherever a log line, checkpoint or epoch end is due. Under "
        "--distribution, one step per call, said in one line.",
        on_resume=FREE, bound="positive")
    # Random affine warps of the training images (mnist_tf/data/augment.py): the
    # data the run learns from.
    augment_rotation_degrees: float = setting(
        0.0, "Augmentation: rotate each training image by a random angle in [-this, this] "
        "degrees (0: no rotation).", on_resume=FIXED, hparam=True, bound="non_negative")
    augment_scale: float = setting(
        0.0, "Augmentation: scale each training image by a random factor in "
        "[1-this, 1+this] (0: no scaling).", on_resume=FIXED, hparam=True)
    augment_shift_pixels: float = setting(
        0.0, "Augmentation: shift each training image by a random offset in [-this, this] "
        "pixels in x and y (0: no shift).", on_resume=FIXED, hparam=True, bound="non_negative")
    augment_elastic_alpha: float = setting(
        0.0, "Augmentation: elastic distortion (Simard et al. 2003), the scale in pixels of "
        "each training image's random displacement field (0: none; needs "
        "--augment_elastic_sigma). Joined with the affine warp in one resampling.",
        on_resume=FIXED, hparam=True, bound="non_negative")
    augment_elastic_sigma: float = setting(
        0.0, "Augmentation: the standard deviation in pixels of the Gaussian that smooths the "
        "elastic displacement field (e.g. 4 with --augment_elastic_alpha=34, the paper's). "
        "With all augmentation settings 0 the images are not augmented.",
        on_resume=FIXED, hparam=True, bound="non_negative")
    # Evaluation only.
    eval_every_epochs: int = setting(
        1, "Evaluate (validation and test) at the end of every this many epochs, and always "
        "after the last step. A wide model's evaluation costs a tenth of an epoch, so long "
        "runs save that time by evaluating less often.", on_resume=FREE, bound="positive")
    eval_every_steps: int = setting(
        0, "Also evaluate (validation and test) every this many steps; 0: only at the ends "
        "of epochs (--eval_every_epochs). These evaluations write scalars only; the test "
        "split's confusion matrix and misclassified digits are drawn at epoch ends.",
        on_resume=FREE, bound="non_negative")
    stop_at_test_accuracy: float = setting(
        0.0, "Stop as soon as an evaluation's test accuracy reaches this fraction (e.g. "
        "0.98) and record when in results.json (target_reached); for time-to-accuracy "
        "benchmarks. 0: train to the end.", on_resume=FREE)
    # Which checkpoint is the best, and whether a run ends when it stops improving.
    keep_best: str = setting(
        "none", f"{' | '.join(KEEP_BEST)}: keep the checkpoint with the best value of this "
        "validation metric apart from the rolling ones (WORKDIR/checkpoints/best/), with its "
        "value and step in results.json; evaluate, predict, export and plot take "
        "--checkpoint=best. Needs --validation_size > 0: the test split never chooses.",
        on_resume=FIXED, choices=KEEP_BEST)
    early_stopping_patience: int = setting(
        0, "Stop after this many evaluations in a row without a new best --keep_best value "
        "(0: train to the end). The run is then complete, as if it had reached its length.",
        on_resume=FREE, bound="non_negative")
    # The compute dtype shapes every step's arithmetic (and float16's loss scale
    # means nothing to the other precisions).
    precision: str = setting(
        "float32", f"Compute precision: {' | '.join(PRECISIONS)}. The mixed ones compute the "
        "layers in bfloat16/float16; weights, Adam slots, softmax and loss stay float32; "
        "mixed_float16 adds dynamic loss scaling.",
        on_resume=FIXED, hparam=True, choices=PRECISIONS)
    # Where and how the steps run. Checkpoints hold one copy of every variable,
    # and --batch_size is the global batch, so they move between devices and
    # strategies; TF32 changes float rounding only.
    device: str = setting(
        "auto", "auto (the first GPU if TensorFlow sees one, else the CPU) | cpu | gpu | "
        "gpu:N. Asking for a GPU that is not there is an error. Not with --distribution, "
        "whose strategy places the replicas itself.",
        on_resume=FREE, choices=DEVICE_CHOICES, pattern=DEVICE_PATTERN)
    enable_tensor_float_32: bool = setting(
        False, "Allow TF32 matmuls on GPUs that have them (Ampere and newer): faster, with a "
        "10-bit mantissa. Off by default, so float32 means float32; no effect on CPUs.",
        on_resume=FREE)
    distribution: str = setting(
        "none", f"{' | '.join(DISTRIBUTIONS)}: tf.distribute strategy of the training loop. "
        "mirrored: MirroredStrategy over this machine's GPUs (or --cpu_replicas logical "
        "CPUs); multi_worker: MultiWorkerMirroredStrategy, one process per worker, each "
        "given its role by TF_CONFIG. --batch_size is the global batch.",
        on_resume=FREE, choices=DISTRIBUTIONS)
    cpu_replicas: int = setting(
        1, "With --distribution=mirrored and no GPU: split the CPU into this many logical "
        f"devices (replicas, at most {MAX_CPU_REPLICAS}), e.g. to try mirrored training on a "
        "laptop.",
        on_resume=FREE, bound="positive")
    # What happens after a non-finite step; the steps before it are the same.
    nan_policy: str = setting(
        "stop", f"{' | '.join(NAN_POLICIES)}: what a step whose loss or gradients are not "
        "finite does. stop: end the run with an error naming the step, keeping the last good "
        "checkpoint; skip_step: skip such updates (counted in results.json and TensorBoard) "
        "and go on.", on_resume=FREE, choices=NAN_POLICIES)

    def __post_init__(self):
        # Each value as its declared type: a config read back from config.json
        # holds lists, which become tuples (so the frozen dataclass stays
        # hashable and equal to the flag-built one), and ints given for floats
        # become floats; anything else of the wrong type is refused here,
        # before a run writes config.json or TensorFlow meets it.
        for name, declared_type in field_types().items():
            object.__setattr__(self, name, _as_declared_type(name, getattr(self, name),
                                                             declared_type))
        for name, declared in settings().items():
            _check_setting(name, getattr(self, name), declared)
        self._check_ranges()
        self._check_combinations()

    def _check_ranges(self) -> None:
        for size in self.hidden_sizes:
            if size <= 0:
                raise ConfigError("hidden_sizes", f"sizes must be positive, got {size}")
        _check_profile_steps(self.profile_steps)
        if self.seed > MAX_SEED:
            raise ConfigError("seed", f"must be at most {MAX_SEED} (2**32 - 1, the range numpy's "
                              f"seed takes), got {self.seed}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.augment_scale < 1.0:  # Also rejects NaN.
            raise ConfigError("augment_scale", f"must be in [0, 1), got {self.augment_scale}")
        if self.augment_rotation_degrees > 180.0:
            raise ConfigError("augment_rotation_degrees",
                              f"must be at most 180, got {self.augment_rotation_degrees}")
        if self.augment_shift_pixels > 14.0:
            raise ConfigError("augment_shift_pixels",
                              f"must be at most 14 (half the image), got "
                              f"{self.augment_shift_pixels}")
        if not 0.0 <= self.ema_decay < 1.0:  # Also rejects NaN.
            raise ConfigError("ema_decay", f"must be in [0, 1) (e.g. 0.999; 0: off), got "
                              f"{self.ema_decay}")
        _check_elastic(self.augment_elastic_alpha, self.augment_elastic_sigma)
        if not 0.0 <= self.stop_at_test_accuracy <= 1.0:
            raise ConfigError("stop_at_test_accuracy",
                              f"must be a fraction in [0, 1] (e.g. 0.98), got "
                              f"{self.stop_at_test_accuracy}")

    def _check_combinations(self) -> None:
        if self.distribution != "none" and self.device != "auto":
            # The strategy picks its devices (every GPU, or --cpu_replicas CPUs);
            # a --device would be silently ignored.
            raise ConfigError("device", f"{self.device} cannot be combined with --distribution="
                              f"{self.distribution}, whose strategy places the replicas itself; "
                              "drop --device (CUDA_VISIBLE_DEVICES picks the GPUs), or use "
                              "--distribution=none")
        if self.cpu_replicas > 1 and self.distribution != "mirrored":
            raise ConfigError("cpu_replicas", f"{self.cpu_replicas} needs "
                              "--distribution=mirrored (it splits the CPU into replicas)")
        if self.cpu_replicas > MAX_CPU_REPLICAS:
            raise ConfigError("cpu_replicas", f"{self.cpu_replicas} is more than "
                              f"{MAX_CPU_REPLICAS}, the most that runs (with more, deleting the "
                              "replicas' tf.data iterators stalls for minutes); use "
                              f"--cpu_replicas={MAX_CPU_REPLICAS} or fewer")
        if self.keep_best != "none" and not self.validation_size:
            raise ConfigError("keep_best", f"{self.keep_best} needs a validation split (the test "
                              "split never chooses a checkpoint); pass --validation_size=5000")
        if self.early_stopping_patience and self.keep_best == "none":
            raise ConfigError("early_stopping_patience", f"{self.early_stopping_patience} needs "
                              "a metric to watch; pass --keep_best=validation_loss (or "
                              "validation_accuracy)")

    @classmethod
    def from_flag_values(cls, values: Mapping[str, object]) -> TrainConfig:
        """Builds the config from flag values by name (tuple fields as their flag's text).

        Raises:
            ConfigError: naming the offending flag.
        """
        return cls(**{name: declared.parse(values[name]) if declared.parse else values[name]
                      for name, declared in settings().items()})

    @property
    def augments(self) -> bool:
        """Whether the training images are randomly warped."""
        return any((self.augment_rotation_degrees, self.augment_scale,
                    self.augment_shift_pixels, self.augment_elastic_alpha))

    @property
    def weights_kind(self) -> str:
        """"averaged" with --ema_decay (evaluation and inference use the EMA), else "trained"."""
        return "averaged" if self.ema_decay else "trained"

    @property
    def weights_description(self) -> str:
        """What every tool prints about the weights it uses.

        e.g. "the averaged weights (EMA, decay 0.999)" or "the trained weights".
        """
        if self.ema_decay:
            return f"the averaged weights (EMA, decay {self.ema_decay:g})"
        return "the trained weights"

    def to_dict(self) -> dict:
        """Returns the configuration as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        values["profile_steps"] = list(self.profile_steps)
        return values

    def hparams(self) -> dict[str, bool | int | float | str]:
        """Returns the settings declared `hparam=True` as TensorBoard HParams values.

        `hidden_sizes` becomes its flag spelling ("512,256"; "none" for a linear
        model), since HParams values are scalars.
        """
        values = {name: getattr(self, name)
                  for name, declared in settings().items() if declared.hparam}
        values["hidden_sizes"] = ",".join(map(str, self.hidden_sizes)) or "none"
        return values


def settings() -> dict[str, Setting]:
    """Returns every `TrainConfig` field's `Setting`, by name, in declaration order."""
    return {field.name: field.metadata["setting"] for field in dataclasses.fields(TrainConfig)}


# The HParams columns TensorBoard shows first, in this order: what runs most
# often differ in. Its table ticks only its first five columns; the other
# `hparam=True` settings follow in field order, to be ticked by hand.
LEADING_HPARAMS = ("hidden_sizes", "learning_rate", "lr_schedule", "dropout", "epochs",
                   "batch_size", "precision")


def hparam_names() -> list[str]:
    """Returns the settings declared `hparam=True` in HParams column order.

    `LEADING_HPARAMS` first, then the others in field order.

    Raises:
        ValueError: if `LEADING_HPARAMS` names a setting that is not an hparam.
    """
    declared = [name for name, setting in settings().items() if setting.hparam]
    unknown = sorted(set(LEADING_HPARAMS) - set(declared))
    if unknown:
        raise ValueError(f"LEADING_HPARAMS names {unknown}, not hparams")  # A typo in this file.
    return [*LEADING_HPARAMS, *(name for name in declared if name not in LEADING_HPARAMS)]


@functools.cache
def field_types() -> dict[str, type]:
    """Returns every `TrainConfig` field's declared type, by name, in declaration order.

    The annotations are the one declaration of the types: the values are
    checked against them (`TrainConfig.__post_init__`) and the flags' kinds
    derived from them (`train_flags`). E.g. `int`, `float`, `tuple[int, ...]`.
    """
    hints = typing.get_type_hints(TrainConfig)  # The annotations are strings (`__future__`).
    return {field.name: hints[field.name] for field in dataclasses.fields(TrainConfig)}


# How messages name each type, for the command line and Python alike.
_TYPE_WORDS = {bool: "true or false (a bool)", int: "an integer", float: "a number",
               str: "a string"}
_ITEM_WORDS = {int: "integers"}  # The item types of tuple fields.


def _as_declared_type(name: str, value, declared_type):
    """Returns `value` as the field's declared type, or raises `ConfigError` naming both.

    A bool is not an integer (True would be a batch of 1), an integer is
    accepted for a float and stored as one, numpy's scalars count as Python's,
    and a tuple field takes a tuple or list (config.json's) of its items' type.
    """
    if typing.get_origin(declared_type) is tuple:
        item_type = typing.get_args(declared_type)[0]
        items = ([_as_scalar(item, item_type) for item in value]
                 if isinstance(value, (tuple, list)) else [None])
        if None not in items:
            return tuple(items)
        expected = f"a tuple of {_ITEM_WORDS[item_type]}"
    else:
        converted = _as_scalar(value, declared_type)
        if converted is not None:
            return converted
        expected = _TYPE_WORDS[declared_type]
    kind = type(value)  # Named with its module unless built in: numpy.float64, not float64.
    kind_name = (kind.__name__ if kind.__module__ == "builtins"
                 else f"{kind.__module__}.{kind.__name__}")
    raise ConfigError(name, f"must be {expected}, got {value!r} ({kind_name})")


def _as_scalar(value, declared_type):
    """`value` as `declared_type` (bool, int, float or str), or None if it is not one."""
    if declared_type is bool:
        if getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy's bool.
            return bool(value)
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):  # A number to Python, a mistake here.
        return None
    if declared_type is int:
        return int(value) if isinstance(value, numbers.Integral) else None
    if declared_type is float:
        return float(value) if isinstance(value, numbers.Real) else None
    return value if isinstance(value, declared_type) else None


def _check_setting(name: str, value, declared: Setting) -> None:
    """Checks what a field's `Setting` declares: its bound and its choices."""
    if declared.bound == "positive" and not (value > 0 and math.isfinite(value)):
        raise ConfigError(name, f"must be positive, got {value}")
    if declared.bound == "non_negative" and not (value >= 0 and math.isfinite(value)):
        raise ConfigError(name, f"must be a finite number >= 0, got {value}")  # NaN too.
    if declared.pattern is not None:
        if not (isinstance(value, str) and declared.pattern.match(value)):
            raise ConfigError(name, f"{value!r} is not one of {', '.join(declared.choices)}")
    elif declared.choices and value not in declared.choices:
        raise ConfigError(name, f"unknown {name.replace('_', ' ')} {value!r}; choose one of "
                          f"{', '.join(declared.choices)}")


class Flag(NamedTuple):
    """The command-line flag of a `TrainConfig` field.

    Attributes:
        name: the flag's (and field's) name.
        kind: "boolean", "integer", "float" or "string": the `flags.DEFINE_*` to use.
        default: the flag's default (a tuple field's as its text).
        help: the flag's help.
        setting: the field's `Setting`.
    """

    name: str
    kind: str
    default: bool | int | float | str
    help: str
    setting: Setting


_FLAG_KINDS = {"bool": "boolean", "int": "integer", "float": "float", "str": "string"}


def train_flags() -> list[Flag]:
    """Returns the flag of every `TrainConfig` field, in declaration order."""
    flags = []
    for field in dataclasses.fields(TrainConfig):
        declared = field.metadata["setting"]
        if declared.parse is not None:  # A tuple, spelled as text on the command line.
            kind, default = "string", flag_text(field.default)
        else:
            kind, default = _FLAG_KINDS[field_types()[field.name].__name__], field.default
        flags.append(Flag(field.name, kind, default, declared.help, declared))
    return flags


def flag_text(value) -> str:
    """Spells a setting's value as on the command line: `--name=TEXT`."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_ON_RESUME_WORDS = {FIXED: "must match", FREE: "may change",
                    RUN_LENGTH: "may change, except under `--lr_schedule=cosine`"}


def markdown_default(value) -> str:
    """A flag's default as README.md's flag tables show it."""
    if value is None:
        return "—"
    text = flag_text(value)
    return f"`{text}`" if text else '`""`'


def flag_table_markdown() -> str:
    """Returns README.md's table of the training settings, derived from their `Setting`s.

    tests/test_config.py checks that README.md holds it verbatim; after changing
    a setting, paste the output of
    `python -c "from mnist_tf import config; print(config.flag_table_markdown())"`.
    """
    lines = ["| flag | default | on resume | meaning |", "| --- | --- | --- | --- |"]
    for flag in train_flags():
        name = f"--[no]{flag.name}" if flag.kind == "boolean" else f"--{flag.name}"
        # Escape what Markdown would read as a cell border, emphasis or an HTML tag.
        meaning = flag.help.replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")
        lines.append(f"| `{name}` | {markdown_default(flag.default)} | "
                     f"{_ON_RESUME_WORDS[flag.setting.on_resume]} | {meaning} |")
    return "\n".join(lines)
