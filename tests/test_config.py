import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_tf import config
from mnist_tf.config import (
    ON_RESUME,
    ConfigError,
    TrainConfig,
    parse_hidden_sizes,
    settings,
    train_flags,
)

REPO = Path(__file__).resolve().parents[1]


def test_parse_hidden_sizes():
    assert parse_hidden_sizes("512,256") == (512, 256)
    assert parse_hidden_sizes(" 64 , 32 ") == (64, 32)
    assert parse_hidden_sizes("") == ()


@pytest.mark.parametrize("text", ["abc", "512,,256", "512,-1", "0", "1.5", "512;256"])
def test_parse_hidden_sizes_rejects_malformed(text):
    with pytest.raises(ConfigError) as info:
        parse_hidden_sizes(text)
    assert info.value.field == "hidden_sizes"
    assert str(info.value).startswith("--hidden_sizes:")


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("epochs", 0),
        ("train_steps", -1),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("lr_schedule", "linear"),
        ("warmup_steps", -5),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("weight_decay", -1e-4),
        ("validation_size", -1),
        ("log_every_steps", 0),
        ("checkpoint_every_steps", 0),
        ("keep_checkpoints", 0),
        ("hidden_sizes", (128, 0)),
        ("augment_rotation_degrees", -1.0),
        ("augment_rotation_degrees", 270.0),
        ("augment_scale", 1.0),
        ("augment_scale", float("nan")),
        ("augment_shift_pixels", float("nan")),
        ("augment_shift_pixels", 20.0),
        ("eval_every_steps", -1),
        ("eval_every_epochs", 0),
        ("stop_at_test_accuracy", 98.0),
        ("stop_at_test_accuracy", -0.5),
    ],
)
def test_invalid_values_name_their_field(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert info.value.field == field
    assert f"--{field}:" in str(info.value)


def test_to_dict_is_json_ready():
    values = TrainConfig(hidden_sizes=(8, 4)).to_dict()
    assert values["hidden_sizes"] == [8, 4]
    assert values["lr_schedule"] == "constant"


def test_augments_when_any_range_is_set():
    assert not TrainConfig().augments
    assert TrainConfig(augment_shift_pixels=1.5).augments
    assert TrainConfig(augment_rotation_degrees=5).augments
    assert "augment_scale" in TrainConfig().hparams()


def test_importing_the_config_does_not_import_tensorflow():
    # The entry points reject bad flags and contradicting resumes before
    # TensorFlow loads (~5 s): the config, the workdir and the modules whose
    # choice lists the config imports must not load it.
    code = ("import sys, mnist_tf.config, mnist_tf.workdir; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_every_field_declares_its_setting():
    for field in dataclasses.fields(TrainConfig):
        declared = field.metadata["setting"]
        assert declared.help.strip(), field.name
        assert declared.on_resume in ON_RESUME, field.name
        if declared.choices and declared.pattern is None:
            assert field.default in declared.choices, field.name


def test_choice_lists_are_the_ones_the_code_that_uses_them_imports():
    from mnist_tf import choices, devices
    from mnist_tf.model import precision, schedules
    from mnist_tf.training import distribute

    declared = settings()
    assert declared["lr_schedule"].choices == schedules.LR_SCHEDULES == choices.LR_SCHEDULES
    assert declared["precision"].choices == precision.PRECISIONS == choices.PRECISIONS
    assert declared["distribution"].choices == distribute.DISTRIBUTIONS == choices.DISTRIBUTIONS
    assert declared["device"].pattern is devices.DEVICE_PATTERN is choices.DEVICE_PATTERN


def test_hparams_are_the_settings_declared_so_in_field_order():
    assert list(TrainConfig().hparams()) == [
        "hidden_sizes", "batch_size", "epochs", "train_steps", "learning_rate", "lr_schedule",
        "warmup_steps", "weight_decay", "clip_grad_norm", "dropout", "ema_decay", "deskew",
        "validation_size", "seed",
        "deterministic", "jit_compile", "augment_rotation_degrees", "augment_scale",
        "augment_shift_pixels", "augment_elastic_alpha", "augment_elastic_sigma", "precision"]
    assert TrainConfig().hparams()["hidden_sizes"] == "512,256"


@pytest.mark.parametrize("field, value, message", [
    ("lr_schedule", "step", "--lr_schedule: unknown lr schedule 'step'; choose one of "
                            "constant, cosine"),
    ("precision", "fp8", "--precision: unknown precision 'fp8'; choose one of float32, "
                         "mixed_bfloat16, mixed_float16"),
    ("nan_policy", "maybe", "--nan_policy: unknown nan policy 'maybe'; choose one of stop, "
                            "skip_step"),
    ("device", "tpu", "--device: 'tpu' is not one of auto, cpu, gpu, gpu:N"),
    ("batch_size", 0, "--batch_size: must be positive, got 0"),
    ("learning_rate", float("inf"), "--learning_rate: must be positive, got inf"),
    ("seed", -1, "--seed: must be a finite number >= 0, got -1"),
])
def test_declared_choices_and_bounds_are_checked(field, value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert str(info.value) == message


@pytest.mark.parametrize("device", ["cpu", "gpu", "gpu:1"])
def test_device_with_a_distribution_is_refused(device):
    # The strategy places the replicas itself; --device used to be silently ignored.
    with pytest.raises(ConfigError) as info:
        TrainConfig(device=device, distribution="mirrored", cpu_replicas=2)
    message = str(info.value)
    assert info.value.field == "device" and "\n" not in message
    assert message.startswith(f"--device: {device} cannot be combined with "
                              "--distribution=mirrored")
    assert "drop --device" in message and "--distribution=none" in message
    assert TrainConfig(device="auto", distribution="mirrored").device == "auto"
    assert TrainConfig(device=device, distribution="none").device == device


def test_from_flag_values_parses_the_tuple_flags():
    defaults = {flag.name: flag.default for flag in train_flags()}
    assert defaults["hidden_sizes"] == "512,256" and defaults["profile_steps"] == ""
    assert TrainConfig.from_flag_values(defaults) == TrainConfig()
    config = TrainConfig.from_flag_values(
        {**defaults, "hidden_sizes": "64, 32", "profile_steps": "2,4", "batch_size": 7})
    assert (config.hidden_sizes, config.profile_steps, config.batch_size) == ((64, 32), (2, 4), 7)
    with pytest.raises(ConfigError, match="--profile_steps"):
        TrainConfig.from_flag_values({**defaults, "profile_steps": "4"})


def define_train_flags():
    """The global absl flags of `python -m mnist_tf.train` (defined once per process)."""
    from absl import flags

    from mnist_tf import train

    if "hidden_sizes" not in flags.FLAGS:
        train.define_train_flags()
    return flags.FLAGS


ABSL_TYPES = {"boolean": "bool", "integer": "int", "float": "float", "string": "string"}
ENTRY_POINT_FLAGS = {"config", "workdir", "data_dir", "manual_dir", "download", "plot"}


def test_the_train_flags_are_the_declared_settings():
    flags = define_train_flags()
    for flag in train_flags():
        defined = flags[flag.name]
        assert defined.default == flag.default, flag.name
        assert defined.help == flag.help, flag.name
        assert defined.flag_type() == ABSL_TYPES[flag.kind], flag.name
    assert flags["hidden_sizes"].default == "512,256"
    assert flags["batch_size"].default == 128 and flags["jit_compile"].default is True


def readme_flag_rows():
    """{flag name: default cell} of the flag tables in docs/training.md's Training section."""
    readme = (REPO / "docs" / "training.md").read_text()
    section = readme[readme.index("\n## Training\n"):readme.index("\n### Configs\n")]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `--(\[no\])?(\w+)` \| ([^|]*) \|", line)
        if match:
            assert match.group(2) not in rows, f"two rows for --{match.group(2)}"
            rows[match.group(2)] = match.group(3).strip()
    return readme, rows


def test_readme_flag_tables_match_the_flags():
    readme, rows = readme_flag_rows()
    # The generated table is current: regenerate it with config.flag_table_markdown().
    assert config.flag_table_markdown() in readme
    # Every flag has a row, no row names an unknown flag, and each shows its default.
    assert set(rows) == {flag.name for flag in train_flags()} | ENTRY_POINT_FLAGS
    flags = define_train_flags()
    for name, default in rows.items():
        assert default == config.markdown_default(flags[name].default), name
