"""The typed config: bundled files load, overrides apply, bad values name key, value and rule."""

from __future__ import annotations

import pytest

from pipelines.config import CONFIG_DIR, Config, ConfigError, config_from_dict, load_config, sections_hash


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_bundled_configs_load(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.train.batch_size % cfg.train.subdivisions == 0


def test_demo_is_the_default_and_small():
    cfg = load_config()
    assert cfg.sample_data.enabled and cfg.storage.root == "./y9k-data"
    assert cfg.model.width < 1 and not cfg.train.use_gpu


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config("demo", ["train.batch_size=32", "train.steps=[10, 20]", "ray.num_cpus=2",
                               "model.init_weights=null", "train.lr=1e-3", "train.channels_last=true"])
    assert cfg.train.batch_size == 32 and cfg.train.steps == [10, 20]
    assert cfg.ray.num_cpus == 2 and cfg.model.init_weights is None
    assert cfg.train.lr == pytest.approx(0.001) and isinstance(cfg.train.lr, float)
    cfg2 = load_config("demo", ["train.channels_last=false"])
    assert cfg.train.channels_last is True and cfg2.train.channels_last is False


def test_int_accepted_for_float_but_not_bool_for_int():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"'train.batch_size': got True, expected an integer"):
        config_from_dict({"train": {"batch_size": True}})


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=big", r"'train.batch_size': got 'big', expected an integer"),
        ("train.bacth_size=8", r"'train.bacth_size': unknown key in section 'train'; allowed keys: .*batch_size"),
        ("nosuch.key=1", r"'nosuch': unknown key in the top level"),
        ("train.mode=segment", r"'train.mode': got 'segment', expected one of 'classify', 'detect', 'joint'"),
        ("train.subdivisions=5", r"'train.subdivisions': got 5, expected a divisor of train.batch_size \(16\)"),
        ("anchors.input_size=300", r"'anchors.input_size': got 300, expected a positive multiple of anchors.stride"),
        ("eval.nms=1.5", r"'eval.nms': got 1.5, expected a number in \[0, 1\]"),
        ("train.steps=[5, 2]", r"'train.steps': got \[5, 2\], expected increasing step numbers"),
        ("train.steps=[abc]", r"'train.steps\[0\]': got 'abc', expected an integer"),
        ("train=3", r"'train': got 3, expected a mapping"),
        ("train.batch_size", r"expected KEY=VALUE"),
        ("sample_data.world=mars", r"'sample_data.world': got 'mars', expected one of 'zoo', 'depot'"),
        ("train.cls_select=box", r"'train.cls_select': got 'box', expected one of 'label', 'object', 'size', 'image'"),
        ("train.cls_topk=0", r"'train.cls_topk': got 0, expected an integer >= 1 or null"),
        ("train.cls_loss_weight=-0.1", r"'train.cls_loss_weight': got -0.1, expected a number >= 0"),
        ("ray.train_poll_s=0", r"'ray.train_poll_s': got 0.0, expected a number of seconds in \(0, 60\]"),
    ],
)
def test_bad_values_name_key_value_and_rule(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_config(bad)
    wrong_type = tmp_path / "list.yaml"
    wrong_type.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of sections"):
        load_config(wrong_type)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data:\n  max_sid: 100\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: config key 'data.max_sid': unknown key"):
        load_config(unknown)
    with pytest.raises(ConfigError, match=r"'nope.yaml' not found \(bundled configs: demo, table2-voc, yolo9000\)"):
        load_config("nope.yaml")


def test_secrets_never_reach_safe_views():
    cfg = load_config("yolo9000", ["storage.options.key=AKIAXXXX", "storage.options.secret=s3cr3t",
                                   "storage.options.client_kwargs={region_name: eu-west-1}",
                                   "data.coco_train=s3://AKIAXXXX:s3cr3t@bucket/coco"])
    for text in (cfg.to_yaml(), str(cfg.flat()), str(cfg.to_safe_dict())):
        assert "s3cr3t" not in text and "AKIAXXXX" not in text
    assert cfg.to_yaml().count("***") >= 3
    assert "eu-west-1" in cfg.to_yaml()  # non-secret options stay readable
    assert all(not k.startswith("storage.options") for k in cfg.flat())
    # Credentials do not change what a stage computes, so they are outside the cache key.
    assert cfg.hash("data") != load_config("yolo9000").hash("data")  # the URI itself changed
    assert load_config("yolo9000", ["storage.options.secret=a"]).hash() == load_config("yolo9000").hash()


def test_hash_depends_on_values():
    assert load_config("demo").hash("train") == load_config("demo").hash("train")
    assert load_config("demo", ["train.lr=0.5"]).hash("train") != load_config("demo").hash("train")
    assert load_config("demo", ["train.lr=0.5"]).hash("data") == load_config("demo").hash("data")
    # A stage given only its sections keys its cache the same way (records of earlier runs stay valid).
    cfg = load_config("yolo9000", ["storage.options.secret=a"])
    assert sections_hash(anchors=cfg.anchors) == cfg.hash("anchors")
    assert sections_hash(model=cfg.model, train=cfg.train) == cfg.hash("model", "train")
    assert sections_hash(storage=cfg.storage) == load_config("yolo9000").hash("storage")
    assert cfg.storage.options == {"secret": "a"}  # the hash's copy was stripped, not the config
