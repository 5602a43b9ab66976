import json

import pytest

from core.experiment.config import PRESETS, ConfigError, ExperimentConfig, coerce, field_comment, field_names, preset


def test_defaults_validate_and_round_trip_through_json():
    cfg = ExperimentConfig()
    assert cfg.validate() is cfg
    again = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.hidden, tuple)


def test_to_dict_is_every_field_in_order_with_hidden_as_a_list():
    cfg = ExperimentConfig(hidden=(8, 4), clamp_eps=1e-7, batchnorm=True, seed=3)
    d = cfg.to_dict()
    assert tuple(d) == tuple(field_names()) and d["hidden"] == [8, 4] and d["clamp_eps"] == 1e-7 and d["seed"] == 3
    d["hidden"].append(2)  # a copy: the config is unchanged
    assert cfg.hidden == (8, 4)
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


def test_every_field_has_a_comment():
    assert all(field_comment(name) for name in field_names())


@pytest.mark.parametrize("changes, field", [
    ({"lr": 0}, "lr"), ({"lr": -1}, "lr"), ({"epochs": 0}, "epochs"), ({"clamp_eps": 0.5}, "clamp_eps"),
    ({"clamp_eps": 0.0}, "clamp_eps"), ({"activation": "gelu"}, "activation"), ({"dataset": "mnist"}, "dataset"),
    ({"hidden": [0]}, "hidden"), ({"dtype": "int8"}, "dtype"), ({"device": "tpu"}, "device"),
    ({"pos_fraction": 1.0}, "pos_fraction"), ({"val_fraction": 0}, "val_fraction"),
    ({"loss": "bce_with_logits", "clamp_eps": 0.01}, "clamp_eps"), ({"dataset": "csv"}, "csv_path"),
    ({"batchnorm": True, "batch_size": 1}, "batch_size"), ({"bn_eps": 0}, "bn_eps"),
    ({"feature_scale": 0}, "feature_scale"), ({"dataset": "breast_cancer", "feature_scale": 10.0}, "feature_scale"),
    ({"hidden_bias_init": 101.0}, "hidden_bias_init"),
])
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig().replace(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_batchnorm_batch_of_one_is_refused_at_validation():
    with pytest.raises(ConfigError, match="batch_size: must be at least 2 with batchnorm"):
        ExperimentConfig(batchnorm=True, batch_size=1).validate()
    # Without hidden layers there is no BatchNorm, so a batch of one is fine.
    ExperimentConfig(batchnorm=True, batch_size=1, hidden=()).validate()


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="unknown config field") as info:
        ExperimentConfig.from_dict({"learning_rate": 0.1})
    assert info.value.field == "learning_rate"


@pytest.mark.parametrize("name, raw, expected", [
    ("hidden", "64,64", (64, 64)), ("hidden", "[]", ()), ("hidden", [8], (8,)), ("batchnorm", "yes", True),
    ("batchnorm", "false", False), ("clamp_eps", "", None), ("clamp_eps", "1e-7", 1e-7), ("epochs", "3", 3),
    ("epochs", 3.0, 3),
])
def test_coerce(name, raw, expected):
    assert coerce(name, raw) == expected


@pytest.mark.parametrize("name, raw", [("epochs", "2.5"), ("lr", "abc"), ("lr", "nan"), ("batchnorm", "maybe"),
                                       ("hidden", "a,b"), ("epochs", True)])
def test_coerce_rejects(name, raw):
    with pytest.raises(ConfigError) as info:
        coerce(name, raw)
    assert info.value.field == name


def test_article_presets_are_faithful():
    ex = preset("article-example")
    assert (ex.hidden, ex.output_relu, ex.loss, ex.optimizer, ex.lr, ex.batch_size, ex.dataset, ex.n_features) == \
        ((), True, "bce", "sgd", 0.01, 32, "random", 10)
    fixed = preset("article-fixed")
    assert fixed.loss == "bce_with_logits" and not fixed.output_relu and fixed.dataset == "gaussian"
    assert preset("article-relu-sigmoid").output_relu
    for cfg in PRESETS.values():
        cfg.validate()


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset: 'nope' is not a preset; choose one of: article-example"):
        preset("nope")
