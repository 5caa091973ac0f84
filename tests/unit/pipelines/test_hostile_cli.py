"""Issue 17's findings at the command line: one line `y9k: <what failed>: <reason>`, never a
traceback, never a secret (findings 1, 8, 9, 10), with a real MLflow store (sqlite) and a port
where nothing listens for the unreachable server.
"""

from __future__ import annotations

import shutil
import socket
import struct
import time
import zlib

import pytest

from pipelines.cli import main
from pipelines.registry import save_pyfunc
from tests.unit.pipelines.test_predict import NAMES, PARENTS, WNIDS, crafted_model, noise_image

KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


def _one_line_error(err: str, start: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "WARNING" not in ln and "INFO" not in ln]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(start), err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    save_pyfunc(path, crafted_model(), wnids=WNIDS, names=NAMES, parents=PARENTS, input_size=64, thresh=0.24)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    noise_image(64, 1).save(d / "a.jpg")
    return d / "a.jpg"


def _bomb(path, side=13000):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_predict_on_a_decompression_bomb(model_dir, tmp_path, capsys):
    _bomb(tmp_path / "bomb.png")
    assert main(["predict", "--model", str(model_dir), "--images", str(tmp_path / "bomb.png")]) == 1
    line = _one_line_error(capsys.readouterr().err, "y9k: error:")
    assert "bomb.png: image too large" in line and "13000x13000" in line


@pytest.mark.parametrize("damage", ["MLmodel", "pickle", "weights", "tree", "no weights"])
def test_predict_with_a_damaged_model_folder(model_dir, image, tmp_path, capsys, damage):
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    arts = bad / "artifacts"
    if damage == "MLmodel":
        (bad / "MLmodel").write_text("flavors: [unclosed\n  : :")
    elif damage == "pickle":
        pkl = bad / "python_model.pkl"
        pkl.write_bytes(pkl.read_bytes()[:20])
    elif damage == "weights":
        (arts / "model.pt").write_bytes(bytes(range(256)) * 8)
    elif damage == "tree":
        (arts / "tree.json").write_text('{"wnids": [')
    else:
        (arts / "model.pt").unlink()
    assert main(["predict", "--model", str(bad), "--images", str(image)]) == 1
    line = _one_line_error(capsys.readouterr().err, "y9k: error: cannot load model")
    assert str(bad) in line


def test_predict_with_a_missing_cfg(tmp_path, image, capsys):
    (tmp_path / "w.weights").write_bytes(b"\0" * 20)
    assert main(["predict", "--cfg", str(tmp_path / "missing.cfg"), "--weights", str(tmp_path / "w.weights"),
                 "--images", str(image)]) == 1
    assert "--cfg" in _one_line_error(capsys.readouterr().err, "y9k: error:") + "missing.cfg: no such file"


def test_registry_unknown_model_is_not_found(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for action in (["rollback"], ["list"], ["show", "1"], ["promote", "1"]):
        assert main(["registry", *action, "--name", "ghost", "--set", f"mlflow.tracking_uri={uri}"]) == 1
        line = _one_line_error(capsys.readouterr().err, "y9k: error:")
        assert "ghost" in line and ("no registered model" in line or "has no version" in line), line


def test_registry_unreachable_server_fails_fast_and_says_so(capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.perf_counter()
        rc = main(["registry", "list", "--set", f"mlflow.tracking_uri=http://admin:Sup3rSecretPw@127.0.0.1:{port}"])
        elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 1 and elapsed < 30, elapsed  # was ~4 minutes of retries
    line = _one_line_error(err, "y9k: error: MLflow tracking server")
    assert "no registered model" not in line and "Connection" in line
    assert "Sup3rSecretPw" not in err


def test_sample_data_to_a_uri_with_credentials(capsys):
    """Finding 1: s3fs reads KEY:SECRET@bucket as the bucket and botocore repeats it."""
    rc = main(["sample-data", "--out", f"s3://{KEY_ID}:{SECRET}@bucket/sample"])
    out = capsys.readouterr()
    assert rc == 1
    _one_line_error(out.err, "y9k: sample-data failed:")
    for part in (KEY_ID, *SECRET.split("/")):
        assert part not in out.out + out.err


def test_debug_traceback_is_redacted(capsys, monkeypatch):
    monkeypatch.setenv("Y9K_DEBUG", "1")
    assert main(["sample-data", "--out", f"s3://{KEY_ID}:{SECRET}@bucket/sample"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("y9k: sample-data failed:")
    for part in (KEY_ID, *SECRET.split("/")):
        assert part not in err


def test_predict_images_uri_with_credentials(model_dir, capsys):
    rc = main(["predict", "--model", str(model_dir), "--images", f"s3://{KEY_ID}:{SECRET}@bucket/photos"])
    out = capsys.readouterr()
    assert rc == 1
    _one_line_error(out.err, "y9k: predict failed:")
    for part in (KEY_ID, *SECRET.split("/")):
        assert part not in out.out + out.err
