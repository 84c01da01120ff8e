"""An arm64 (aarch64) CPython 3.12 on this x86_64 lab, run through qemu-user: the interpreter the arm64 plugin
daemon image has, so that a plugin repackaged for arm64 is installed with the daemon's EXACT command in an
arm64 venv (uv picks the wheels by asking the interpreter), and its extension modules are imported for real.

No arm64 CPython 3.12 is reachable from the lab's network (python-build-standalone is on GitHub; Debian has no
3.12; Ubuntu's arm64 packages are on ports.ubuntu.com), so the lab makes one, once per machine (about 4
minutes on 2 cores; cached under the lab root):
- a Debian 12 arm64 userland's libraries (debootstrap --foreign: packages unpacked, nothing run), with the
  -dev packages CPython's modules need (ssl, zlib, ffi, bz2, lzma, sqlite, uuid);
- CPython cross-built against it (Debian's aarch64 cross compiler, --sysroot) from Ubuntu 24.04's source of
  python3.12 (archive.ubuntu.com, sha256 pinned below), linked as on an arm64 Debian (/lib/ld-linux-aarch64.so.1);
- Debian's qemu takes /etc/qemu-binfmt/aarch64 as the guest's library root: linked to that userland, the
  interpreter AND the wheels' extension modules (libc, librt, libstdc++, libssl...) load with no environment of
  their own (the daemon scrubs uv's environment, so nothing may depend on QEMU_LD_PREFIX).

``python -m tests.lab.crosspython`` builds it ahead (root on Debian) and prints its path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from scripts.core.console import LOG, setup_logging
from scripts.core.errors import AirgapError

from .host import ARM64_PACKAGES, LAB_ROOT, _cache_lock, _require_root_debian, _sh, ensure_packages

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
#: Debian's qemu-user: the default QEMU_LD_PREFIX of a binary run through binfmt_misc
GUEST_ROOT = Path("/etc/qemu-binfmt/aarch64")
#: the arm64 userland: what the daemon image's Debian has, plus the headers CPython's modules build against
USERLAND = LAB_ROOT / "python" / "debian-bookworm-arm64"
USERLAND_PACKAGES = ("libc6-dev", "libstdc++6", "libssl-dev", "zlib1g-dev", "libffi-dev", "libbz2-dev",
                     "liblzma-dev", "libsqlite3-dev", "uuid-dev")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: Ubuntu 24.04 (noble) python3.12's upstream tarball, from its Sources index
SOURCE_URL = "http://archive.ubuntu.com/ubuntu/pool/main/p/python3.12/python3.12_3.12.3.orig.tar.xz"
SOURCE_SHA256 = "56bfef1fdfc1221ce6720e43a661e3eb41785dd914ce99698d8c7896af4bdaa1"
VERSION = "3.12"
#: configure cannot run aarch64 test programs: the answers they would give on the daemon image (glibc)
CONFIG_SITE = ("ac_cv_file__dev_ptmx=yes", "ac_cv_file__dev_ptc=no", "ac_cv_buggy_getaddrinfo=no")
#: modules for terminals, old databases and GUIs: no plugin needs them, and the userland has no headers for them
LEFT_OUT = ("_curses", "_curses_panel", "_dbm", "_gdbm", "readline", "_tkinter", "nis", "_crypt")
#: a changed recipe builds a new interpreter beside the old one (never a stale one taken for it)
RECIPE = hashlib.sha256(repr((SOURCE_SHA256, USERLAND_PACKAGES, CONFIG_SITE, LEFT_OUT)).encode()).hexdigest()[:10]
PREFIX = LAB_ROOT / "python" / f"cpython-3.12.3-aarch64-{RECIPE}"
PROBE = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"


def python_path() -> Path:
    return PREFIX / "bin" / f"python{VERSION}"


def runs(python: Path) -> bool:
    """True when ``python`` starts here and says it is CPython 3.12 on aarch64."""
    try:
        proc = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=120)
    except OSError:
        return False
    return proc.returncode == 0 and proc.stdout.split() == [VERSION, "aarch64"]


def ensure_binfmt() -> None:
    """qemu-aarch64 registered with binfmt_misc (flag F: the emulator is opened now, so the handler also works
    inside network namespaces and containers). Root; changes the running kernel's handlers only."""
    if (BINFMT_DIR / "qemu-aarch64").exists():
        return
    if not (BINFMT_DIR / "register").exists():
        _sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
    if not BINFMT_CONF.is_file():
        raise AirgapError(f"{BINFMT_CONF} is missing: apt-get install qemu-user-static")
    (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip())
    LOG.info("binfmt_misc: qemu-aarch64 registered (%s)", BINFMT_CONF)


def ensure_userland() -> Path:
    """The Debian arm64 libraries and headers, unpacked by debootstrap's first stage (no emulation needed).
    Called under ensure_python's setup lock."""
    if (USERLAND / "usr/lib/aarch64-linux-gnu/libssl.so.3").is_file():
        return USERLAND
    if USERLAND.exists():
        shutil.rmtree(USERLAND)
    partial = Path(tempfile.mkdtemp(prefix="dal-arm64-", dir=LAB_ROOT))
    try:
        _sh(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
             f"--include={','.join(USERLAND_PACKAGES)}", "bookworm", str(partial), DEBIAN_MIRROR], timeout=1200)
        # the first stage unpacks the base system only; the included packages wait in apt's archive
        for deb in sorted((partial / "var/cache/apt/archives").glob("*.deb")):
            _sh(["dpkg-deb", "-x", str(deb), str(partial)], timeout=300)
            deb.unlink()
        partial.rename(USERLAND)
    finally:
        if partial.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=False)
    return USERLAND


def ensure_guest_root(userland: Path) -> None:
    """/etc/qemu-binfmt/aarch64 -> the arm64 userland. Something else there is not the lab's: refused."""
    if GUEST_ROOT.is_symlink() and Path(os.readlink(GUEST_ROOT)) == userland:
        return
    if GUEST_ROOT.exists() or GUEST_ROOT.is_symlink():
        raise AirgapError(f"{GUEST_ROOT} exists and is not the lab's link to {userland}: qemu-aarch64 takes it as the "
                          f"arm64 library root; remove it (or move it aside) and run again")
    GUEST_ROOT.parent.mkdir(parents=True, exist_ok=True)
    GUEST_ROOT.symlink_to(userland)
    LOG.info("qemu-aarch64: guest library root %s -> %s", GUEST_ROOT, userland)


def _source(downloads: Path) -> Path:
    tarball = downloads / Path(SOURCE_URL).name
    if not tarball.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(f".partial-{os.getpid()}")
        LOG.info("downloading %s", SOURCE_URL)
        with urllib.request.urlopen(SOURCE_URL, timeout=120) as resp, open(partial, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        partial.rename(tarball)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        tarball.unlink()
        raise AirgapError(f"{SOURCE_URL}: sha256 {digest}, expected {SOURCE_SHA256} (removed; run again)")
    return tarball


def _build(tarball: Path, work: Path, staging: Path) -> None:
    """Build CPython for this machine (the cross build needs a build Python of the same version), then for
    aarch64, installed under ``staging`` + PREFIX. Niced: integration tests run beside it."""
    src, host, cross = work / "src", work / "host", work / "cross"
    for d in (src, host, cross):
        d.mkdir()
    _sh(["tar", "-xJf", str(tarball), "-C", str(src), "--strip-components=1"], timeout=600)
    nice, jobs = ["nice", "-n", "10"], ["-j", str(os.cpu_count() or 2)]
    _sh([*nice, str(src / "configure"), "-q", "--without-ensurepip", "--disable-test-modules"], cwd=str(host),
        timeout=600)
    _sh([*nice, "make", "-s", *jobs], cwd=str(host), timeout=1800)
    site = cross / "config.site"
    site.write_text("\n".join([*CONFIG_SITE, *(f"py_cv_module_{m}=n/a" for m in LEFT_OUT)]) + "\n")
    sysroot = f"--sysroot={USERLAND}"
    pkg_config = {"PKG_CONFIG_SYSROOT_DIR": str(USERLAND), "PKG_CONFIG_PATH": "", "PKG_CONFIG_LIBDIR": ":".join(
        f"{USERLAND}/usr/{d}/pkgconfig" for d in ("lib/aarch64-linux-gnu", "share"))}
    _sh([*nice, str(src / "configure"), "-q", "--host=aarch64-linux-gnu", "--build=x86_64-linux-gnu",
         f"--with-build-python={host / 'python'}", f"--prefix={PREFIX}", "--without-ensurepip",
         "--disable-test-modules", f"CC=aarch64-linux-gnu-gcc {sysroot}", "AR=aarch64-linux-gnu-ar",
         "READELF=aarch64-linux-gnu-readelf"],
        cwd=str(cross), env={"CONFIG_SITE": str(site), "PKG_CONFIG": "pkg-config", **pkg_config}, timeout=600)
    _sh([*nice, "make", "-s", *jobs], cwd=str(cross), timeout=1800)
    _sh([*nice, "make", "-s", "install", f"DESTDIR={staging}"], cwd=str(cross), timeout=1800)


def ensure_python() -> Path:
    """The aarch64 CPython 3.12, built once per machine; emulation registered. Callers in parallel processes
    wait for the first one's setup (one lock around all of it: apt, binfmt_misc, userland, build)."""
    python = python_path()
    if _ready(python):
        return python
    _require_root_debian()
    with _cache_lock(LAB_ROOT / "python" / "arm64-setup"):
        if _ready(python):
            return python
        ensure_packages((*ARM64_PACKAGES, "debootstrap"))
        ensure_binfmt()
        ensure_guest_root(ensure_userland())
        if not runs(python):
            if PREFIX.exists():
                shutil.rmtree(PREFIX)
            tarball = _source(LAB_ROOT / "downloads")
            with tempfile.TemporaryDirectory(prefix="dal-cpython-", dir=LAB_ROOT) as tmp:
                staging = Path(tmp) / "staging"
                _build(tarball, Path(tmp), staging)
                (staging / PREFIX.relative_to("/")).rename(PREFIX)
            LOG.info("built %s", python)
    if not runs(python):
        raise AirgapError(f"{python} does not run as CPython {VERSION} on aarch64 (is qemu-aarch64 registered? "
                          f"cat {BINFMT_DIR}/qemu-aarch64; does {GUEST_ROOT} hold the arm64 userland?)")
    return python


def _ready(python: Path) -> bool:
    return ((BINFMT_DIR / "qemu-aarch64").exists() and GUEST_ROOT.resolve() == USERLAND.resolve()
            and runs(python))


def main() -> int:
    setup_logging()
    try:
        print(ensure_python())
    except AirgapError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
