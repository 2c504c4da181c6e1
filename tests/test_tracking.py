"""What reaches MLflow: params with credentials withheld, metrics flattened to numbers."""
from core.tracking import numeric_metrics, safe_params


def test_credentials_are_withheld_and_look_alikes_are_not():
    params = safe_params({"s": {"HF_TOKEN": "hf_x", "api_key": "k", "db": {"password": "p"},
                                "aws_secret_access_key": "a", "max_new_tokens": 16, "tokenizer": "t", "sort_key": 1}})
    assert {k for k, v in params.items() if v == "***"} == {"s.HF_TOKEN", "s.api_key", "s.db.password",
                                                            "s.aws_secret_access_key"}
    assert params["s.max_new_tokens"] == "16" and params["s.sort_key"] == "1"


def test_numeric_metrics_flatten_and_keep_numbers_only():
    got = numeric_metrics({"aligned": {"acc": 1, "name": "x", "nan": float("nan")}, "promoted": True}, "evaluate")
    assert got == {"evaluate.aligned.acc": 1.0, "evaluate.promoted": 1.0}
