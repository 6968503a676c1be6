import json

import pytest

from core.config import CONFIG_VERSION, RunConfig, demo_config, load_config, save_config
from core.errors import ConfigError


def test_defaults_need_only_a_data_path():
    assert RunConfig(data_path="/x").validate().backbone == "resnet18"


def test_demo_config_is_valid_and_small():
    config = demo_config().validate()
    assert config.demo and config.image_size <= 64


def test_save_and_load_round_trip(tmp_path):
    config = RunConfig(data_path="/data", epochs=3, backbone="densenet121", threshold=0.3)
    path = tmp_path / "run.json"
    save_config(config, path)
    assert json.loads(path.read_text())["version"] == CONFIG_VERSION
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"backbone": "vgg"}, "backbone"),
        ({"threshold": 1.5}, "threshold"),
        ({"image_size": 8}, "image_size"),
        ({"monitor": "train_loss"}, "monitor"),
        ({"data_path": ""}, "data_path"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "val_fraction"),
        ({"weights_path": "/no/such/weights.pt"}, "weights_path"),
    ],
)
def test_invalid_fields_are_named(overrides, field):
    config = RunConfig(**({"data_path": "/data"} | overrides))
    with pytest.raises(ConfigError, match=f"'{field}'"):
        config.validate()


def test_unknown_and_mistyped_fields_are_named():
    with pytest.raises(ConfigError, match="epocs"):
        RunConfig.from_dict({"epocs": 3})
    with pytest.raises(ConfigError, match="'epochs' must be a whole number"):
        RunConfig.from_dict({"epochs": 2.5})
    with pytest.raises(ConfigError, match="'demo' must be true or false"):
        RunConfig.from_dict({"demo": "maybe"})


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=r"missing\.json does not exist"):
        load_config(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json is not valid JSON"):
        load_config(broken)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"version": CONFIG_VERSION + 1}))
    with pytest.raises(ConfigError, match=r"future\.json has version"):
        load_config(future)
