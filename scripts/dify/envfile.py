"""Render and validate Dify's ``.env`` (and ``middleware.env``): ``invoke env``.

Layers, lowest first: ``.env.example`` < ``env-templates/*.env`` < the old ``.env`` when upgrading <
a site file < ``--server-ip``/``--base-url`` < ``--set KEY=VALUE``. Secrets are generated unless one
of those layers supplies them, or the output file already holds them (second run).

The output keeps ``.env.example``'s lines, order and comments and changes values in place: compose
reads ``.env`` top to bottom, so ``COMPOSE_PROFILES=${VECTOR_STORE:-weaviate},...`` only sees a
``VECTOR_STORE`` that is defined above it. Keys the example lacks go in a commented block at the end.
The upgrade's three-way merge is :mod:`scripts.dify.envmerge`; the keys a 1.14+ release declares in
``envs/**`` are read (and its envs files written) by :mod:`scripts.dify.envlayers`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from scripts.core.console import register_secret, table
from scripts.core.errors import AirgapError
from scripts.core.inputs import http_url
from scripts.core.resources import TEMPLATES_DIR
from scripts.dify import external
from scripts.dify.envcheck import (
    DEBUG_HOST_KEY,
    ENDPOINT_TEMPLATE_KEY,
    PUBLIC_URL_KEYS,
    compose_services,
    suggest,
    validate,
)
from scripts.dify.envlayers import ReleaseLayers, middleware_layers, release_layers, render_layer_file
from scripts.dify.envmerge import MergeReport, three_way_merge
from scripts.dify.envsecrets import (
    SECRET_GROUPS,
    generate_secret,
    is_secret_key,
    known_defaults,
)
from scripts.dify.envsyntax import (
    Line,
    _read_text,
    env_from_lines,
    parse_lines,
    read_env,
    render_text,
    write_atomic,
)
from scripts.dify.project import middleware_example

EXAMPLE = ".env.example"


# --- reports -------------------------------------------------------------------------------------


@dataclass
class EnvReport:
    """What ``render_env_file`` did or would do. Holds key names and sources, never secret values."""

    path: Path
    example: Path
    changed: list[str] = field(default_factory=list)     # differs from the existing output (or example)
    generated: list[str] = field(default_factory=list)   # secrets generated now
    kept: list[str] = field(default_factory=list)        # secrets kept from the existing output
    supplied: dict[str, str] = field(default_factory=dict)  # secret -> "from site file" / ...
    sources: dict[str, str] = field(default_factory=dict)   # key -> layer, for keys not at example value
    values: dict[str, str] = field(default_factory=dict)    # non-secret values of changed/overridden keys
    added: list[str] = field(default_factory=list)       # site additions appended at the end
    placed: dict[str, str] = field(default_factory=dict)  # key -> file it was written to (when not in place)
    layer_files: list[str] = field(default_factory=list)  # envs/** files written (a service reads no .env)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)       # what the values mean for the stack (external services)
    dry_run: bool = False
    written: bool = False
    merge: MergeReport | None = None

    def status(self, key: str) -> str:
        if key in self.generated:
            return "generated"
        if key in self.kept:
            return "kept"
        return self.supplied.get(key) or self.sources.get(key, "example")

    def render(self) -> str:
        """The table of keys and where each came from (secret values never), then what was written."""
        keys = list(dict.fromkeys(list(self.sources) + self.changed))
        rows = [(k, self.status(k), "changed" if k in self.changed else "same", self.placed.get(k, self.path.name),
                 "(secret)" if is_secret_key(k) else self.values.get(k, "")) for k in keys]
        lines = [table(["KEY", "FROM", "VS CURRENT", "FILE", "VALUE"], rows)]
        if self.placed:
            where = "its compose file, not its example," if self.example.name.startswith("middleware") else "envs/**"
            lines.append(f"\n{len(self.placed)} key(s) this release declares in {where} went to the block at the "
                         f"end of {self.path.name} (compose reads {self.path.name} last, so they win)"
                         + (f"; also written: {', '.join(self.layer_files)}" if self.layer_files else ""))
        if self.merge:
            lines.append("\nupgrade merge:")
            lines.append("\n".join(f"  {line}" for line in self.merge.lines()) or "  nothing to report")
        counts = (f"{len(self.changed)} key(s) differ from the "
                  f"{'current file' if self.path.exists() else 'example'}, {len(self.generated)} secret(s) "
                  f"generated, {len(self.kept)} kept, {len(self.supplied)} supplied")
        lines += [f"\n{note}" for note in self.notes]
        lines.append(f"\nwrote {self.path} (mode 0600): {counts}" if self.written
                     else f"\ndry run: nothing written; {self.path} would get: {counts}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"], data["example"] = str(self.path), str(self.example)
        data["merge"] = self.merge.to_dict() if self.merge else None
        return data


# --- URLs ----------------------------------------------------------------------------------------

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def base_url_for(server_ip: str | None, base_url: str | None, values: Mapping[str, str]) -> str | None:
    """The public base URL: ``--base-url`` as given, or http(s)://SERVER_IP[:port] from nginx's ports."""
    if server_ip and base_url:
        raise AirgapError("pass either --server-ip or --base-url, not both (--base-url already names the host)")
    if base_url:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AirgapError(f"--base-url {base_url!r} is not an http(s) URL; example: https://dify.example.local")
        return base_url.strip().rstrip("/")
    if not server_ip:
        return None
    host = server_ip.strip()

    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        if not _HOSTNAME.match(host):
            raise AirgapError(f"--server-ip {server_ip!r} is neither an IP address nor a host name") from None
    if values.get("NGINX_HTTPS_ENABLED", "false").lower() == "true":
        port = values.get("EXPOSE_NGINX_SSL_PORT", "443")
        return f"https://{host}" + ("" if port in ("443", "") else f":{port}")
    port = values.get("EXPOSE_NGINX_PORT", "80")
    return f"http://{host}" + ("" if port in ("80", "") else f":{port}")


def url_values(example: Mapping[str, str], base: str, middleware: bool) -> dict[str, str]:
    """Every public-facing URL/host variable of the example, set from ``base``. Internal service URLs
    (http://api:5001, http://plugin_daemon:5002, ...) are left alone."""
    parts = urlsplit(base)
    out = {k: base for k in PUBLIC_URL_KEYS if k in example}
    if ENDPOINT_TEMPLATE_KEY in example:
        if middleware:  # dev mode: the plugin daemon is reached directly on its own port
            old = urlsplit(example[ENDPOINT_TEMPLATE_KEY])
            netloc = parts.hostname + (f":{old.port}" if old.port else "")
            out[ENDPOINT_TEMPLATE_KEY] = urlunsplit((parts.scheme, netloc, old.path, "", ""))
        else:
            out[ENDPOINT_TEMPLATE_KEY] = base + "/e/{hook_id}"
    if DEBUG_HOST_KEY in example:
        out[DEBUG_HOST_KEY] = parts.hostname or ""
    return out


# --- rendering -----------------------------------------------------------------------------------

#: A template of keys services read from their environment that no example of the release declares (e.g. the
#: plugin daemon's PIP_MIRROR_AUTO_DETECT): written to .env where services get it whole (Dify 1.14+), else skipped.
PASSTHROUGH_TEMPLATE = "passthrough.env"

_LAYER_RANK = {"example": 0, "template": 1, "old env": 2, "site file": 3, "server url": 4, "model server": 5,
               "command line": 6}


def _layer(source: str) -> str:
    return source.split(" ", 1)[0] if source.startswith("template") else source


SSRF_ALLOW_IPS, SSRF_ALLOW_DOMAINS = "SSRF_PROXY_ALLOW_PRIVATE_IPS", "SSRF_PROXY_ALLOW_PRIVATE_DOMAINS"


def model_server_settings(urls: Iterable[str], current: Mapping[str, str]) -> dict[str, str]:
    """``--model-server URL``: let Dify's SSRF proxy (1.15+ denies private ranges) reach exactly these hosts.

    IP addresses go to SSRF_PROXY_ALLOW_PRIVATE_IPS (squid ``dst``), names to ..._DOMAINS (``dstdomain``),
    added to what the other layers already allow. A URL without an http(s) scheme and host is refused.
    """
    ips = [v for v in re.split(r"[,\s]+", current.get(SSRF_ALLOW_IPS, "")) if v]
    domains = [v for v in re.split(r"[,\s]+", current.get(SSRF_ALLOW_DOMAINS, "")) if v]
    for url in urls:
        host = urlsplit(http_url(url, "--model-server")).hostname
        try:
            ipaddress.ip_address(host)
            target = ips
        except ValueError:
            target = domains
        if host not in target:
            target.append(host)
    out = {}
    if ips:
        out[SSRF_ALLOW_IPS] = ",".join(ips)
    if domains:
        out[SSRF_ALLOW_DOMAINS] = ",".join(domains)
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from ``--set`` into a dict; a malformed item is an error."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise AirgapError(f"--set {item!r} is not KEY=VALUE; example: --set VECTOR_STORE=qdrant")
        out[key] = value
    return out


def render_env_file(project_dir: Path, out: Path, *, server_ip: str | None = None, base_url: str | None = None,
                    site_file: Path | None = None, overrides: dict | None = None,
                    regenerate_secrets: bool = False, middleware: bool = False,
                    templates_dir: Path = TEMPLATES_DIR, dry_run: bool = False,
                    upgrade_from: Path | None = None, old_example: Path | None = None,
                    model_servers: Iterable[str] = ()) -> EnvReport:
    """Render the production env file from the project's example and the layers above it.

    Raises AirgapError (with every problem listed) when the result must not be used: a public default
    secret left, a likely typo of a known key, an empty required key, an inconsistent pair.
    """
    st = _start_render(Path(project_dir), Path(out), middleware, dry_run)
    _apply_templates(st, templates_dir)
    if upgrade_from:
        _apply_old_env(st, upgrade_from, old_example)
    # 3. site file
    if site_file:
        st.apply("site file", read_env(site_file), unknown="check")
    _apply_server_url(st, server_ip, base_url, overrides, middleware)
    _apply_model_servers(st, model_servers)
    # 6. --set KEY=VALUE
    st.apply("command line", dict(overrides or {}), unknown="check")
    _apply_external(st, middleware)

    _resolve_secrets(st, old_example, regenerate_secrets)
    # CELERY_BROKER_URL carries the redis password: derive it unless the user wrote it themselves
    _derive_broker_url(st.values, st.source, st.explicit, st.report)
    _register_secret_values(st)
    _validate_or_raise(st, middleware)
    _write_output(st, dry_run)
    return st.report


@dataclass
class _Render:
    """The working state of one ``render_env_file`` run; every layer writes into ``values``/``source``."""

    project_dir: Path
    out: Path
    example_path: Path
    lines: list[Line]
    example: dict[str, str]
    layers: ReleaseLayers
    known: dict[str, str]  # every key the release reads, .env.example's first
    report: EnvReport
    values: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)
    extra_source: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: key -> (layer, value) for keys set by old env/site/CLI
    explicit: dict[str, tuple[str, str]] = field(default_factory=dict)
    passthrough: set[str] = field(default_factory=set)
    defaults: set[str] = field(default_factory=set)
    existing: dict[str, str] | None = None

    def apply(self, layer: str, data: Mapping[str, str], *, unknown: str) -> None:
        for key, value in data.items():
            if layer != "old env":  # only a value of the .env being carried over keeps its quoting (envsyntax.Raw):
                value = str(value)   # a site file's or template's value is written by format_value's rules
            if key in self.known:
                self.values[key], self.source[key] = value, layer
                if _layer(layer) in ("old env", "site file", "command line"):
                    self.explicit[key] = (layer, value)
                continue
            if unknown == "skip":
                continue
            close = suggest(key, self.known)
            if unknown == "check" and close:
                self.errors.append(f"{key} ({layer}) is not a key of {self.example_path.name}; did you mean {close}?")
                continue
            self.extras[key], self.extra_source[key] = value, layer


def _start_render(project_dir: Path, out: Path, middleware: bool, dry_run: bool) -> _Render:
    """Read the example and the release's envs/** layers: the lowest layer, every key at its example value."""
    example_path = middleware_example(project_dir) if middleware else project_dir / EXAMPLE
    if not example_path.is_file():
        raise AirgapError(f"{example_path} is missing; --project-dir must be Dify's docker/ directory")
    lines = parse_lines(_read_text(example_path))
    example = env_from_lines(lines)
    layers = middleware_layers(project_dir, example) if middleware else release_layers(project_dir, example)
    known = {**layers.defaults, **example}  # every key the release reads, .env.example's first
    report = EnvReport(path=out, example=example_path, dry_run=dry_run)
    return _Render(project_dir=project_dir, out=out, example_path=example_path, lines=lines, example=example,
                   layers=layers, known=known, report=report, values=dict(known),
                   source={k: "example" for k in known})


def _apply_templates(st: _Render, templates_dir: Path) -> None:
    # 1. templates (keys this release does not know are skipped: templates serve several versions), except
    #    PASSTHROUGH_TEMPLATE's: written for releases whose services get .env whole (env_file: ./.env, 1.14+)
    if templates_dir and Path(templates_dir).is_dir():
        for tpl in sorted(Path(templates_dir).glob("*.env")):
            if tpl.name != PASSTHROUGH_TEMPLATE:
                st.apply(f"template {tpl.name}", read_env(tpl), unknown="skip")
            elif st.layers.dotenv_readers:
                data = {k: v for k, v in read_env(tpl).items() if k not in st.known}
                st.passthrough |= set(data)
                st.apply(f"template {tpl.name}", data, unknown="extra")


def _apply_old_env(st: _Render, upgrade_from: Path, old_example: Path | None) -> None:
    # 2. the user's old env, three-way merged (upgrade)
    if not old_example:
        raise AirgapError("--upgrade-from needs --old-example: the .env.example of the release that "
                          "OLD_ENV was made from (keep it next to the old .env)")
    old_env, base_env = read_env(upgrade_from), read_env(old_example)
    _values, custom, old_extras, st.removed, st.report.merge = three_way_merge(old_env, base_env, st.known)
    # a key whose old default the user kept (merge.default_changed) is left as the layers below set it: the new
    # default, or a template's value (writing the new default here undid the offline templates)
    st.apply("old env", custom, unknown="extra")
    st.apply("old env", old_extras, unknown="extra")


def _apply_server_url(st: _Render, server_ip: str | None, base_url: str | None, overrides: dict | None,
                      middleware: bool) -> None:
    # 4. public URLs
    base = base_url_for(server_ip, base_url, {**st.values, **(overrides or {})})  # --set EXPOSE_NGINX_PORT counts
    if base:
        st.apply("server url", url_values(st.example, base, middleware), unknown="skip")


def _apply_model_servers(st: _Render, model_servers: Iterable[str]) -> None:
    # 5. model servers on the site network (--model-server): the SSRF proxy's private allow list
    model_servers = [u for u in model_servers or () if u]
    if model_servers:
        allow = model_server_settings(model_servers, st.values)
        if SSRF_ALLOW_IPS in st.known:
            st.apply("model server", allow, unknown="skip")
        else:
            st.report.warnings.append(f"--model-server: this release's SSRF proxy has no {SSRF_ALLOW_IPS} (it "
                                      "does not deny private ranges before Dify 1.15): nothing to allow")


def _apply_external(st: _Render, middleware: bool) -> None:
    """A database / redis / vector store outside the stack (scripts/dify/external.py): its local container's profile
    leaves COMPOSE_PROFILES (unless the user wrote COMPOSE_PROFILES), its password must be the site's."""
    found = external.find(st.values, compose_services(st.project_dir, middleware))
    if not found:
        return
    before = read_env(st.out) if st.out.is_file() else {}  # a re-run keeps the password given before
    st.errors += external.missing_secrets(found, set(st.explicit), set(st.known), before)
    dropped = {e.profile for e in found if e.profile}
    raw = st.values.get("COMPOSE_PROFILES")
    if dropped and raw is not None and "COMPOSE_PROFILES" not in st.explicit:
        new = external.profiles_without(raw, st.values, dropped)
        if new != raw:
            st.values["COMPOSE_PROFILES"], st.source["COMPOSE_PROFILES"] = new, "external services"
    for ext in found:
        local = f"its local container is not started (profile {ext.profile} dropped)" if ext.profile else \
            external.REDIS_NOTE
        st.report.notes.append(f"external {ext.what} at {ext.address}: {local}; `invoke check` tests the "
                               f"connection from the api container")


def _resolve_secrets(st: _Render, old_example: Path | None, regenerate_secrets: bool) -> None:
    # secrets: explicit (highest layer) > existing output file > generated
    st.defaults = known_defaults(st.example)
    if old_example:
        st.defaults |= known_defaults(read_env(old_example))
    st.existing = read_env(st.out) if st.out.is_file() else None
    for group in SECRET_GROUPS:
        keys = [k for k in group.keys if k in st.known]
        if not keys:
            continue
        given = [(k, st.explicit[k]) for k in keys if k in st.explicit]
        chosen = None
        if given:
            chosen = _explicit_secret(st, keys, given)
        elif st.existing is not None and not regenerate_secrets:
            chosen = _existing_secret(st, keys)
        if chosen is None:
            chosen = generate_secret(group.kind)
            st.report.generated += keys
        for k in keys:
            st.values[k] = chosen
            if k not in st.explicit:
                st.source[k] = "generated" if k in st.report.generated else "kept"
        register_secret(chosen)


def _explicit_secret(st: _Render, keys: list[str], given: list[tuple[str, tuple[str, str]]]) -> str:
    """The value the highest layer gave a secret group (all its keys must agree)."""
    top = max(_LAYER_RANK[_layer(layer)] for _, (layer, _v) in given)
    top_given = [(k, lv) for k, lv in given if _LAYER_RANK[_layer(lv[0])] == top]
    distinct = {lv[1] for _, lv in top_given}
    if len(distinct) > 1:
        st.errors.append(f"{' and '.join(k for k, _ in top_given)} must be equal (one secret shared by "
                         f"both ends); set only {keys[0]} and it is copied to the others")
    _key, (layer, chosen) = top_given[0]
    status = "kept from old env" if layer == "old env" else f"from {layer}"
    for k in keys:
        st.report.supplied[k] = status
    return chosen


def _existing_secret(st: _Render, keys: list[str]) -> str | None:
    """The secret group's value in the existing output file (second run), unless it is a public default."""
    existing = st.existing
    found = [existing[k] for k in keys if existing.get(k) and existing[k] not in st.defaults]
    if not found:
        return None
    if len(set(found)) > 1:
        st.report.warnings.append(f"{st.out.name} had different values for {', '.join(keys)}; "
                                  f"kept the one of {keys[0]} for all of them")
    st.report.kept += keys
    return found[0]


def _register_secret_values(st: _Render) -> None:
    for key, value in list(st.values.items()) + list(st.extras.items()):
        # example values are public: registering e.g. TIDB_PUBLIC_KEY=dify would redact 'dify' everywhere
        if is_secret_key(key) and value and value != st.known.get(key) and value not in st.defaults:
            register_secret(value)
            if key == "CELERY_BROKER_URL":
                pw = urlsplit(value).password
                if pw:
                    register_secret(pw)


def _validate_or_raise(st: _Render, middleware: bool) -> None:
    found, warnings = validate(st.lines, st.known, st.values,
                               {k: v for k, v in st.extras.items() if k not in st.passthrough},
                               st.defaults, middleware, st.project_dir)
    st.errors += found
    st.report.warnings += warnings
    if st.errors:
        raise AirgapError(f"{len(st.errors)} problem(s) in the env layers; nothing was written:\n  - "
                          + "\n  - ".join(st.errors))


def _write_output(st: _Render, dry_run: bool) -> None:
    """Render the text, fill the report, write .env and the envs/** files some service reads instead of .env."""
    values, layers, report, out = st.values, st.layers, st.report, st.out
    layered = {k: (values[k], "declared in " + ", ".join(layers.origin[k])) for k in layers.defaults
               if values[k] != layers.defaults[k] or k in st.explicit}
    text = render_text(st.lines, {k: values[k] for k in st.example}, st.extras, st.removed, layered)
    own: dict[str, dict[str, str]] = {}
    for key in layered:
        report.placed[key] = out.name
        for rel in layers.files_for(key):
            own.setdefault(rel, {})[key] = values[key]
            report.placed[key] = f"{rel} and {out.name}"
    _fill_report(st, text)
    if not dry_run:
        write_atomic(out, text)
        report.written = True
    for rel, data in own.items():  # a service reads this envs file and not .env: the value goes there too
        if render_layer_file(st.project_dir, rel, data, dry_run) and rel not in report.layer_files:
            report.layer_files.append(rel)


def _fill_report(st: _Render, text: str) -> None:
    report, values, extras = st.report, st.values, st.extras
    before = st.existing if st.existing is not None else st.example
    after = env_from_lines(parse_lines(text))
    report.changed = [k for k in after if before.get(k) != after[k]]
    report.added = list(extras)
    report.sources = {k: st.source[k] for k in values if st.source[k] != "example"}
    report.sources.update(st.extra_source)
    report.values = {k: values.get(k, extras.get(k, "")) for k in set(report.sources) | set(report.changed)
                     if not is_secret_key(k)}


def _derive_broker_url(values: dict[str, str], source: dict[str, str], explicit: Mapping,
                       report: EnvReport) -> None:
    url = values.get("CELERY_BROKER_URL")
    if not url or "REDIS_PASSWORD" not in values:
        return
    parts = urlsplit(url)
    redis_host = values.get("REDIS_HOST", "redis")
    # the example's broker is the local `redis`: with an external REDIS_HOST celery must go there too
    moved = parts.hostname == "redis" and redis_host != "redis" and "CELERY_BROKER_URL" not in explicit
    if parts.scheme not in ("redis", "rediss") or (parts.hostname != redis_host and not moved):
        return
    if moved:
        host = f"[{redis_host}]" if ":" in redis_host else redis_host  # an IPv6 literal
        address = f"{host}:{values.get('REDIS_PORT') or 6379}"
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{address}" if "@" in parts.netloc else address
        parts = urlsplit(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    password = values["REDIS_PASSWORD"]
    if "CELERY_BROKER_URL" in explicit:
        if parts.password is not None and parts.password != password:
            report.warnings.append("CELERY_BROKER_URL (set by you) has a different password than "
                                   "REDIS_PASSWORD for the same redis host: celery will not connect")
        return
    user = parts.username or ""
    hostname = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    values["CELERY_BROKER_URL"] = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    source["CELERY_BROKER_URL"] = "derived from REDIS_PASSWORD"
