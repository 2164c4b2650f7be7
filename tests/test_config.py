"""Validation, immutability and round trips of the configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ptychopinn.config import (
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    build,
    load_config,
    parse_set,
    save_config,
    with_overrides,
)
from ptychopinn.errors import ConfigError


@pytest.mark.parametrize("bad", ["torch", "tf", None, "PyTorch", 1])
def test_backend_literal(bad):
    with pytest.raises(ValueError) as ei:
        TrainingConfig(backend=bad)
    assert "pytorch" in str(ei.value) and "tensorflow" in str(ei.value)
    with pytest.raises(ValueError):
        InferenceConfig(backend=bad)


def test_backend_valid():
    assert TrainingConfig().backend == "pytorch"
    assert TrainingConfig(backend="tensorflow").backend == "tensorflow"


@pytest.mark.parametrize("n", [16, 48, 100, 512])
def test_n_power_of_two(n):
    with pytest.raises(ValidationError, match="power of two"):
        ModelConfig(N=n)


def test_unknown_key_names_field():
    with pytest.raises(ConfigError, match=r"model\.gridsiz: unknown key"):
        build(TrainingConfig, {"model": {"gridsiz": 2}})


def test_bad_range_and_choice_are_named():
    with pytest.raises(ConfigError, match="batch_size"):
        build(TrainingConfig, {"batch_size": 0})
    with pytest.raises(ConfigError) as ei:
        build(TrainingConfig, {"model": {"architecture": "resnet"}})
    assert "model.architecture" in str(ei.value) and "unet" in str(ei.value)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"batch_size": 0}, "  - batch_size: expected an integer (greater than or equal to 1) "
                            "or 'auto'; found 0"),
        ({"batch_size": "many"}, "  - batch_size: expected an integer or 'auto'; found 'many'"),
        ({"batch_size": 2.5}, "  - batch_size: expected an integer or 'auto'; found 2.5"),
        ({"execution": {"devices": "x"}},
         "  - execution.devices: expected an integer or 'auto'; found 'x'"),
    ],
)
def test_union_value_is_one_line_naming_every_form(data, line):
    """A value matching no member of ``int | 'auto'`` is one line naming both forms and the
    value found, not pydantic's line per member (``batch_size.literal['auto']: ...``)."""
    with pytest.raises(ConfigError) as ei:
        build(InferenceConfig, data, where="--set")
    lines = str(ei.value).splitlines()
    assert lines == ["--set: invalid configuration:", line]


def test_validator_message_does_not_repeat_what_it_found():
    with pytest.raises(ConfigError) as ei:
        build(InferenceConfig, {"execution": {"devices": 0}})
    msg = str(ei.value)
    assert "execution.devices" in msg and msg.count("found 0") == 1
    # the validator sees a tuple where the input was a list: still said once
    from ptychopinn.simulation import SimulationConfig

    with pytest.raises(ConfigError) as ei:
        build(SimulationConfig, {"phase_range_rad": [-4.0, 4.0]})
    msg = str(ei.value)
    assert "phase_range_rad" in msg and "2 pi" in msg and msg.count("found") == 1, msg


def test_union_lines_beside_other_problems():
    with pytest.raises(ConfigError) as ei:
        build(InferenceConfig, {"batch_size": 0, "bogus": 1, "execution": {"devices": "x"}})
    lines = str(ei.value).splitlines()[1:]
    assert len(lines) == 3
    assert any(ln.startswith("  - batch_size: expected an integer") for ln in lines)
    assert any(ln.startswith("  - execution.devices: expected an integer") for ln in lines)
    assert any(ln.startswith("  - bogus: unknown key") for ln in lines)


def test_frozen():
    cfg = TrainingConfig()
    with pytest.raises(ValidationError):
        cfg.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    cfg = TrainingConfig(
        model=ModelConfig(N=128, gridsize=1, architecture="cnn"),
        learning_rate=1e-4,
        nphotons=1e5,
        execution={"logger": "none"},
    )
    path = save_config(cfg, tmp_path / f"c{suffix}")
    assert load_config(TrainingConfig, path) == cfg


def test_overrides_and_set():
    cfg = with_overrides(
        TrainingConfig(), parse_set(["model.N=128", "learning_rate=0.01", "execution.logger=none"])
    )
    assert cfg.model.N == 128 and cfg.learning_rate == 0.01 and cfg.execution.logger == "none"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["model.N"])


def test_supervised_gets_realspace_weight():
    cfg = TrainingConfig(model={"model_type": "supervised"})
    assert cfg.realspace_weight > 0


def test_all_loss_weights_zero_rejected():
    with pytest.raises(ValidationError, match="at least one"):
        TrainingConfig(nll_weight=0)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [1, 2")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(TrainingConfig, p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainingConfig, tmp_path / "missing.yaml")


def test_two_configs_do_not_interfere():
    a = TrainingConfig(model={"N": 32})
    b = TrainingConfig(model={"N": 128})
    assert a.model.N == 32 and b.model.N == 128 and ModelConfig().N == 64


def test_supervised_via_overrides():
    cfg = with_overrides(TrainingConfig(), {"model": {"model_type": "supervised"}})
    assert cfg.realspace_weight == 1.0 and cfg.nll_weight == 0.0


def test_early_stop_note_names_the_time_limit() -> None:
    """`ptychopinn train` says when the time limit cut the epochs short (a slower
    machine trains fewer epochs in the default 8 minutes)."""
    from ptychopinn.cli.commands import early_stop_note
    from ptychopinn.config import TrainingConfig

    cfg = TrainingConfig()
    assert early_stop_note(cfg.nepochs, cfg) is None
    note = early_stop_note(58, cfg)
    assert "58 of 60 epochs" in note and "max_time_minutes=8" in note and "--max-minutes" in note
    assert "early stopping" not in note
    both = TrainingConfig(early_stopping_patience=3)
    assert "early stopping (patience 3)" in early_stop_note(10, both)
    assert "interruption" in early_stop_note(10, TrainingConfig(max_time_minutes=None))


@pytest.mark.parametrize("minutes", [float("inf"), float("-inf"), float("nan"), "inf", 1e13,
                                     525_601])
def test_max_time_minutes_must_be_finite_and_at_most_a_year(minutes):
    with pytest.raises(ConfigError, match="max_time_minutes"):
        build(TrainingConfig, {"max_time_minutes": minutes})


@pytest.mark.parametrize("minutes", [None, 0.5, 525_600])
def test_max_time_minutes_accepts_none_and_a_year(minutes):
    assert build(TrainingConfig, {"max_time_minutes": minutes}).max_time_minutes == minutes


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_no_setting_takes_a_nan_or_an_infinite_number(value):
    """A NaN was refused by a bound's words ('less than or equal to 4; found nan'); every
    section now says it wants a finite number, naming the key."""
    from ptychopinn.config import InferenceConfig, TrainingConfig

    for make in (lambda: InferenceConfig(refine_learning_rate=value),
                 lambda: InferenceConfig(stitch_flat_above=value),
                 lambda: TrainingConfig(learning_rate=value)):
        with pytest.raises(ValueError, match=r"(refine_learning_rate|stitch_flat_above|"
                                             r"learning_rate)\n.*finite number"):
            make()


def test_a_check_across_keys_is_said_in_its_own_words():
    """A model validator's error has no location: it was printed as '<root>: Value error,
    ...'; its own words name the keys."""
    from ptychopinn.config import InferenceConfig
    from ptychopinn.config.io import build
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build(InferenceConfig, {"position_keep_linear": True}, where="options")
    text = str(info.value)
    assert "<root>" not in text and "Value error" not in text
    assert "  - position_keep_linear applies to position corrections" in text
