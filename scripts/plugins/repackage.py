"""Repackage Dify plugins (.difypkg) so they install with no network: wheels inside, offline
requirements, optional site signature, and a proof install with networking disabled.

``repackage_many`` is the entry point (``invoke repackage`` and, later, ``invoke bundle --plugins``).
The package format (zip rules, checksum, signature) lives in ``plugin_sign``; docs/plugins.md explains it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, human_size, table
from scripts.core.inputs import output_dir
from scripts.dify.envsyntax import read_env, resolve_all
from scripts.plugins import sign as plugin_sign
from scripts.plugins.common import (
    DEFAULT_ARCH,
    DEFAULT_DAEMON_VERSION,
    DEFAULT_MAX_PACKAGE_SIZE,
    DEFAULT_NGINX_BODY,
    DEFAULT_PYTHON,
    DEP_FILES,
    RESOLVER_CONFIG,
    TARGET_PYTHON_ENV,
    OfflineInstallFailed,
    PluginError,
)
from scripts.plugins.daemon import (
    DAEMON_SETTINGS,
    DaemonInstall,
    Target,
    daemon_install,
    daemon_rule,
    daemon_supports_third_party_keys,
)
from scripts.plugins.package import (
    Manifest,
    PackageRef,
    default_cache_dir,
    fetch,
    parse_ref,
    read_manifest,
    safe_extract,
)
from scripts.plugins.wheels import (
    _run,
    _uv_error,
    clean_ignore_file,
    download_wheels,
    isolation_prefix,
    lock_remote_sources,
    offline_pyproject,
    offline_requirements,
    relock_offline,
    resolve,
    strip_dependency_groups,
    uv_bin,
)

# --------------------------------------------------------------------------------------------- proof


def find_target_python(version: str, machine: str | None = None) -> str | None:
    """A working interpreter of the target version, and of the target machine when given (an aarch64 one
    on an x86_64 build box runs through qemu-user's binfmt_misc handler): the interpreters listed in
    $DIFY_AIRGAP_TARGET_PYTHON (one path, or several separated by ':'), pythonX.Y on PATH, pyenv's."""
    candidates = os.environ.get(TARGET_PYTHON_ENV, "").split(os.pathsep)
    candidates.append(shutil.which(f"python{version}") or "")
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p) for p in sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"))]
    want = f"{version} {machine or os.uname().machine}"
    for candidate in dict.fromkeys(filter(None, candidates)):
        try:
            probe = subprocess.run([candidate, "-c", "import platform, sys; "
                                    "print('%d.%d' % sys.version_info[:2], platform.machine())"],
                                   capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):   # not executable here (no binfmt handler), or hung
            continue
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
    return None


@dataclass
class Proof:
    mode: str          # "venv" (target interpreter: the daemon's own command) or "target" (uv for the target tags)
    isolation: str
    commands: list[str]
    packages: int
    rule: str = ""                 # the DaemonRule followed
    daemon_command: str = ""       # the uv command the daemon runs for this package
    file: str = ""                 # the dependency file the daemon reads
    env: dict = field(default_factory=dict)   # the install command's environment (paths in the proof folder)
    exact: bool = True             # False: no target interpreter here; uv installed for the target tags


def proof_commands(target: Target, python_exe: str | None, uv: str,
                   install: DaemonInstall) -> tuple[str, list[list[str]]]:
    """The commands of the proof. With a target interpreter: the daemon's venv, then its install command
    exactly (``install.argv``), then `uv pip check`. Without one (another Python or architecture here):
    uv installs for the target tags into a folder; `uv sync` is replaced by what it does: lock/export the
    project (honouring --frozen) and install the result."""
    if python_exe:
        return "venv", [[uv, "venv", ".venv", "--python", python_exe], [uv, *install.argv], [uv, "pip", "check"]]
    for_target = ["--python-version", target.python, "--python-platform", target.uv_platform,
                  "--target", ".proof-target"]
    if install.method == "uv pip install":
        return "target", [[uv, *install.argv, *for_target]]
    export = [uv, "export", "--no-dev", "--no-emit-project", "--no-hashes", "--format", "requirements.txt",
              "-o", ".proof-requirements.txt"] + (["--frozen"] if install.frozen else [])
    return "target", [export, [uv, "pip", "install", "-r", ".proof-requirements.txt", *for_target]]


def daemon_files(workdir: Path) -> set[str]:
    return {name for name in DEP_FILES if (workdir / name).is_file()}


def prove_offline(package: str | os.PathLike, target: Target, *, python_exe: str | None | bool = None,
                  daemon_version: str = DEFAULT_DAEMON_VERSION, settings: dict | None = None) -> Proof:
    """Install the package's dependencies the way the target daemon does, with networking disabled.

    The package is extracted into a fresh folder; the daemon's rule (``daemon_install``: file chosen,
    `uv pip install` / `uv sync [--frozen]`, -i/-v/extra args from ``settings``) gives the command, run
    with the daemon's scrubbed environment (PATH, VIRTUAL_ENV, its UV_CACHE_DIR, fresh and empty) inside
    a network namespace. With an interpreter of the target version and machine (``python_exe`` None = look
    for one, False = don't; an arm64 one runs under qemu-user on an x86_64 box) this is exactly the daemon's
    install; otherwise uv installs for the target tags into a folder (``Proof.exact`` False)."""
    package = Path(package)
    if python_exe is None:
        python_exe = find_target_python(target.python, target.machine)
    python_exe = python_exe or None
    uv = uv_bin()
    prefix, isolation = isolation_prefix()
    with tempfile.TemporaryDirectory(prefix="dal-proof-") as tmp:
        working_path = Path(tmp) / "cwd"          # stands for $PLUGIN_WORKING_PATH
        workdir = working_path / "plugin"
        safe_extract(package, workdir)
        install = daemon_install(daemon_version, daemon_files(workdir), settings, environ={})
        if install.method == "uv sync" and (workdir / "uv.lock").is_file() and install.frozen:
            remote = lock_remote_sources((workdir / "uv.lock").read_text(encoding="utf-8"))
            if remote:
                raise OfflineInstallFailed(
                    f"{package.name}: the daemon runs `{install.command}` and uv.lock fetches from the network: "
                    f"{'; '.join(remote[:5])}{' ...' if len(remote) > 5 else ''}")
        mode, commands = proof_commands(target, python_exe, uv, install)
        cache = {"plugin": workdir / ".uv-cache", "shared": working_path / ".uv-cache"}.get(
            install.cache, Path(tmp) / "uv-cache")   # "": uv's default cache in the daemon; fresh here
        env = {"PATH": os.pathsep.join([str(Path(uv).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
               "VIRTUAL_ENV": str(workdir / ".venv"), "UV_CACHE_DIR": str(cache), **install.env}
        if not prefix:
            env["UV_OFFLINE"] = "1"
        if mode == "target":
            env.pop("VIRTUAL_ENV")
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
            env["UV_PYTHON_DOWNLOADS"] = "never"
        for i, argv in enumerate(commands):
            # the venv is made with the daemon's full env; only the install command gets the scrubbed one
            run_env = {**env, "UV_PYTHON_DOWNLOADS": "never"} if mode == "venv" and i == 0 else env
            proc = _run(prefix + argv, cwd=workdir, env=run_env, timeout=600)
            if proc.returncode != 0:
                raise OfflineInstallFailed(
                    f"{package.name}: the offline install failed ({isolation}), so the daemon would need the "
                    f"network:\n  {install.describe()}\n  command: {shlex.join(argv)}\n  exit code: "
                    f"{proc.returncode}\n    {_uv_error(proc.stderr or proc.stdout)}\nA wheel is missing from "
                    f"wheels/, or the dependency file asks for something else; rerun `invoke repackage` on the "
                    f"original package.")
        installed = workdir / (".proof-target" if mode == "target" else ".venv")
        count = len(list(installed.rglob("*.dist-info")))
        shown_env = {k: v.replace(str(working_path), "$PLUGIN_WORKING_PATH") for k, v in env.items()
                     if k != "PATH"}
    return Proof(mode, isolation, [shlex.join(a) for a in commands], count, rule=install.rule.name,
                 daemon_command=install.command, file=install.file, env=shown_env, exact=mode == "venv")


# ---------------------------------------------------------------------------------------------- sizes

def parse_nginx_size(text: str) -> int:
    """nginx-style size (100M, 1g, 512k, 2048) in bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise PluginError(f"size {text!r} is not a number with an optional k/m/g suffix")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def size_advice(uncompressed: int, compressed: int, env: dict | None = None) -> list[str]:
    """What to raise in Dify's .env for a package of these sizes (empty when the defaults suffice).

    PLUGIN_MAX_PACKAGE_SIZE goes to the api (upload check) and, as MAX_PLUGIN_PACKAGE_SIZE, to the plugin
    daemon, which checks both the compressed upload and the declared uncompressed total. The upload also
    passes nginx, limited by NGINX_CLIENT_MAX_BODY_SIZE."""
    env = env or {}
    limit = int(env.get("PLUGIN_MAX_PACKAGE_SIZE") or DEFAULT_MAX_PACKAGE_SIZE)
    body = parse_nginx_size(env.get("NGINX_CLIENT_MAX_BODY_SIZE") or DEFAULT_NGINX_BODY)
    advice = []
    need = max(uncompressed, compressed)
    if need > limit:
        mib = -(-need // (1 << 20)) + 1
        advice.append(f"PLUGIN_MAX_PACKAGE_SIZE={mib << 20}  # now {limit}: the daemon checks the uncompressed "
                      f"total ({uncompressed} bytes) and the upload ({compressed} bytes) against it")
    if compressed + (1 << 20) > body:
        mib = -(-compressed // (1 << 20)) + 2
        now = env.get("NGINX_CLIENT_MAX_BODY_SIZE") or DEFAULT_NGINX_BODY
        advice.append(f"NGINX_CLIENT_MAX_BODY_SIZE={mib}M  # now {now}: nginx rejects larger uploads with HTTP 413")
    return advice


def project_limits(project_dir: str | os.PathLike | None) -> dict:
    """The project's .env (else .env.example), resolved, for PLUGIN_MAX_PACKAGE_SIZE etc.; {} without a project."""
    if not project_dir:
        return {}
    for name in (".env", ".env.example"):
        path = Path(project_dir) / name
        if path.is_file():
            return resolve_all(read_env(path))
    return {}


# ------------------------------------------------------------------------------------------ repackage

@dataclass
class RepackResult:
    source: str
    path: Path
    identifier: str
    checksum: str
    sha256: str
    compressed_size: int
    uncompressed_size: int
    wheels: int
    wheels_size: int
    signed: bool
    daemon_version: str
    target: str
    proof: Proof | None = None
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("source", "identifier", "checksum", "sha256", "compressed_size",
                                             "uncompressed_size", "wheels", "wheels_size", "signed",
                                             "daemon_version", "target", "advice", "notes")}
        out["path"] = str(self.path)
        out["proof"] = self.proof.__dict__ if self.proof else None
        return out


def output_name(manifest: Manifest, target: Target) -> str:
    stem = f"{manifest.author}-{manifest.name}" if manifest.author else manifest.name
    return f"{stem}_{manifest.version}-offline-py{target.py_nodot}-{target.arch}.difypkg"


def _entries_in_order(workdir: Path, original: Sequence[str], drop: set[str]) -> list[tuple[str, Path]]:
    """Original members in their order (minus ``drop``), then files we added (wheels/ sorted)."""
    entries = [(n, workdir / n) for n in original if n not in drop and (workdir / n).is_file()]
    known = {n for n, _ in entries} | drop
    extra = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file())
    entries += [(n, workdir / n) for n in extra if n not in known]
    return entries


def _signing_warnings(daemon_version: str) -> list[str]:
    """Warnings (logged, and kept as notes) when the target daemon cannot verify the site signature."""
    warnings = []
    for warning in signing_env(daemon_version, "")[1]:
        LOG.warning("warning: %s", warning)
        warnings.append(warning)
    return warnings


def _manifest_notes(ref: PackageRef, manifest: Manifest, arch: str, python: str) -> list[str]:
    """What the plugin's own manifest says that differs from what was asked or what the target runs."""
    notes = []
    if ref.kind == "marketplace" and (manifest.author, manifest.name, manifest.version) != \
            (ref.author, ref.name, ref.version):
        notes.append(f"marketplace returned {manifest.ref} for {ref.value}")
    if manifest.arch and arch not in manifest.arch:
        notes.append(f"manifest meta.arch {manifest.arch} does not list {arch}; the plugin may not run there")
    if manifest.runner_version and manifest.runner_version != python:
        notes.append(f"manifest runner version {manifest.runner_version}; the daemon runs Python {python} "
                     f"regardless, wheels are for {python}")
    return notes


def _bundle_wheels(workdir: Path, pins, wheels: Sequence[Path], target: Target) -> None:
    """A fresh wheels/ holding exactly ``wheels``, and the offline requirements.txt pointing at it."""
    wheel_dir = workdir / "wheels"
    if wheel_dir.exists():
        shutil.rmtree(wheel_dir)   # stale wheels from an earlier repackage
    wheel_dir.mkdir()
    for wheel in wheels:
        shutil.copyfile(wheel, wheel_dir / wheel.name)
    (workdir / "requirements.txt").write_text(offline_requirements(pins, target), encoding="utf-8")


def _offline_pyproject(workdir: Path, rule, daemon_version: str, source_name: str, target: Target,
                       notes: list[str]) -> None:
    """--keep-pyproject: pyproject.toml without dependency groups, pointed at wheels/; uv.lock re-locked."""
    pyproject = workdir / "pyproject.toml"
    if not rule.pyproject:
        notes.append(f"daemon {daemon_version} reads only requirements.txt (rule: {rule.name}); "
                     f"pyproject.toml is kept but unused")
    text, stripped = strip_dependency_groups(pyproject.read_text(encoding="utf-8"))
    if stripped:
        notes.append("pyproject.toml: removed [dependency-groups] (the daemon installs with --no-dev; "
                     "a lock of dev tools would need their wheels)")
    pyproject.write_text(offline_pyproject(text, source_name, target.python), encoding="utf-8")
    if (workdir / "uv.lock").is_file():
        # an interpreter of the daemon's version for uv to run: this machine's, else the target's (emulated)
        python = find_target_python(target.python) or find_target_python(target.python, target.machine)
        locked = relock_offline(workdir, source_name, python)
        notes.append(f"uv.lock re-locked offline against the bundled wheels ({locked} packages, every "
                     f"source ./wheels): `uv sync --frozen` installs it with no network")


def _project_files_to_drop(workdir: Path, notes: list[str]) -> set[str]:
    """The universal recipe: pyproject.toml and uv.lock left out, so every daemon reads requirements.txt."""
    drop = set()
    for name in ("pyproject.toml", "uv.lock"):
        if (workdir / name).is_file():
            drop.add(name)
            notes.append(f"removed {name} (universal offline recipe: every daemon version then runs "
                         f"`uv pip install -r requirements.txt`; --keep-pyproject keeps it, re-locked)")
    return drop


def _offline_dependency_files(workdir: Path, keep_pyproject: bool, daemon_version: str, source_name: str,
                              target: Target, notes: list[str]) -> set[str]:
    """Make the dependency files offline; returns the package members to leave out (``drop``)."""
    drop = {plugin_sign.VERIFICATION_FILE}
    rule = daemon_rule(daemon_version)
    if keep_pyproject:
        _offline_pyproject(workdir, rule, daemon_version, source_name, target, notes)
    else:
        drop |= _project_files_to_drop(workdir, notes)
    return drop


def _daemon_notes(workdir: Path, daemon_version: str, drop: set[str], settings: dict) -> list[str]:
    """How the target daemon will install the package's dependencies, and its own notes."""
    install = daemon_install(daemon_version, daemon_files(workdir) - drop, settings, environ={})
    return [install.describe(), *install.notes]


def drop_resolver_config(workdir: Path) -> list[str]:
    """Remove the package's own resolver/installer configuration (RESOLVER_CONFIG): it would steer our
    resolution and the daemon's install (another index, a cache path, a Python version to download). Runs
    before anything is resolved; the files are not in the repackaged package. One note per file removed."""
    notes = []
    for name in RESOLVER_CONFIG:
        path = workdir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        notes.append(f"removed {name}: a package's own resolver/installer configuration is ignored and not shipped")
    return notes


def _clean_ignore_files(workdir: Path) -> list[str]:
    """Remove wheels/-hiding patterns from .difyignore/.gitignore; one note per file changed."""
    notes = []
    for name in (".difyignore", ".gitignore"):
        path = workdir / name
        if path.is_file():
            text, removed = clean_ignore_file(path.read_text(encoding="utf-8", errors="replace"))
            if removed:
                path.write_text(text, encoding="utf-8")
                notes.append(f"{name}: removed {', '.join(removed)} so a CLI re-package keeps wheels/")
    return notes


def _result(pkg: str, out: Path, manifest: Manifest, written, wheels: Sequence[Path], daemon_version: str,
            target: Target, proof: Proof | None, notes: list[str], env: dict | None) -> RepackResult:
    result = RepackResult(
        source=pkg, path=out,
        identifier=plugin_sign.identifier(manifest.author, manifest.name, manifest.version, written.checksum),
        checksum=written.checksum, sha256=written.sha256, compressed_size=written.compressed_size,
        uncompressed_size=written.uncompressed_size, wheels=len(wheels),
        wheels_size=sum(w.stat().st_size for w in wheels), signed=written.signed, daemon_version=daemon_version,
        target=target.describe(), proof=proof, notes=notes)
    result.advice = size_advice(written.uncompressed_size, written.compressed_size, env)
    return result


def repackage(pkg: str, out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON, arch: str = DEFAULT_ARCH,
              daemon_version: str = DEFAULT_DAEMON_VERSION, sign_key: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, marketplace_url: str | None = None,
              keep_pyproject: bool = False, prove: bool = True, proof_python: str | None | bool = None,
              index_url: str | None = None, env: dict | None = None) -> RepackResult:
    """Make one plugin package installable offline. See ``repackage_many``."""
    target = Target(python, arch)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = plugin_sign.load_private_key(sign_key) if sign_key else None   # fail fast on a bad key
    ref = parse_ref(pkg)
    source = fetch(ref, cache, marketplace_url)
    notes: list[str] = []
    settings = {k: v for k, v in (env or {}).items() if k in DAEMON_SETTINGS}
    if key is not None:
        notes.extend(_signing_warnings(daemon_version))
    with tempfile.TemporaryDirectory(prefix="dal-repack-") as tmp:
        workdir = Path(tmp) / "plugin"
        original = safe_extract(source, workdir)
        notes.extend(drop_resolver_config(workdir))
        manifest = read_manifest(workdir, source.name)
        notes.extend(_manifest_notes(ref, manifest, arch, python))
        LOG.info("%s: %s, resolving dependencies for %s", source.name, manifest.ref, target.describe())
        keep_pyproject = keep_pyproject and (workdir / "pyproject.toml").is_file()
        pins = resolve(workdir, target, source.name, index_url, with_pyproject=keep_pyproject)
        wheels = download_wheels(pins, target, cache, source.name, index_url)
        _bundle_wheels(workdir, pins, wheels, target)
        drop = _offline_dependency_files(workdir, keep_pyproject, daemon_version, source.name, target, notes)
        notes.extend(_daemon_notes(workdir, daemon_version, drop, settings))
        notes.extend(_clean_ignore_files(workdir))

        out = Path(out_dir) / output_name(manifest, target)
        staged = Path(tmp) / out.name
        written = plugin_sign.write_package(staged, _entries_in_order(workdir, original, drop), sign_key=key)
        proof = (prove_offline(staged, target, python_exe=proof_python, daemon_version=daemon_version,
                               settings=settings) if prove else None)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    written.path = out
    return _result(pkg, out, manifest, written, wheels, daemon_version, target, proof, notes, env)


def repackage_many(pkgs: Sequence[str], out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON,
                   arch: str = DEFAULT_ARCH, daemon_version: str = DEFAULT_DAEMON_VERSION,
                   sign_key: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   marketplace_url: str | None = None, keep_pyproject: bool = False, prove: bool = True,
                   proof_python: str | None | bool = None, index_url: str | None = None,
                   env: dict | None = None) -> list[RepackResult]:
    """Repackage plugins for offline install; they share one download cache (``cache_dir``, default
    ``~/.cache/dify-airgap``). Each result has the output path, identifier, sizes, sha256 and signed flag.

    ``pkgs``: local .difypkg paths, marketplace references ``author/name:version``, or http(s) URLs.
    ``daemon_version``: the target plugin daemon (see ``daemon_version_from_compose``).
    ``sign_key``: PKCS#1 PEM private key; the package is then signed for third-party verification.
    ``prove``: install the dependencies with networking disabled and fail if that needs the network.
    ``env``: Dify .env values, to say which size limits must be raised."""
    if not pkgs:
        raise PluginError("no plugin given; pass a .difypkg path, author/name:version, or a URL")
    output_dir(out_dir, "--out", create=False)  # fail before any download, not after the work
    if cache_dir:
        output_dir(cache_dir, "--cache-dir", create=False)
    results = []
    for pkg in pkgs:
        results.append(repackage(pkg, out_dir, python=python, arch=arch, daemon_version=daemon_version,
                                 sign_key=sign_key, cache_dir=cache_dir, marketplace_url=marketplace_url,
                                 keep_pyproject=keep_pyproject, prove=prove, proof_python=proof_python,
                                 index_url=index_url, env=env))
    return results


def plan(pkgs: Sequence[str], out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON,
         arch: str = DEFAULT_ARCH, daemon_version: str = DEFAULT_DAEMON_VERSION,
         sign_key: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         marketplace_url: str | None = None) -> list[dict]:
    """What ``repackage_many`` would do, without downloading or writing anything (for --dry-run)."""
    target = Target(python, arch)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    install = daemon_install(daemon_version, {"requirements.txt"})   # what repackage writes by default
    mode, commands = proof_commands(target, find_target_python(target.python, target.machine), "uv", install)
    rows = []
    for pkg in pkgs:
        ref = parse_ref(pkg)
        url = ref.download_url(marketplace_url)
        rows.append({
            "source": pkg, "kind": ref.kind, "download": url,
            "download_to": str(cache / "packages" / ref.cache_name()) if url else None,
            "resolve": shlex.join(["uv", "pip", "compile", "requirements.in", "--python-version", target.python,
                                   "--python-platform", target.uv_platform, "--only-binary", ":all:"]),
            "wheel_cache": str(cache / "wheels"), "target": target.describe(), "daemon_version": daemon_version,
            "signed_with": str(sign_key) if sign_key else None,
            "out_dir": str(Path(out_dir)),
            "daemon_rule": install.rule.name, "daemon_command": install.command,
            "proof": [shlex.join(["unshare", "-n", "--", *c]) for c in commands],
            "proof_exact": mode == "venv",   # the daemon's own command in a venv of the target's interpreter
        })
    return rows


def signing_env(daemon_version: str, key_in_container: str) -> tuple[dict, list[str]]:
    """The plugin_daemon env that keeps signature verification ON with the site key, plus warnings.
    Daemons before 0.0.7 cannot use third-party keys: then FORCE_VERIFYING_SIGNATURE=false, warned."""
    if daemon_supports_third_party_keys(daemon_version):
        return ({"THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED": "true",
                 "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS": key_in_container,
                 "FORCE_VERIFYING_SIGNATURE": "true"}, [])
    return ({"FORCE_VERIFYING_SIGNATURE": "false"},
            [f"plugin daemon {daemon_version} cannot verify third-party signatures (added in "
             f"{plugin_sign.THIRD_PARTY_KEYS_SINCE}); the only way to install these packages is "
             f"FORCE_VERIFYING_SIGNATURE=false, which accepts ANY unsigned package: upgrade the daemon "
             f"(Dify 1.x ships 0.5.x) to keep verification on"])


def render_results(results: Sequence[RepackResult]) -> str:
    """The table and per-package details ``invoke repackage`` prints."""
    lines = [table(["PACKAGE", "WHEELS", "SIZE (zip / unpacked)", "SIGNED", "OFFLINE PROOF"],
                   [(r.path, r.wheels, f"{human_size(r.compressed_size)} / {human_size(r.uncompressed_size)}",
                     "yes" if r.signed else "no",
                     f"{r.proof.mode}, {r.proof.packages} pkgs" if r.proof else "skipped") for r in results])]
    for r in results:
        lines.append(f"\n{r.path.name}\n  identifier: {r.identifier}\n  sha256: {r.sha256}\n  target: {r.target}, "
                     f"daemon {r.daemon_version}")
        if r.proof:
            lines.append(f"  offline proof: {r.proof.mode} install of {r.proof.packages} packages, "
                         f"{r.proof.isolation}")
            if r.proof.daemon_command:
                lines.append(f"  daemon rule: {r.proof.rule}; reads {r.proof.file}; runs `{r.proof.daemon_command}`"
                             + ("" if r.proof.exact else " (not exact: no Python of the daemon's version here; "
                                                         "uv installed for its tags instead)"))
        lines += [f"  note: {note}" for note in r.notes]
        if r.advice:
            lines.append("  raise in Dify's .env (then `docker compose up -d`):")
            lines += [f"    {line}" for line in r.advice]
    return "\n".join(lines)


def unsigned_hint(results: Sequence[RepackResult]) -> list[str]:
    """The warning for unsigned results (none when all are signed)."""
    if all(r.signed for r in results):
        return []
    return ["unsigned packages install only with FORCE_VERIFYING_SIGNATURE=false; sign them instead with "
            "--sign-key (see `invoke plugin-keygen`)"]


def render_keygen(private: Path, public: Path, env: Mapping[str, str]) -> str:
    """What ``invoke plugin-keygen`` prints: where the keys are and the daemon settings for the server."""
    return "\n".join([
        f"private key: {private} (mode 0600; keep it on the build machine, never copy it to the servers)",
        f"public key:  {public}",
        "\nOn the Dify server: copy the public key to docker/plugin-keys/, add these lines to docker/.env,",
        "and start with -f docker-compose.yaml -f compose-overrides/plugin-signing.yaml:",
        *(f"  {k}={v}" for k, v in env.items()),
        f"  PLUGIN_SIGNING_PUBLIC_KEY_FILE=./plugin-keys/{public.name}"])
