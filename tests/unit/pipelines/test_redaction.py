"""pipelines.redaction.redact: every place a URI or an option can hold a secret (finding 1, 10), by
example and by property (hypothesis): generated secrets never reach printed config, MLflow
params, logs, manifests or the one-line errors of the CLI.

The pattern layer is tested with the literal memory cleared (``patterns_only``), so that a
pattern that stops working cannot hide behind :func:`remember`.
"""

from __future__ import annotations

import json
import logging
import socket
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines import manifest, redaction
from pipelines.cli import main
from pipelines.config import config_from_dict, load_config
from pipelines.logs import RedactingFormatter


@pytest.fixture
def patterns_only(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())


@pytest.mark.parametrize("text,secret", [
    ("s3://AKIAIOSFODNN7EXAMPLE:wJalr/XUtn+FEMI@bucket/x", "wJalr/XUtn+FEMI"),
    ("simplecache::s3://KEYID:S3cr3t/Value@bucket/x", "S3cr3t"),
    ("filecache::simplecache::gs://user:pa55word@b/x", "pa55word"),
    ('Invalid bucket name "KEYID:S3cr3tValue@bucket": must match', "S3cr3tValue"),
    ("https://acct.blob.core.windows.net/c/x.jpg?sv=2022-11-02&sig=AbC%2Bd3f%3D&se=2030", "AbC%2Bd3f%3D"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIDEXAMPLE%2F2024&X-Amz-Signature=fe5f80f77d5f",
     "fe5f80f77d5f"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=SomeCredential%2F2024&X-Amz-Date=1", "SomeCredential"),
    ("https://x/y?X-Amz-Security-Token=FQoGZXIvYXdzEJr", "FQoGZXIvYXdzEJr"),
    ("DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=Eby8vdM02xNOcqF/lFUe==;EndpointSuffix=x",
     "Eby8vdM02xNOcqF"),
    ("{'key': 'AKIDVALUE', 'secret': 'hunter22', 'anon': False}", "hunter22"),
    ("{'client_kwargs': {'headers': {'Authorization': 'Bearer eyJhbGciOi'}}}", "eyJhbGciOi"),
    ("Authorization: Bearer eyJhbGciOi", "eyJhbGciOi"),
    ("postgresql://mlflow:dbpassw0rd@db:5432/mlflow", "dbpassw0rd"),
    ("https://user:tok3n@mlflow.example.com", "tok3n"),
])
def test_patterns_redact_every_form(patterns_only, text, secret):
    out = redaction.redact(text)
    assert secret not in out and redaction.REDACTED in out


@pytest.mark.parametrize("text", ["s3://bucket/images/x.jpg", "KeyError: 'images'", "train.batch_size=32",
                                  "http://127.0.0.1:5000", "ingest coco-val: 3 rejects: {'box outside image': 3}"])
def test_ordinary_text_is_left_alone(patterns_only, text):
    assert redaction.redact(text) == text


def test_options_redacted_by_name_nested_and_in_lists():
    opts = {"key": "K", "secret": "S", "token": "T", "password": "P", "connection_string": "C", "sas_token": "Q",
            "account_key": "A", "anon": False, "endpoint_url": "http://minio:9000", "region_name": "eu",
            "client_kwargs": {"headers": {"Authorization": "Bearer X"}, "endpoint_url": "http://u:pw0rd@h"},
            "credentials": {"id": "I", "value": "V"}, "list": [{"password": "L"}]}
    out = redaction.redact(opts)
    assert out["anon"] is False and out["endpoint_url"] == "http://minio:9000" and out["region_name"] == "eu"
    assert "pw0rd" not in str(out)
    for v in ("'K'", "'S'", "'T'", "'P'", "'C'", "'Q'", "'A'", "Bearer X", "'I'", "'V'", "'L'"):
        assert v not in str(out), v


def test_remembered_literals_catch_what_no_pattern_foresees(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())
    redaction.remember({"storage": {"options": {"secret": "Zq8x/Plain+Secret"}}})
    out = redaction.redact("botocore says Plain+Secret, Zq8x and Zq8x%2FPlain%2BSecret")
    assert "Plain+Secret" not in out and "Zq8x" not in out and "%2FPlain" not in out


# ---- property: generated secrets in every place of the config ---------------------------------

_SECRET_CHARS = string.ascii_letters + string.digits + "+/="
secret_text = st.text(_SECRET_CHARS, min_size=12, max_size=40).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s) and "//" not in s
    and not s.startswith("/") and not s.endswith("/"))
url_safe = st.text(string.ascii_letters + string.digits, min_size=12, max_size=30).filter(
    lambda s: any(c.isdigit() for c in s))


def _places(key_id: str, secret: str, token: str) -> list[tuple[str, dict]]:
    """(what, config dict) for every place a URI or an option can hold a secret."""
    return [
        ("storage.root", {"storage": {"root": f"s3://{key_id}:{secret}@bucket/y9k"}}),
        ("chained root", {"storage": {"root": f"simplecache::s3://{key_id}:{secret}@bucket/y9k"}}),
        ("data source", {"data": {"coco_train": f"gs://{key_id}:{token}@b/coco/train"}}),
        ("SAS", {"data": {"det_val": f"https://a.blob.core.windows.net/det?sv=2022&sig={token}&se=2030"}}),
        ("presigned", {"model": {"init_weights": f"https://b.s3.amazonaws.com/w?X-Amz-Credential={key_id}"
                                                 f"&X-Amz-Signature={token}"}}),
        ("tracking uri", {"mlflow": {"tracking_uri": f"https://{key_id}:{token}@mlflow.example.com"}}),
        ("options", {"storage": {"options": {"key": key_id, "secret": secret}}}),
        ("connection string", {"storage": {"options": {
            "connection_string": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={secret};"}}}),
        ("header", {"storage": {"options": {"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}}}}),
    ]


@given(key_id=url_safe, secret=secret_text, token=url_safe)
def test_property_generated_secrets_never_reach_config_params_logs_or_manifests(tmp_path_factory, key_id, secret, token):
    for what, data in _places(key_id, secret, token):
        redaction._known.clear()  # the patterns alone must hold; remember() is a second layer
        cfg = config_from_dict(data)
        redaction._known.clear()
        shown = [cfg.to_yaml(), json.dumps(cfg.flat(), default=str), json.dumps(cfg.to_safe_dict(), default=str)]
        record = logging.LogRecord("y9k", logging.INFO, __file__, 1, "using %s with %s", (cfg.storage.root,
                                   cfg.storage.options), None)
        shown.append(RedactingFormatter().format(record))
        out = tmp_path_factory.getbasetemp() / "manifest-out"
        manifest.commit(str(out), manifest.Manifest(stage="t", inputs_fingerprint="f", config_hash="h", code_version="c",
                                                    extra={"config": cfg.to_dict(), "inputs": [cfg.storage.root]}))
        shown.append((out / "manifest.json").read_text())
        for text in shown:
            for part in (secret, token, *[p for p in secret.split("/") if len(p) >= 6]):
                assert part not in text, (what, part, text[:400])


def test_config_show_and_flat_with_every_place_at_once(capsys):
    key_id, secret, token = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", "Tok3nValue123"
    overrides = [f"storage.root=simplecache::s3://{key_id}:{secret}@bucket/y9k",
                 f"storage.options.connection_string=AccountName=a;AccountKey={secret}",
                 f"data.det_val=https://a.blob.core.windows.net/det?sig={token}",
                 f"mlflow.tracking_uri=https://u:{token}@mlflow.example.com"]
    assert main(["config", "show", *sum((["--set", o] for o in overrides), [])]) == 0
    out = capsys.readouterr()
    flat = json.dumps(load_config("demo", overrides).flat(), default=str)
    for part in (key_id, secret, "wJalrXUtnFEMI", "K7MDENG+bPxRfiCY", token):
        assert part not in out.out + out.err and part not in flat


def test_unreachable_bucket_with_credentials_is_one_redacted_line(capsys, tmp_path):
    """Finding 10: no network, credentials in the options: one line, not a 142-line traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        rc = main(["ingest", "--set", "storage.root=s3://nobucket/y9k",
                   "--set", "storage.options.key=AKIAIOSFODNN7EXAMPLE",
                   "--set", "storage.options.secret=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
                   "--set", f"storage.options.client_kwargs={{endpoint_url: 'http://127.0.0.1:{port}'}}",
                   "--set", "storage.options.config_kwargs={retries: {max_attempts: 1}}"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("y9k:")]
    assert rc == 1 and "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith("y9k: ingest failed:") and "Could not connect" in lines[0]
    assert "AKIAIOSFODNN7EXAMPLE" not in err and "wJalrXUtnFEMI" not in err


def test_mlflow_params_tags_and_texts_are_redacted(tmp_path, monkeypatch):
    """What a training run sends to MLflow, read back from a real (sqlite) store."""
    import mlflow

    from pipelines.train.tracking import Tracker, create_run

    key_id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCY"
    cfg = load_config("demo", [f"model.init_weights=s3://{key_id}:{secret}@bucket/w.weights",
                               f"storage.options.secret={secret}", f"storage.root=s3://bucket/y9k?token={secret}"])
    monkeypatch.setattr(redaction, "_known", set())  # the patterns alone
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = create_run(uri, "e", "r", {"source": cfg.model.init_weights})
    tracker = Tracker(uri, run_id, True)
    tracker.log_params(cfg.flat())
    tracker.set_tags({"warm_start": cfg.model.init_weights})
    tracker.log_text(cfg.to_yaml(), "config.yaml")
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    stored = json.dumps([run.data.params, run.data.tags])
    stored += (tmp_path / "art").mkdir() or open(client.download_artifacts(run_id, "config.yaml", str(tmp_path / "art"))).read()
    assert "init_weights" in stored and "warm_start" in stored
    assert secret not in stored and key_id not in stored
