"""Config composition: schema ← data module ← experiment ← overrides, strict keys and types."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from neurocine.config import load_config, load_saved_config, require, save_config
from neurocine.errors import ConfigError


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data_modules").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "data_modules" / "dm.yaml").write_text(
        "data:\n  window: 3\n  lag_trs: 1\n  batch_size: 16\n"
    )
    exp = tmp_path / "experiments" / "exp.yaml"
    exp.write_text("name: exp\ndata_module: dm\ndata:\n  batch_size: 8\n")
    return exp


def test_layers_merge_in_order(project):
    cfg = load_config(project, ["data.lag_trs=2"])
    assert cfg.data.window == 3  # from the data module
    assert cfg.data.batch_size == 8  # experiment beats data module
    assert cfg.data.lag_trs == 2  # override beats both
    assert cfg.data.num_workers == 0  # schema default


def test_unknown_key_in_yaml_names_file_and_key(project):
    project.write_text("data:\n  windw: 3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*data\.windw"):
        load_config(project)


def test_unknown_override_and_wrong_type_fail(project):
    with pytest.raises(ConfigError, match=r"data\.batchsize"):
        load_config(project, ["data.batchsize=3"])
    with pytest.raises(ConfigError, match=r"data\.window"):
        load_config(project, ["data.window=two"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(project, ["data.window"])


def test_evaluation_baselines_take_the_clip_oracle_by_name():
    assert "clip_oracle" not in load_config(None).evaluation.baselines  # asked for by name
    cfg = load_config(None, ["evaluation.baselines=[ridge,clip_oracle]"])
    assert list(cfg.evaluation.baselines) == ["ridge", "clip_oracle"]
    with pytest.raises(ConfigError, match=r"evaluation\.baselines.*clip_oracel"):
        load_config(None, ["evaluation.baselines=[clip_oracel]"])


def test_struct_mode_rejects_new_keys_after_loading(project):
    cfg = load_config(project)
    with pytest.raises(Exception, match="newkey"):
        cfg.data.newkey = 1


def test_missing_required_value_is_reported():
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"stage2\.encoder_ckpt"):
        require(cfg, "stage2.encoder_ckpt")
    require(load_config(None, ["stage2.encoder_ckpt=x"]), "stage2.encoder_ckpt")


def test_missing_files_and_bad_yaml(tmp_path, project):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    project.write_text("data_module: nowhere\n")
    with pytest.raises(ConfigError, match="data_modules/nowhere.yaml"):
        load_config(project)
    project.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(project)


def test_saved_config_round_trips(tmp_path, project):
    cfg = load_config(project, ["seed=7"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_saved_config(path)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    assert not list((tmp_path / "run").glob(".*tmp*"))
