"""The project's container images, built here from ``images/<service>/Containerfile``.

No public image registry is reachable on the machines this project runs on,
so every image is built locally on a Debian bookworm base made with
``debootstrap --variant=minbase`` from the host's own Debian archive. Each
service image installs the same Debian package versions the local
environment runs (read from the host's ``dpkg-query``), so a container runs
the very binaries the local processes do.

Builds are idempotent: an image's tag is a hash of its Containerfile, its
build arguments, its inputs (the Kafka jars, Patroni's wheels) and the base
image's id, so a second ``harness images build`` finds every tag and builds
nothing. An image built FROM another of ours (``patroni`` on ``postgres``)
names that image's tag as a build argument, so it changes with it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backbone_harness.containers.engine import EngineError, podman

__all__ = [
    "BASE_IMAGE",
    "IMAGES",
    "BuildResult",
    "ImageDef",
    "build_all",
    "build_base",
    "build_image",
    "image_ref",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
#: The locally made Debian base every service image starts FROM.
BASE_IMAGE = "localhost/backbone-base:bookworm"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
KAFKA_VERSION = "4.1.1"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
#: Debian bookworm's Python, which runs Patroni in the image: the host builds
#: the wheels, so it must be the same minor version (binary wheels: cp311).
IMAGE_PYTHON = (3, 11)

Progress = Callable[[str], None]


def _cache_dir() -> Path:
    return Path(os.environ.get("BACKBONE_CACHE", str(Path.home() / ".cache" / "backbone")))


def kafka_home() -> Path:
    """Where ``scripts/setup.d/10-kafka.sh`` put the pinned Kafka jars."""
    return _cache_dir() / f"kafka-{KAFKA_VERSION}"


def host_version(package: str) -> str:
    """The version of a Debian package installed on this host (the local environment's)."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise EngineError(
            f"the Debian package {package} is not installed on this host, so its version "
            "cannot be pinned in the image; run `make setup` first"
        )
    return done.stdout.strip()


def _archive_versions(package: str) -> list[str]:
    """Versions of ``package`` the archive serves (newest first), per the host's apt lists."""
    done = subprocess.run(
        ["apt-cache", "madison", package], capture_output=True, text=True, check=False
    )
    return [line.split("|")[1].strip() for line in done.stdout.splitlines() if "|" in line]


@functools.cache
def pinned_version(package: str) -> tuple[str, str | None]:
    """The version an image installs, and a note when it is not the host's.

    Cached per process (asked once per image for its tag, again for a build).
    The host's version when the archive still serves it (the normal case);
    otherwise (a security update replaced it) the archive's newest, with a note
    saying so: an image cannot install what the archive no longer has.
    """
    host = host_version(package)
    served = _archive_versions(package)
    if host in served or not served:
        return host, None
    return served[
        0
    ], f"{package}: host has {host}, no longer in the archive; image pins {served[0]}"


@dataclass(frozen=True)
class ImageDef:
    """One service image: its Containerfile folder, pinned packages and build inputs."""

    name: str
    #: Build argument -> Debian package whose host version it pins.
    packages: dict[str, str] = field(default_factory=dict)
    #: The build context (default: the Containerfile's folder).
    context: Callable[[], Path] | None = None
    #: Build arguments that are no Debian package (another image's tag, a pin).
    args: Callable[[], dict[str, str]] | None = None
    #: Our image it is built FROM (built first; its tag is one of ``args``).
    base: str | None = None

    @property
    def containerfile(self) -> Path:
        return IMAGES_DIR / self.name / "Containerfile"

    def build_args(self) -> dict[str, str]:
        pinned = {arg: pinned_version(pkg)[0] for arg, pkg in self.packages.items()}
        return dict(sorted({**pinned, **(self.args() if self.args else {})}.items()))

    def version_notes(self) -> list[str]:
        """Where the image's package version differs from the host's (and why)."""
        return [n for pkg in self.packages.values() if (n := pinned_version(pkg)[1])]

    def context_dir(self) -> Path:
        return self.context() if self.context else self.containerfile.parent


def _kafka_context() -> Path:
    libs = kafka_home() / "libs"
    if not (kafka_home() / "libs.complete").exists() or not libs.is_dir():
        raise EngineError(
            f"the Kafka {KAFKA_VERSION} jars are not in {libs}; run `make setup` "
            "(scripts/setup.d/10-kafka.sh resolves them) and build again"
        )
    return kafka_home()


def patroni_version() -> str:
    """The Patroni version the local environment pins (constraints.txt): one pin for both."""
    match = re.search(r"^patroni==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    if match is None:
        raise EngineError(f"{CONSTRAINTS} pins no patroni==VERSION; add the pin the local env uses")
    return match.group(1)


def _patroni_context() -> Path:
    """``~/.cache/backbone/patroni-<version>``, whose ``wheels/`` the image installs.

    Built once on the host with pip (``pip wheel``, against constraints.txt, so
    Patroni's dependencies are the pinned ones) and reused by every later build.
    Why not ``pip install`` inside ``podman build``: the image would depend on
    reaching a package index from the build container (the host's pip trusts
    the machine's CA bundle, the image's would not), and with ``--layers=false``
    every rebuild would fetch again; the host's pip cache makes this a second.
    """
    home = _cache_dir() / f"patroni-{patroni_version()}"
    wheels, complete = home / "wheels", home / "wheels.complete"
    if complete.exists() and wheels.is_dir():
        return home
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise EngineError(
            f"Patroni's wheels for the image (Python {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}) are "
            f"built with this interpreter, which is {sys.version_info[0]}.{sys.version_info[1]}; "
            "run the harness from the project's .venv (`make setup`)"
        )
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    requirement = f"patroni[etcd3,psycopg3]=={patroni_version()}"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-c", str(CONSTRAINTS)]
    done = subprocess.run(
        [*pip, "-w", str(wheels), requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise EngineError(
            f"pip could not build the wheels of {requirement} into {wheels}:\n{tail}\n"
            "check that pip reaches its package index, then build again"
        )
    complete.touch()
    return home


def _patroni_args() -> dict[str, str]:
    return {"POSTGRES_IMAGE": image_ref("postgres"), "PATRONI_VERSION": patroni_version()}


#: Every image the project builds, by service name (``localhost/backbone-<name>``).
IMAGES: dict[str, ImageDef] = {
    d.name: d
    for d in (
        ImageDef("redis", {"REDIS_VERSION": "redis-server"}),
        ImageDef("kafka", {"JRE_VERSION": "openjdk-17-jre-headless"}, context=_kafka_context),
        ImageDef("postgres", {"POSTGRES_VERSION": "postgresql-15"}),
        ImageDef("redis-exporter", {"EXPORTER_VERSION": "prometheus-redis-exporter"}),
        ImageDef("postgres-exporter", {"EXPORTER_VERSION": "prometheus-postgres-exporter"}),
        ImageDef("prometheus", {"PROMETHEUS_VERSION": "prometheus"}),
        # Patroni's store on the Pulumi Docker/Kubernetes ha stacks (Images.etcd).
        ImageDef("etcd", {"ETCD_VERSION": "etcd-server"}),
        # PostgreSQL under Patroni (the compose ha size): the postgres image plus a venv.
        ImageDef(
            "patroni",
            {"VENV_VERSION": "python3-venv"},
            context=_patroni_context,
            args=_patroni_args,
            base="postgres",
        ),
    )
}


def _image_id(ref: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _inputs_digest(image: ImageDef) -> str:
    """A digest of what goes into the image besides the Containerfile (the jar
    or wheel list: each file's name carries its version)."""
    h = hashlib.sha256()
    if image.context is not None:
        ctx = image.context_dir()
        for sub in ("libs", "wheels"):
            for path in sorted((ctx / sub).glob("*")):
                h.update(f"{path.name}:{path.stat().st_size}\n".encode())
    return h.hexdigest()


def image_ref(name: str) -> str:
    """The content-addressed tag of one service image (needs the base image to exist)."""
    image = IMAGES[name]
    base_id = _image_id(BASE_IMAGE)
    if base_id is None:
        raise EngineError(f"the base image {BASE_IMAGE} is missing; run `harness images build`")
    h = hashlib.sha256()
    h.update(image.containerfile.read_bytes())
    for arg, value in image.build_args().items():
        h.update(f"{arg}={value}\n".encode())
    h.update(_inputs_digest(image).encode())
    h.update(base_id.encode())
    return f"localhost/backbone-{name}:{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class BuildResult:
    """One image: its tag, whether it was built now (or reused), and how long that took."""

    name: str
    ref: str
    built: bool
    seconds: float


@contextmanager
def _scratch(under: Path) -> Iterator[Path]:
    under.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rootfs.", dir=under))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _archive_url() -> str:
    """The Debian archive the host uses (first ``URIs:`` of debian.sources)."""
    if DEBIAN_SOURCES.exists():
        for line in DEBIAN_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def build_base(progress: Progress = print, *, rebuild: bool = False) -> BuildResult:
    """The Debian bookworm minbase image, made with debootstrap and ``podman import``."""
    start = time.monotonic()
    if not rebuild and _image_id(BASE_IMAGE) is not None:
        return BuildResult("base", BASE_IMAGE, False, time.monotonic() - start)
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is not installed; run `make setup` (as root) first")
    url = _archive_url()
    progress(f"debootstrap bookworm (minbase) from {url} (about a minute)")
    with _scratch(_cache_dir() / "images") as root:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), url],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stdout.strip().splitlines()[-10:] + done.stderr.splitlines()[-5:])
            raise EngineError(f"debootstrap failed (exit {done.returncode}):\n{tail}")
        # The host's sources (with bookworm-updates and -security), so packages
        # installed in images are the versions the host has.
        if DEBIAN_SOURCES.exists():
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            shutil.copy(DEBIAN_SOURCES, root / "etc/apt/sources.list.d/debian.sources")
        (root / "etc/apt/apt.conf.d/90backbone").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        )
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        progress(f"importing the root file system as {BASE_IMAGE}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise EngineError(
                f"podman import of the base image failed: {imp.stderr.strip()[-500:]}"
            )
    return BuildResult("base", BASE_IMAGE, True, time.monotonic() - start)


def build_image(name: str, progress: Progress = print) -> BuildResult:
    """Build one service image unless its content-addressed tag already exists."""
    start = time.monotonic()
    image = IMAGES[name]
    if image.base is not None:
        build_image(image.base, progress)
    ref = image_ref(name)
    if _image_id(ref) is not None:
        return BuildResult(name, ref, False, time.monotonic() - start)
    for note in image.version_notes():
        progress(note)
    progress(f"building {ref}")
    args: list[str] = ["build", "--layers=false", "-t", ref]
    for arg, value in image.build_args().items():
        args += ["--build-arg", f"{arg}={value}"]
    args += ["-f", str(image.containerfile), str(image.context_dir())]
    podman(*args, timeout=1800)
    return BuildResult(name, ref, True, time.monotonic() - start)


def build_all(
    names: Sequence[str] | None = None, progress: Progress = print, *, rebuild_base: bool = False
) -> list[BuildResult]:
    """The base and every named (default: every) service image, built or reused."""
    results = [build_base(progress, rebuild=rebuild_base)]
    for name in names or list(IMAGES):
        if name not in IMAGES:
            raise EngineError(f"no image named {name!r}; known: {', '.join(IMAGES)}")
        result = build_image(name, progress)
        progress(
            f"{name}: {'built' if result.built else 'reused'} {result.ref} ({result.seconds:.1f} s)"
        )
        results.append(result)
    return results


def main() -> None:
    """``python -m backbone_harness.containers.images [NAME ...]``: what the setup step runs."""
    import sys

    say: Progress = lambda msg: print(f"\033[1m[images]\033[0m {msg}", flush=True)  # noqa: E731
    try:
        results = build_all(sys.argv[1:] or None, say)
    except EngineError as exc:
        print(f"images: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    built = [r for r in results if r.built]
    say(
        f"{len(results)} images ready, {len(built)} built ({sum(r.seconds for r in results):.0f} s)"
    )


if __name__ == "__main__":
    main()
