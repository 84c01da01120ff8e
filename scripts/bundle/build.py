"""`invoke bundle`: pull the planned images, save them ONCE streamed into zstd/gzip, add the Dify
``docker/`` directory, the toolkit and its wheels, and write a manifest with checksums.

Plan, then act: :func:`make_plan` computes everything as data (printed by ``--dry-run``);
:func:`build` performs it into a hidden ``.NAME.partial`` directory renamed into place only when
complete, so an interrupted run never leaves a bundle that looks finished. With a signing key the finished
manifest is signed (:mod:`scripts.bundle.signature`); :func:`render_done` ends with the bundle's digest.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform as _platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts import __version__
from scripts.bundle import delta, signature, transfer
from scripts.bundle.archive import archive_name, ensure_archive
from scripts.bundle.manifest import FORMAT_VERSION, MANIFEST, file_entry, walk_files, write_sums
from scripts.bundle.manifest import verify as verify_directory
from scripts.core.console import LOG, human_size, progress, redact
from scripts.core.errors import AirgapError, ImageMissing
from scripts.core.lock import hold, shared_cache
from scripts.core.resources import PACKAGE_DIR, TOOLKIT_ROOT
from scripts.dify.plan import ImagePlan
from scripts.engine.client import Engine, normalize_arch
from scripts.engine.images import add_config_ids, save_argv, save_compressed
from scripts.plugins import daemon as plugin_daemon
from scripts.plugins import repackage as plugins

TOOLKIT_ITEMS = ("tasks.py", "invoke.yaml", "pyproject.toml", "requirements.txt", "README.md",
                 "scripts", "env-templates", "compose-overrides", "docs")
#: Runtime data a build box may have under docker/volumes: never shipped (and .env holds secrets).
PROJECT_EXCLUDES = (".env", "middleware.env", "volumes/app", "volumes/db", "volumes/redis", "volumes/plugin_daemon",
                    "volumes/weaviate", "volumes/qdrant", "volumes/milvus", "volumes/mysql")
PULL_RETRIES = 3
DEFAULT_TARGET_PYTHON = "3.9"  # Red Hat 9's python3
EXTENSIONS = {"zstd": "tar.zst", "gzip": "tar.gz"}


FAT32_LIMIT = 4 << 30  # FAT32 holds files of up to 4 GiB - 1 byte


def parse_chunk_size(text: str | int | None) -> int | None:
    """``4G``, ``700M``, ``4GiB``, ``1.5g``, ``123`` (bytes) -> bytes; None/"" -> None."""
    if text in (None, "", 0, "0"):
        return None
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", str(text), re.I)
    if not m:
        raise AirgapError(f"chunk size {text!r} is not a size; write e.g. 4G, 700M or 1048576")
    value = float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())
    if value < 1024 * 1024:
        raise AirgapError(f"chunk size {text!r} is below 1 MiB; use a size like 700M or 4000M")
    if value >= FAT32_LIMIT:
        LOG.warning("chunk size %s: parts of %d bytes do not fit FAT32 (at most %d bytes a file); for FAT32 media "
                    "use 4000M", text, int(value), FAT32_LIMIT - 1)
    return int(value)


def parse_platform(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"(linux)/(amd64|arm64|x86_64|aarch64)", text.strip())
    if not m:
        raise AirgapError(f"platform {text!r} is not supported; use linux/amd64 or linux/arm64")
    return m.group(1), normalize_arch(m.group(2))


def host_platform() -> str:
    return f"linux/{normalize_arch(_platform.machine())}"


# --- the plan ------------------------------------------------------------------------------------

@dataclass
class BundlePlan:
    version: str
    project_dir: Path
    output: Path
    name: str
    platform: str
    compression: str
    chunk_size: int | None
    pull: str
    target_python: str
    image_plan: ImagePlan
    wheelhouse: Path | None = None
    plugins: list[str] = field(default_factory=list)
    plugin_sign_key: str | None = None
    archive: bool = False
    source: str | None = None
    daemon_snapshot: str | None = None  # --daemon-snapshot DIR (scripts/data/snapshot.py)
    sign_key: str | None = None  # --sign-key: the site's private key signs manifest.json (bundle/signature.py)
    # copies a verified snapshot into the staging dir: data.snapshot.add_to_bundle, given by the caller
    # (bundle sits below data in the layers, docs/architecture.md)
    add_snapshot: Callable[[str, Path], dict] | None = None
    against: delta.Base | None = None  # --against: what the target holds (bundle/delta.py)

    @property
    def final_dir(self) -> Path:
        return self.output / self.name

    def to_dict(self) -> dict:
        """What ``--json`` shows of the plan (no key material: the key files' paths only)."""
        return {"version": self.version, "name": self.name, "output": str(self.output), "platform": self.platform,
                "compression": self.compression, "chunk_size": self.chunk_size, "source": self.source,
                "project_dir": str(self.project_dir), "images": self.image_plan.refs, "plugins": self.plugins,
                "profiles": self.image_plan.profiles, "mode": self.image_plan.mode, "sign_key": self.sign_key,
                "daemon_snapshot": self.daemon_snapshot}

    @property
    def partial_dir(self) -> Path:
        return self.output / f".{self.name}.partial"

    @property
    def archive_name(self) -> str:
        return f"images.{EXTENSIONS[self.compression]}"

    def render(self, engine: Engine) -> str:
        refs = self.image_plan.refs
        lines = [f"bundle {self.final_dir}",
                 f"  dify {self.version} from {self.source or self.project_dir}",
                 f"  platform {self.platform}, compression {self.compression}, "
                 f"chunks {human_size(self.chunk_size) if self.chunk_size else 'none'}, pull {self.pull}",
                 f"  profiles {', '.join(self.image_plan.profiles)}; "
                 f"vector stores {', '.join(self.image_plan.vector_stores)}"
                 + (f"; mode {self.image_plan.mode}" if self.image_plan.mode != "full" else ""),
                 *([f"  delta against {self.against.kind} {self.against.source} ({self.against.digest}, Dify "
                    f"{self.against.dify_version or 'not recorded'}): images and layers it holds are left out"]
                   if self.against else []),
                 f"  wheels for python {self.target_python} "
                 f"({'from ' + str(self.wheelhouse) if self.wheelhouse else 'pip download'})",
                 "", "commands:"]
        if self.pull != "never":
            lines += [f"  {shlex.join([engine.runtime, 'pull', '--platform', self.platform, r])}"
                      + ("   # only if missing" if self.pull == "missing" else "") for r in refs]
        lines.append(f"  {shlex.join(save_argv(engine, refs))} | {self.compression} "
                     f"> {self.final_dir / self.archive_name}{'.part-NNN' if self.chunk_size else ''}")
        if self.sign_key:
            lines.append(f"  sign {self.final_dir / MANIFEST} with {self.sign_key} > {signature.SIGNATURE}")
        if self.archive:
            lines.append(f"  tar of the bundle directory > {self.output / (self.name + '.tar')}"
                         f"{'.part-NNN' if self.chunk_size else ''} (+ .SHA256SUMS)")
        return "\n".join(lines)


def bundle_name(version: str, platform: str, mode: str = "full", base: delta.Base | None = None) -> str:
    """``dify-1.16.0-airgap-amd64``; a middleware bundle: ``dify-1.16.0-middleware-airgap-amd64``; a delta bundle:
    ``dify-1.16.0-from-1.11.3-airgap-amd64`` (``-delta-`` when the base's release is not known)."""
    cut = "" if base is None else f"-from-{base.dify_version}" if base.dify_version else "-delta"
    return f"dify-{version}{'' if mode == 'full' else '-' + mode}{cut}-airgap-{parse_platform(platform)[1]}"




# --- acting --------------------------------------------------------------------------------------

def pull_images(engine: Engine, refs: Sequence[str], platform: str, policy: str) -> list[str]:
    """Pull per policy (always | missing | never) with retries; returns the refs actually pulled."""
    pulled = []
    with progress(len(refs), "pull", unit="images") as bar:
        for i, ref in enumerate(refs, 1):
            if _pull_one(engine, ref, f"[{i}/{len(refs)}]", platform, policy):
                pulled.append(ref)
            bar.update(1)
    return pulled


def _pull_one(engine: Engine, ref: str, where: str, platform: str, policy: str) -> bool:
    """Pull ``ref`` unless the policy says not to (then False), retried with backoff."""
    present = engine.image_exists(ref)
    if policy == "never" or (policy == "missing" and present):
        LOG.info("%s %s: %s", where, ref, "present, reused" if present else "not pulled (--pull never)")
        return False
    for attempt in range(1, PULL_RETRIES + 1):
        LOG.info("%s pulling %s (attempt %d/%d)", where, ref, attempt, PULL_RETRIES)
        res = engine.run(["pull", "--platform", platform, ref], check=False, timeout=3600)
        if res.ok:
            return True
        if attempt == PULL_RETRIES:
            raise ImageMissing(f"could not pull {ref} after {PULL_RETRIES} attempts; check the registry or mirror, "
                               f"or pull it by hand and re-run with --pull missing",
                               image=ref, argv=res.argv, returncode=res.returncode, stderr=res.stderr)
        time.sleep(2 ** attempt)  # back off before retrying a flaky registry
    return False


def image_records(engine: Engine, image_plan: ImagePlan, platform: str) -> list[dict]:
    """Inspect every image BEFORE saving: present, and really of the bundle's platform."""
    want_os, want_arch = parse_platform(platform)
    records, wrong, missing = [], [], []
    for planned in image_plan.images:
        try:
            info = engine.inspect_image(planned.ref)
        except ImageMissing:
            missing.append(f"{planned.ref} (services: {', '.join(planned.services)})")
            continue
        arch = normalize_arch(info.get("Architecture", ""))
        if arch != want_arch or info.get("Os", "linux") != want_os:
            wrong.append(f"{planned.ref} is {info.get('Os')}/{arch}")
        digests = info.get("RepoDigests") or []
        records.append({"ref": planned.ref, "id": info.get("Id"), "repo_digest": digests[0] if digests else None,
                        "size": int(info.get("Size") or 0), "architecture": arch, "os": info.get("Os", "linux"),
                        "services": planned.services, "profiles": planned.profiles})
    if missing:
        raise ImageMissing("images not present locally: " + "; ".join(missing)
                           + ". Pull them (drop --pull never) and re-run.", image=missing[0].split()[0])
    if wrong:
        raise AirgapError(f"wrong platform for a {platform} bundle: " + "; ".join(wrong)
                          + f". Re-pull with --platform {platform} --pull always.")
    return records






def site_env_file(path: str) -> bool:
    """A rendered env layer of 1.14+ (``envs/**/NAME.env``): site values and secrets, never shipped."""
    return path.startswith("envs/") and path.endswith(".env")


def copy_tree(src: Path, dest: Path, excludes: Sequence[str] = ()) -> None:
    """Copy regular files and directories; symlinks are left out with a warning (a bundle holds regular files
    only: the manifest cannot pin a link, and verify refuses one)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(src)
        skipped = set()
        for n in names:
            path = (rel / n).as_posix()
            if (path in excludes or n in ("__pycache__", ".pytest_cache") or n.endswith(".pyc")
                    or (excludes and site_env_file(path))):
                skipped.add(n)
            elif (Path(directory) / n).is_symlink():
                LOG.warning("%s is a symlink: not copied into the bundle (copy its target there if it is needed)",
                            Path(directory) / n)
                skipped.add(n)
        return skipped

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)


def prune_empty_dirs(root: Path) -> None:
    """Remove empty directories below ``root``: the manifest lists files, so the directory and archive forms
    hold the same tree and verify, which refuses unlisted directories, passes."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(Path(w[0]).parts)):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()


def copy_toolkit(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in TOOLKIT_ITEMS:
        src = PACKAGE_DIR if item == "scripts" else TOOLKIT_ROOT / item
        if src.is_dir():
            copy_tree(src, dest / item)
        elif src.is_file():
            shutil.copy2(src, dest / item)


def wheel_platforms(arch: str) -> list[str]:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    tags = ["manylinux2014", *(f"manylinux_2_{n}" for n in range(17, 35))]
    return [f"{t}_{machine}" for t in tags]


def download_wheels(dest: Path, target_python: str, arch: str, wheelhouse: Path | None = None) -> list[str]:
    """The toolkit's pinned deps and podman-compose as binary wheels for the TARGET Python/platform."""
    if not re.fullmatch(r"3\.\d{1,2}", target_python):
        raise AirgapError(f"--target-python {target_python!r} must look like 3.9, 3.11 or 3.12")
    cache = wheelhouse or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dify-airgap" / \
        "wheels" / f"py{target_python}-{arch}"
    cache.mkdir(parents=True, exist_ok=True)
    nodot = target_python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(cache),
            # X.Y alone means X.Y.0 to pip, which "Requires-Python: !=3.9.0,!=3.9.1" (cryptography)
            # rejects; air-gapped hosts run a patched X.Y, so check against a late micro version.
            "--python-version", f"{target_python}.99", "--implementation", "cp", "--abi", f"cp{nodot}",
            "--abi", "abi3", "--abi", "none"]
    for plat in wheel_platforms(arch):
        argv += ["--platform", plat]
    argv += ["-r", str(TOOLKIT_ROOT / "requirements.txt"), "-r", str(TOOLKIT_ROOT / "requirements-podman.txt")]
    if wheelhouse:
        argv += ["--no-index", "--find-links", str(wheelhouse)]
    LOG.info("+ %s", shlex.join(argv))
    # two bundles at once share the cache: pip must not copy over the other's files, nor a half-written wheel
    # be linked into a bundle
    with shared_cache(cache, "the wheel cache"):
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode:
            raise AirgapError(f"could not get wheels for python {target_python} ({arch}):\n{res.stderr[-2500:]}\n"
                              f"Check PyPI access or pass --wheelhouse DIR with the wheels.")
        dest.mkdir(parents=True, exist_ok=True)
        names = []
        for wheel in sorted(cache.glob("*.whl")):
            target = dest / wheel.name
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copy2(wheel, target)
            names.append(wheel.name)
    return names


INSTALL_SH = """#!/bin/sh
# Bootstraps the dify-airgap toolkit on a host with python3 and NO network.
#   sh install.sh            -> venv in ./.venv next to this file
#   DIFY_AIRGAP_VENV=/opt/dify-airgap/venv sh install.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${DIFY_AIRGAP_VENV:-$HERE/.venv}
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || {
  echo "install.sh: $PY not found; install python3 (dnf install -y python3)" >&2; exit 1; }
TARGET=@TARGET_PYTHON@
HAVE=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$HAVE" != "$TARGET" ]; then
  echo "install.sh: this bundle's wheels are for Python $TARGET but $PY is $HAVE." >&2
  echo "  Re-make the bundle with --target-python $HAVE, or run with PYTHON=python$TARGET sh install.sh" >&2
  exit 1
fi
# The default venv lives in the bundle directory: made afresh (--clear), so nothing planted there is kept.
if [ -z "${DIFY_AIRGAP_VENV:-}" ]; then CLEAR=--clear; else CLEAR=; fi
"$PY" -m venv $CLEAR "$VENV"
"$VENV/bin/python" -m pip install --no-index --find-links "$HERE/wheels" --disable-pip-version-check -q \\
  -r "$HERE/toolkit/requirements.txt"
cat > "$VENV/bin/dify-airgap" <<EOF
#!/bin/sh
# Runs the bundled toolkit's invoke tasks: dify-airgap install BUNDLE --runtime podman, ...
# Bytecode only in the venv: a .pyc planted in the bundle's toolkit is never run (verify names it as unlisted).
export PYTHONPYCACHEPREFIX="$VENV/pycache"
exec "$VENV/bin/invoke" --search-root "$HERE/toolkit" "\\$@"
EOF
chmod +x "$VENV/bin/dify-airgap"
echo "dify-airgap installed in $VENV"
echo "next: $VENV/bin/dify-airgap --list"
"""


def make_plan(image_plan: ImagePlan, *, version: str, project_dir: Path, output: Path, platform: str,
              compression: str, chunk_size: str | int | None, pull: str, target_python: str,
              wheelhouse: str | None = None, plugins: Sequence[str] = (),
              plugin_sign_key: str | None = None, archive: bool = False,
              source: str | None = None, daemon_snapshot: str | None = None,
              add_snapshot: Callable[[str, Path], dict] | None = None, sign_key: str | None = None,
              against: delta.Base | None = None) -> BundlePlan:
    if compression not in EXTENSIONS:
        raise AirgapError(f"--compression {compression!r}: choose zstd or gzip")
    if pull not in ("always", "missing", "never"):
        raise AirgapError(f"--pull {pull!r}: choose always, missing or never")
    parse_platform(platform)
    if daemon_snapshot and add_snapshot is None:
        raise AirgapError("--daemon-snapshot needs the snapshot copier (data.snapshot.add_to_bundle)")
    if sign_key:
        signature.signing_key(sign_key)  # a wrong key fails now, not after the pull and the save
    return BundlePlan(version=version, project_dir=project_dir, output=output.resolve(),
                      name=bundle_name(version, platform, image_plan.mode, against), against=against,
                      platform=platform, compression=compression,
                      chunk_size=parse_chunk_size(chunk_size), pull=pull, target_python=target_python,
                      image_plan=image_plan, wheelhouse=Path(wheelhouse).resolve() if wheelhouse else None,
                      plugins=list(plugins), plugin_sign_key=plugin_sign_key, archive=archive,
                      source=source, daemon_snapshot=daemon_snapshot, add_snapshot=add_snapshot,
                      sign_key=sign_key)


def up_to_date(plan: BundlePlan, records: list[dict]) -> bool:
    """Does the finished bundle already hold exactly these images, made the same way?"""
    manifest_path = plan.final_dir / MANIFEST
    if not manifest_path.is_file() or plan.daemon_snapshot or plan.against:  # a snapshot is always copied afresh,
        return False                                                         # a delta is cut against its base again
    try:
        old = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    same_images = sorted((i["ref"], i["id"]) for i in old.get("images", [])) == \
        sorted((r["ref"], r["id"]) for r in records)
    archive = old.get("image_archive", {})
    same_plugins = sorted(p.get("source", "") for p in old.get("plugins", [])) == sorted(plan.plugins)
    same_way = (same_plugins and archive.get("compression") == plan.compression
                and old.get("platform") == plan.platform
                and old.get("chunk_size") == plan.chunk_size
                and old.get("target_python") == plan.target_python)
    if not (same_images and same_way):
        return False
    return verify_directory(plan.final_dir, deep=False).ok


def done_dict(final: Path, plan: BundlePlan) -> dict:
    """``invoke bundle --json``'s result: the plan, where the bundle (and archive) is, its signer and digest."""
    name = archive_name(final.name)
    first = final.parent / (name + ".part-000" if plan.chunk_size else name)
    signer = signature.fingerprint(signature.signing_key(plan.sign_key).public_key()) if plan.sign_key else None
    return {"dry_run": False, **plan.to_dict(), "bundle": str(final), "archive": str(first) if plan.archive else None,
            "transfer_sheet": [str(final.parent / f"{final.name}{suffix}")
                               for suffix in (transfer.MD_SUFFIX, transfer.CDX_SUFFIX)],
            "signer": signer, "digest": signature.bundle_digest(final)}


def render_done(done: dict) -> str:
    """What ``invoke bundle`` prints at the end (from :func:`done_dict`: the key is read and the bundle hashed
    once): where the bundle (and its archive) is, who signed it, and LAST the digest the receiving side compares
    (``invoke verify --expect-digest``), the same for both forms."""
    text = f"\nbundle: {done['bundle']}"
    if done["archive"]:
        name = archive_name(Path(done["bundle"]).name)
        text += f"\narchive: {done['archive']} (check: sha256sum -c {name}.SHA256SUMS, or invoke verify on it)"
    text += f"\ntransfer sheet: {done['transfer_sheet'][0]} (SBOM: {Path(done['transfer_sheet'][1]).name})"
    if done["signer"]:
        text += f"\nsigned: {signature.SIGNATURE} (key {done['signer']})"
    return text + f"\ndigest: {done['digest']}"


def build(engine: Engine, plan: BundlePlan) -> Path:
    """Perform the plan; returns the finished bundle directory (and writes its archive with ``archive``).

    One run at a time per output directory (``OUTPUT/.dify-airgap.lock``): a second one is refused at once."""
    with hold(plan.output, "bundle output directory", f"invoke bundle {plan.name}"):
        recover_interrupted(plan)
        final = build_directory(engine, plan)
        if plan.sign_key:  # also when the bundle was up to date: the archive below then carries the signature
            signature.sign_bundle(final, plan.sign_key)
        if plan.archive:
            ensure_archive(final, plan.output, plan.chunk_size)
        for path in write_transfer_sheet(final, plan):
            LOG.info("transfer sheet: %s", path)
    return final


def write_transfer_sheet(final: Path, plan: BundlePlan) -> list[Path]:
    """``NAME.TRANSFER.md`` and ``NAME.sbom.cdx.json`` beside the bundle (scripts/bundle/transfer.py)."""
    head = signature.read_head(final)
    signer = signature.fingerprint(signature.signing_key(plan.sign_key).public_key()) if plan.sign_key else None
    name = archive_name(final.name)
    carried = (name + ".part-000" if plan.chunk_size else name) if plan.archive else final.name
    data = transfer.sheet(json.loads(head.manifest), final.name, head.digest, head.signature is not None, signer,
                          carried)
    return transfer.write_beside(final, data)


def recover_interrupted(plan: BundlePlan) -> None:
    """A run killed between its two renames left the previous bundle as ``.NAME.old`` and no ``NAME``: put it
    back (the previous state); with ``NAME`` present it is litter. ``.NAME.partial`` is removed by the build."""
    old = plan.output / f".{plan.name}.old"
    if not old.is_dir():
        return
    if plan.final_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.rename(plan.final_dir)
        LOG.info("an interrupted run had moved %s aside: put back", plan.final_dir)


def build_directory(engine: Engine, plan: BundlePlan) -> Path:
    """The bundle directory: reused when up to date, else made in a staging directory."""
    refs = plan.image_plan.refs
    if plan.pull != "never":
        pull_images(engine, refs, plan.platform, plan.pull)
    records = image_records(engine, plan.image_plan, plan.platform)
    if up_to_date(plan, records):
        LOG.info("bundle %s is up to date (same images, same settings, sizes match): nothing to do",
                 plan.final_dir)
        return plan.final_dir
    plan.output.mkdir(parents=True, exist_ok=True)
    staging = plan.partial_dir
    if staging.exists():
        LOG.info("removing an unfinished earlier attempt: %s", staging)
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        cut = delta.plan(engine, refs, plan.against) if plan.against else None
        if cut:
            LOG.info("%s", cut.render())
        saved = cut.saved if cut else refs
        estimate = sum(r["size"] for r in records if r["ref"] in saved)
        LOG.info("saving %d images (%s unpacked) in one stream", len(saved), human_size(estimate))
        rewrite = delta.LayerFilter(cut.placeholders, staging) if cut else None
        archive = save_compressed(engine, saved, staging, plan.archive_name, plan.compression,
                                  plan.chunk_size, estimate, rewrite)
        LOG.info("images: %s -> %s (%s)", human_size(archive["uncompressed_size"]), human_size(archive["size"]),
                 f"{len(archive['parts'])} part(s)")
        if cut:
            archive["delta"] = delta.summary(cut, rewrite)
            LOG.info("delta: %s", delta.render_summary(archive["delta"]))
        add_config_ids(records, archive.pop("config_ids", {}))
        if cut:
            delta.pin_kept(records, cut)
        copy_tree(plan.project_dir, staging / "docker", PROJECT_EXCLUDES)
        copy_toolkit(staging / "toolkit")
        for item in ("env-templates", "compose-overrides"):
            if (TOOLKIT_ROOT / item).is_dir():
                copy_tree(TOOLKIT_ROOT / item, staging / item)
        wheels = download_wheels(staging / "wheels", plan.target_python, parse_platform(plan.platform)[1],
                                 plan.wheelhouse)
        plugins = bundle_plugins(plan, staging / "plugins") if plan.plugins else []
        if plan.daemon_snapshot:  # --daemon-snapshot: verified, then copied to daemon-snapshot/ (listed in files)
            plan.add_snapshot(plan.daemon_snapshot, staging)
        (staging / "install.sh").write_text(INSTALL_SH.replace("@TARGET_PYTHON@", plan.target_python))
        (staging / "install.sh").chmod(0o755)
        prune_empty_dirs(staging)
        write_manifest(staging, plan, records, archive, wheels, engine.runtime, plugins)
        if plan.final_dir.exists():
            old = plan.output / f".{plan.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            plan.final_dir.rename(old)
            staging.rename(plan.final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(plan.final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    LOG.info("bundle ready: %s", plan.final_dir)
    return plan.final_dir


def bundle_plugins(plan: BundlePlan, dest: Path) -> list[dict]:
    """Repackage ``--plugins`` for offline install (wheels for the bundle's daemon and arch) into plugins/."""
    daemon = plugin_daemon.daemon_version_from_compose(plan.project_dir / "docker-compose.yaml")
    results = plugins.repackage_many(plan.plugins, dest, arch=parse_platform(plan.platform)[1],
                                     daemon_version=daemon, sign_key=plan.plugin_sign_key)
    return [{"path": r.path.relative_to(dest.parent).as_posix(), "identifier": r.identifier,
             "size": r.compressed_size, "uncompressed_size": r.uncompressed_size, "sha256": r.sha256,
             "signed": r.signed, "daemon_version": r.daemon_version, "source": redact(r.source)} for r in results]


def write_manifest(staging: Path, plan: BundlePlan, records: list[dict], archive: dict, wheels: list[str],
                   runtime: str, plugins: list[dict] | None = None) -> None:
    part_hashes = {p["path"]: p for p in archive["parts"]}
    entries = []
    for path in walk_files(staging):
        rel = path.relative_to(staging).as_posix()
        if rel in part_hashes:
            entries.append(dict(part_hashes[rel]))
        else:
            entries.append(file_entry(staging, path))
    manifest = {
        "format_version": FORMAT_VERSION,
        "dify_version": plan.version,
        "toolkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "platform": plan.platform,
        "runtime": runtime,
        "profiles": plan.image_plan.profiles,
        "vector_stores": plan.image_plan.vector_stores,
        "mode": plan.image_plan.mode,  # full, or middleware: the compose stack install runs (project.StackMode)
        **({"delta": archive.pop("delta")} if "delta" in archive else {}),  # bundle/delta.py: base, what it needs
        "target_python": plan.target_python,
        "source": plan.source or str(plan.project_dir),
        "chunk_size": plan.chunk_size,
        "images": records,
        "image_archive": archive,
        "wheels": wheels,
        "plugins": plugins or [],
        "files": entries,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_sums(staging, entries)
