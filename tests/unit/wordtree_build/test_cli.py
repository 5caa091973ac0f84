"""`y9k wordtree build|show|stats` end to end on real files."""

from __future__ import annotations

import json

from pipelines.cli import main


def test_build_stats_show(tmp_path, capsys, wn):
    labels = tmp_path / "few.labels"
    labels.write_text("n02085620\nn02123045\nn07739125\n")
    out = tmp_path / "tree"
    assert main(["wordtree", "build", "--labels", str(labels), "--out", str(out), "--stem", "few"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert (out / "tree.parquet").exists() and (out / "few.tree").exists() and (out / "few.names").exists()
    assert main(["wordtree", "stats", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["content_hash"] == built["content_hash"] and stats["labels"] == 3
    assert main(["wordtree", "stats", str(out / "few.tree")]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == stats["nodes"]
    assert main(["wordtree", "show", "n02085620"]) == 0
    shown = capsys.readouterr().out
    assert "chihuahua.n.03" in shown and shown.count("path ") == 2


def test_bad_label_file_is_a_clean_error(tmp_path, capsys):
    labels = tmp_path / "bad.labels"
    labels.write_text("n02085620\nn99999999\n")
    assert main(["wordtree", "build", "--labels", str(labels), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.labels line 2" in err and "Traceback" not in err
