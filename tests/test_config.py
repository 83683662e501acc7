import pytest

from mnist_tf.config import ConfigError, TrainConfig, parse_hidden_sizes


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
