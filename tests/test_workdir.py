"""The workdir: config.json read and written one way, the lock, and the resume check."""

import json
import os

import pytest
from conftest import assert_usage_error, run_module

from mnist_tf import workdir
from mnist_tf.config import FIXED, FREE, RUN_LENGTH, ConfigError, TrainConfig, settings
from mnist_tf.errors import UserError

# A valid value other than the default, where the type alone does not give one.
OTHER_VALUES = {"hidden_sizes": (64,), "profile_steps": (2, 4), "learning_rate": 3e-3}
# What another value of some settings needs beside it to be a valid config.
NEEDS = {"steps_per_call": {"data_on_device": True},
         "cpu_replicas": {"distribution": "mirrored"},
         "augment_elastic_alpha": {"augment_elastic_sigma": 4.0},
         "early_stopping_patience": {"keep_best": "validation_loss"}}


def another_value(name):
    """A valid value of setting `name` other than its default."""
    if name in OTHER_VALUES:
        return OTHER_VALUES[name]
    default, declared = getattr(TrainConfig(), name), settings()[name]
    if declared.choices:
        return next(choice for choice in declared.choices
                    if choice != default and (declared.pattern is None
                                              or declared.pattern.match(choice)))
    if isinstance(default, bool):
        return not default
    return default + 1 if isinstance(default, int) else default + 0.5


def changed(name, **base):
    """TrainConfig(**base) with setting `name` at another value."""
    return TrainConfig(**{**base, **NEEDS.get(name, {}), name: another_value(name)})


def names(on_resume):
    return [name for name, declared in settings().items() if declared.on_resume == on_resume]


def recorded(tmp_path, **values):
    """A workdir that trained TrainConfig(**values): its config.json and a checkpoint."""
    workdir.write_config(str(tmp_path), TrainConfig(**values))
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "checkpoints" / "ckpt-5.index").write_text("")
    return str(tmp_path)


def test_the_settings_are_split_as_decided():
    assert names(FIXED) == [
        "hidden_sizes", "batch_size", "learning_rate", "lr_schedule", "warmup_steps",
        "weight_decay", "clip_grad_norm", "dropout", "ema_decay", "deskew", "validation_size",
        "seed",
        "augment_rotation_degrees", "augment_scale", "augment_shift_pixels",
        "augment_elastic_alpha", "augment_elastic_sigma", "keep_best", "precision"]
    assert names(RUN_LENGTH) == ["epochs", "train_steps"]
    assert set(names(FREE)) == set(settings()) - set(names(FIXED)) - set(names(RUN_LENGTH))


@pytest.mark.parametrize("name", names(FIXED))
def test_a_fixed_setting_that_changed_is_refused_in_one_line(tmp_path, name):
    path = recorded(tmp_path)
    now = changed(name)
    with pytest.raises(ConfigError) as info:
        workdir.check_resume(path, now)
    before = TrainConfig()
    spell = {"hidden_sizes": lambda v: ",".join(map(str, v))}.get(
        name, lambda v: str(v).lower() if isinstance(v, bool) else str(v))  # As flags spell them.
    old, new = spell(getattr(before, name)), spell(getattr(now, name))
    assert info.value.field == name
    assert str(info.value) == (
        f"--{name}: {new} contradicts {old} recorded in {tmp_path / 'config.json'}; a resumed "
        f"run keeps the settings that shaped its steps so far: pass --{name}={old}, or use "
        "another --workdir")


def test_the_batch_size_message_reads_as_documented(tmp_path):
    path = recorded(tmp_path, batch_size=128)
    with pytest.raises(ConfigError) as info:
        workdir.check_resume(path, TrainConfig(batch_size=256))
    assert str(info.value) == (
        f"--batch_size: 256 contradicts 128 recorded in {tmp_path}/config.json; a resumed run "
        "keeps the settings that shaped its steps so far: pass --batch_size=128, or use "
        "another --workdir")


def test_an_empty_value_is_spelled_for_the_shell(tmp_path):
    path = recorded(tmp_path, hidden_sizes=())
    with pytest.raises(ConfigError, match=r"--hidden_sizes: 64 contradicts '' recorded .* "
                                          r"pass --hidden_sizes='', or"):
        workdir.check_resume(path, TrainConfig(hidden_sizes=(64,)))


@pytest.mark.parametrize("name", names(FREE))
def test_a_free_setting_may_change(tmp_path, name):
    # Recorded with what the other value needs beside it (itself FIXED for keep_best).
    workdir.check_resume(recorded(tmp_path, **NEEDS.get(name, {})), changed(name))


def test_a_fresh_workdir_has_nothing_to_check(tmp_path):
    workdir.check_resume(str(tmp_path), TrainConfig(batch_size=7))


def test_a_workdir_that_saved_no_checkpoint_may_change_anything(tmp_path):
    # E.g. a run that diverged before its first checkpoint: nothing was
    # trained, so a lower learning rate is a new start, not a contradiction.
    workdir.write_config(str(tmp_path), TrainConfig(learning_rate=1.0))
    workdir.check_resume(str(tmp_path), TrainConfig(learning_rate=1e-3))
    with pytest.raises(ConfigError, match="--learning_rate"):
        workdir.check_resume(recorded(tmp_path, learning_rate=1.0),
                             TrainConfig(learning_rate=1e-3))


@pytest.mark.parametrize("before, now", [
    (dict(epochs=10), dict(epochs=20)),
    (dict(epochs=10), dict(epochs=3)),
    (dict(train_steps=100), dict(train_steps=250)),
    (dict(epochs=10), dict(train_steps=250)),
])
def test_the_run_length_may_change_under_a_constant_schedule(tmp_path, before, now):
    path = recorded(tmp_path, lr_schedule="constant", **before)
    workdir.check_resume(path, TrainConfig(lr_schedule="constant", **now))


@pytest.mark.parametrize("before, now, name, old, new", [
    (dict(epochs=10), dict(epochs=20), "epochs", "10", "20"),
    (dict(train_steps=100), dict(train_steps=250), "train_steps", "100", "250"),
    (dict(epochs=10), dict(epochs=10, train_steps=250), "train_steps", "0", "250"),
    (dict(train_steps=100), dict(), "train_steps", "100", "0"),
])
def test_the_run_length_is_fixed_under_cosine(tmp_path, before, now, name, old, new):
    path = recorded(tmp_path, lr_schedule="cosine", **before)
    with pytest.raises(ConfigError) as info:
        workdir.check_resume(path, TrainConfig(lr_schedule="cosine", **now))
    assert str(info.value) == (
        f"--{name}: {new} contradicts {old} recorded in {tmp_path}/config.json; under "
        "--lr_schedule=cosine the run's length sets the decay, so another length would "
        f"re-shape the steps still to come: pass --{name}={old}, or use another --workdir")


def test_under_cosine_epochs_may_change_while_train_steps_decides(tmp_path):
    path = recorded(tmp_path, lr_schedule="cosine", train_steps=100, epochs=10)
    workdir.check_resume(path, TrainConfig(lr_schedule="cosine", train_steps=100, epochs=3))


def test_read_config_round_trips_write_config(tmp_path):
    config = TrainConfig(hidden_sizes=(8, 4), profile_steps=(2, 4), lr_schedule="cosine",
                         learning_rate=3e-3, dropout=0.25, data_on_device=True,
                         steps_per_call=5, precision="mixed_bfloat16", device="cpu")
    workdir.write_config(str(tmp_path), config)
    assert json.loads((tmp_path / "config.json").read_text())["hidden_sizes"] == [8, 4]
    assert workdir.read_config(str(tmp_path)) == config


def test_read_config_ignores_unknown_keys_and_defaults_missing_ones(tmp_path):
    # A config.json from another version: a key this one does not know, and
    # fields it did not have yet.
    (tmp_path / "config.json").write_text(json.dumps(
        {"hidden_sizes": [16], "batch_size": 50, "retired_setting": 3}))
    assert workdir.read_config(str(tmp_path)) == TrainConfig(hidden_sizes=(16,), batch_size=50)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"batch_size": -5}',
                                  '{"hidden_sizes": 7}', '{"batch_size": "many"}'])
def test_an_unreadable_config_json_is_a_one_line_user_error(tmp_path, text):
    recorded(tmp_path)
    (tmp_path / "config.json").write_text(text)
    for read in (workdir.read_config, lambda w: workdir.check_resume(w, TrainConfig())):
        with pytest.raises(UserError) as info:
            read(str(tmp_path))
        message = str(info.value)
        assert message.startswith(f"{tmp_path}/config.json is unreadable or invalid (")
        assert "\n" not in message


def test_read_config_names_a_missing_run(tmp_path):
    with pytest.raises(UserError, match=r"--workdir: .*nowhere does not exist; train a model "
                                        r"there first \(python -m mnist_tf.train"):
        workdir.read_config(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"holds no trained run \(config.json is missing\)"):
        workdir.read_config(str(tmp_path))


def test_write_results_writes_results_json(tmp_path):
    workdir.write_results(str(tmp_path), {"test_accuracy": 0.5})
    assert json.loads((tmp_path / "results.json").read_text()) == {"test_accuracy": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]  # No temporary file left.


def test_prepare_creates_the_workdir_or_names_the_problem(tmp_path):
    assert workdir.prepare(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="--workdir: .* is a file, not a directory"):
        workdir.prepare(str(tmp_path / "file"))


def test_the_lock_refuses_a_second_holder_until_released(tmp_path):
    with workdir.lock(str(tmp_path)):
        assert (tmp_path / workdir.LOCK_FILE).read_text() == str(os.getpid())
        # flock locks belong to an open file: a second open is a second holder.
        with pytest.raises(UserError, match=r"in use by another training run \(pid \d+\)"):
            with workdir.lock(str(tmp_path)):
                pass
    # Released: the pid is gone, so a run that changes nothing leaves the file as it was.
    assert (tmp_path / workdir.LOCK_FILE).read_text() == ""
    with workdir.lock(str(tmp_path)):
        pass


def test_resuming_with_another_batch_size_is_refused_from_the_command_line(
        tmp_path, small_data_dir):
    run = tmp_path / "run"
    common = [f"--workdir={run}", f"--data_dir={small_data_dir}", "--nodownload",
              "--hidden_sizes=16", "--validation_size=100", "--train_steps=4"]
    first = run_module("mnist_tf.train", *common, "--batch_size=50")
    assert first.returncode == 0, first.stderr
    files_before = sorted(os.listdir(run / "checkpoints"))
    config_before = (run / "config.json").read_bytes()
    again = run_module("mnist_tf.train", *common, "--batch_size=100")
    assert_usage_error(again, "--batch_size: 100 contradicts 50 recorded in",
                       f"{run}/config.json", "pass --batch_size=50, or use another --workdir")
    assert sorted(os.listdir(run / "checkpoints")) == files_before
    assert (run / "config.json").read_bytes() == config_before


def test_changed_covers_every_setting():
    # The parametrized tests above build another value of every setting.
    for name in settings():
        assert getattr(changed(name), name) != getattr(TrainConfig(), name), name
