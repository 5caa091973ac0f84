"""Fixtures: WordNet and the trees built once per session (1k: < 1 s, 9k: ~3 s)."""

from __future__ import annotations

import pytest

from tests.conftest import shared_path
from wordtree_build.build import build_wordtree
from wordtree_build.labelmaps import imagenet1k_wnids, nine_k_wnids


@pytest.fixture(scope="session")
def wn():
    from wordtree_build.wordnet import load_wordnet

    return load_wordnet()


@pytest.fixture(scope="session")
def tree_1k(wn):
    return build_wordtree(imagenet1k_wnids(), wn=wn)


@pytest.fixture(scope="session")
def tree_9k(wn):
    return build_wordtree(nine_k_wnids(), wn=wn, method="incremental", source="9k.labels")


@pytest.fixture(scope="session")
def darknet_dir():
    return shared_path("darknet")
