"""URI helpers and manifests on the local filesystem (S3 is covered by the integration tests)."""

from __future__ import annotations

import pytest

from pipelines import manifest, storage


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://AKIA123:sec/ret@bucket/key", "s3://***@bucket/key"),
        ("https://user:pw@host/p?x=1&token=abc&y=2", "https://***@host/p?x=1&token=***&y=2"),
        ("gs://bucket/path", "gs://bucket/path"),
        ("/local/path", "/local/path"),
    ],
)
def test_redact_uri(uri, expected):
    assert storage.redact_uri(uri) == expected


def test_redact_options_nested():
    opts = {"key": "AK", "secret": "S", "endpoint_url": "http://127.0.0.1:9000",
            "client_kwargs": {"aws_session_token": "T", "region_name": "x"}}
    red = storage.redact_options(opts)
    assert red == {"key": "***", "secret": "***", "endpoint_url": "http://127.0.0.1:9000",
                   "client_kwargs": {"aws_session_token": "***", "region_name": "x"}}
    assert opts["key"] == "AK"  # the original is untouched


def test_write_is_atomic_and_listing(tmp_path):
    uri = str(tmp_path / "a" / "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]  # no temp file left behind
    storage.write_bytes(str(tmp_path / "a" / "c.bin"), b"123")
    assert storage.list_files(str(tmp_path / "a"), suffix=".bin") == [str(tmp_path / "a" / "c.bin")]


def test_write_stream_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "d" / "part.parquet"
    assert storage.write_stream(str(target), lambda f: f.write(b"x" * 1000)) == 1000
    assert target.read_bytes() == b"x" * 1000

    def half_then_fail(f):
        f.write(b"y" * 500)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.write_stream(str(target), half_then_fail)
    assert target.read_bytes() == b"x" * 1000  # the old file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["part.parquet"]  # no temporary left


def test_read_json_error_names_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"a": 1,,}')
    with pytest.raises(ValueError, match=r"broken.json: malformed JSON at line 1 column 9"):
        storage.read_json(str(p))


def test_manifest_commit_and_completeness(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.txt").write_text("hello")
    out = str(tmp_path / "out")
    fp = manifest.fingerprint_uris([str(src)])
    assert not manifest.is_complete(out, fp, "cfg1")  # nothing written yet
    manifest.commit(out, manifest.Manifest(stage="t", inputs_fingerprint=fp, config_hash="cfg1",
                                           counts={"rows": 1}, files=["x"]))
    assert manifest.is_complete(out, fp, "cfg1")
    assert not manifest.is_complete(out, fp, "cfg2")  # config changed
    (src / "y.txt").write_text("new data")
    fp2 = manifest.fingerprint_uris([str(src)])
    assert fp2 != fp and not manifest.is_complete(out, fp2, "cfg1")  # inputs changed
    m = manifest.read_manifest(out)
    assert m.counts == {"rows": 1} and m.code_version


def test_stable_hash_ignores_key_order():
    assert manifest.stable_hash({"a": 1, "b": [1, 2]}) == manifest.stable_hash({"b": [1, 2], "a": 1})
    assert manifest.stable_hash({"a": 1}) != manifest.stable_hash({"a": 2})
