import pytest
import torch

from core.errors import ConfigError
from stages import pretrain


def shape(**kw):
    return pretrain.ModelConfig(**kw).resolved()


def test_profiles_and_the_depth_dial():
    assert shape(profile="tiny") == {"layers": 4, "hidden_size": 192, "heads": 4, "max_seq_len": 256, "kv_heads": 4}
    gpt2 = shape(profile="gpt2-124m")
    assert (gpt2["layers"], gpt2["hidden_size"], gpt2["heads"], gpt2["max_seq_len"]) == (12, 768, 12, 1024)
    dial = shape(profile=None, depth=12)
    assert (dial["layers"], dial["hidden_size"], dial["heads"]) == (12, 768, 12)
    assert shape(profile="tiny", depth=2)["hidden_size"] == 128  # the dial overrides the profile's shape
    assert shape(profile="tiny", heads=2, kv_heads=1)["kv_heads"] == 1  # explicit fields override both
    with pytest.raises(ConfigError, match="set a profile, depth"):
        shape(profile=None)


def test_gpt2_profile_is_gpt2_small_sized():
    with torch.device("meta"):
        cfg = pretrain.Config(model={"profile": "gpt2-124m"}, seq_len=1024, train={"steps": 1, "batch_size": 1})
        tok = type("Tok", (), {"__len__": lambda self: 50304, "eos_token_id": 0, "pad_token_id": 1})()
        model = pretrain.build_model(cfg, tok)
    n = sum(p.numel() for p in model.parameters())
    assert 115e6 < n < 135e6, n
    assert abs(pretrain.learning_rate(cfg, model) - 7.5e-4) < 1e-12  # 3e-3 x 192 / 768
    cfg_lr = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 1e-4})})
    assert pretrain.learning_rate(cfg_lr, model) == 1e-4


def test_seq_len_beyond_the_model_is_a_config_error():
    cfg = pretrain.Config(model={"profile": "micro"}, seq_len=512, train={"steps": 1, "batch_size": 1, "lr": 1e-3})
    tok = type("Tok", (), {"__len__": lambda self: 300, "eos_token_id": 0, "pad_token_id": 1})()
    with pytest.raises(ConfigError, match="exceeds model.max_seq_len"):
        pretrain.build_model(cfg, tok)
