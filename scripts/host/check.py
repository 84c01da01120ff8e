"""`invoke check`: the sysadmin's final checklist for an installed Dify, as a command.

Each check is data (:class:`~scripts.host.probes.Check`: name, pass/warn/fail, detail, hint); a
:class:`~scripts.host.probes.CheckReport` renders them as a table or JSON. Two halves:

- the deployment (:func:`check_deployment`, given a :class:`~scripts.dify.deployment.Deployment`): every
  service's container up (healthy where it has a healthcheck; one-shot ``init_permissions`` exited 0),
  every recorded image present, Dify's API ``/health`` asked from INSIDE the api container, the console
  API and the web UI through nginx on the published port, the plugin daemon's ``/health/check`` asked
  from the api container (the path Dify itself uses);
- model servers, with no deployment needed (:func:`~scripts.host.probes.check_ollama`,
  :func:`~scripts.host.probes.check_vllm`, :func:`~scripts.host.probes.check_http_json`): plain functions
  over real HTTP from this host, in :mod:`scripts.host.probes` with the HTTP requests every check makes.

Every request has a timeout, and a failure says which of these it was: connection refused, timeout,
host unreachable, HTTP error (code and the start of the body), wrong payload (what was expected), or a
missing model (with the models that are there).
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scripts.core.console import LOG, register_secret
from scripts.dify import deployment as dep
from scripts.dify import external, stack
from scripts.dify.deployment import Deployment
from scripts.dify.envcheck import compose_services
from scripts.engine.client import Engine, compose_args
from scripts.engine.images import local_ref, missing_images
from scripts.host import tls
from scripts.host.probes import (
    DEFAULT_TIMEOUT,
    FAIL,
    PASS,
    WARN,
    Check,
    CheckReport,
    Validator,
    WrongPayload,
    check_http_json,
    check_ollama,
    check_tcp,
    check_through_proxy,
    check_vllm,
    container_get,
    http_get,
    judge,
    model_urls,
    preview,
)

# --- the deployment ------------------------------------------------------------------------------------

def _env_values(deployment: Deployment) -> dict[str, str]:
    """The deployment's .env as compose reads it (empty when there is none)."""
    return stack.env_values(deployment.env_file if deployment.env_file.is_file() else None)


def _compose_cmd(engine: Engine, deployment: Deployment, args: Sequence[str]) -> str:
    """The compose command a sysadmin can paste (cd into the project directory first)."""
    provider = engine.find_compose()
    if provider is None:
        return f"{engine.runtime} compose " + shlex.join(list(args))
    argv = list(provider.argv) + compose_args(provider, project_dir=".", files=deployment.compose_files,
                                              env_file=deployment.stack.env_name, profiles=deployment.profiles,
                                              project_name=deployment.project_name) + list(args)
    return f"cd {shlex.quote(str(deployment.project_dir))} && {shlex.join(argv)}"


def _expected_services(deployment: Deployment, values: Mapping[str, str]) -> dict:
    """{service: ServiceSpec} of the deployment's active services, from its compose files."""
    specs = stack.load_specs(deployment.project_dir, deployment.compose_files or [deployment.stack.compose_file],
                             values)
    return stack.active_services(specs, deployment.profiles or stack.active_profiles(values))


def service_checks(engine: Engine, deployment: Deployment, current: Mapping, specs: Mapping) -> list[Check]:
    """One check per active service: running, healthy where it has a healthcheck, one-shots exited 0.

    Podman 4.3 without systemd never runs healthchecks itself: here ``podman healthcheck run`` runs
    them once for every running container that has one.
    """
    checks = []
    if not current:
        return [Check("services", FAIL, f"no containers for compose project {deployment.project_name!r}",
                      f"start it: {_compose_cmd(engine, deployment, ['up', '-d'])}")]
    for name in sorted(set(specs) | set(current)):
        spec, st = specs.get(name), current.get(name)
        label = f"service {name}"
        if st is None:
            checks.append(Check(label, FAIL, "no container (never created, or removed)",
                                f"start it: {_compose_cmd(engine, deployment, ['up', '-d', name])}"))
            continue
        logs = f"`{engine.runtime} logs --tail 50 {st.container}` shows why"
        exit_code = int(st.exit_code or 0) if str(st.exit_code or "0").lstrip("-").isdigit() else st.exit_code
        if spec is not None and spec.one_shot:
            if st.state == "exited" and exit_code == 0:
                checks.append(Check(label, PASS, "one-shot, exited 0"))
            elif st.state == "exited":
                checks.append(Check(label, FAIL, f"one-shot, exited {exit_code}", logs))
            else:
                checks.append(Check(label, WARN, f"one-shot, still {st.state}", "it should finish and exit 0"))
            continue
        if st.state != "running":
            detail = f"{st.state}" + (f" (exit code {exit_code})" if st.state == "exited" else "") + ", not running"
            checks.append(Check(label, FAIL, detail,
                                f"{logs}; start it: {_compose_cmd(engine, deployment, ['up', '-d', name])}"))
            continue
        health = st.health
        if spec is not None and spec.healthcheck and health != "healthy" and engine.is_podman:
            res = engine.probe(["healthcheck", "run", st.container], timeout=90)
            health = "healthy" if res.ok else "unhealthy"
            if not res.ok:
                output = preview(res.stdout + " " + res.stderr)
                checks.append(Check(label, FAIL, f"running, healthcheck fails: {output}", logs))
                continue
        if health == "healthy":
            checks.append(Check(label, PASS, "running, healthy"))
        elif health == "unhealthy":
            checks.append(Check(label, FAIL, "running, unhealthy" + _last_health_output(engine, st.container), logs))
        elif health == "starting" or (spec is not None and spec.healthcheck):
            checks.append(Check(label, WARN, f"running, healthcheck {health or 'not run yet'}",
                                "re-run `invoke check` in a minute"))
        else:
            checks.append(Check(label, PASS, "running"))
    return checks


def _last_health_output(engine: Engine, container: str) -> str:
    res = engine.probe(["inspect", "--format", "{{json .State.Health}}", container])
    try:
        log = (json.loads(res.stdout) or {}).get("Log") or [] if res.ok else []
    except ValueError:
        return ""
    return f": {preview(log[-1].get('Output', ''), 120)}" if log else ""


def image_check(engine: Engine, deployment: Deployment) -> Check:
    """Every image the deployment records is present in the engine, named with its services if not."""
    images = deployment.images or []
    if not images:
        return Check("images", WARN, "the deployment records no images", "re-run `invoke install` to record them")
    local = {img["ref"]: local_ref(engine, img["ref"]) for img in images}
    missing = set(missing_images(engine, list(local.values())))
    gone = [img for img in images if local[img["ref"]] in missing]
    if not gone:
        return Check("images", PASS, f"all {len(images)} images present")
    detail = "; ".join(f"{img['ref']} (service: {', '.join(img.get('services') or []) or '?'})" for img in gone)
    return Check("images", FAIL, f"missing {len(gone)} of {len(images)}: {detail}",
                 f"load the bundle's images again (`{engine.runtime} load`, or re-run `invoke install BUNDLE`)")


def dify_health_validator(expected_version: str = "") -> Validator:
    def validate(data: Any) -> tuple[str, str, str]:
        if not (isinstance(data, dict) and data.get("status") == "ok" and isinstance(data.get("pid"), int)
                and isinstance(data.get("version"), str)):
            raise WrongPayload('{"pid": <int>, "status": "ok", "version": "<Dify version>"}')
        detail = f"status ok, version {data['version']}, pid {data['pid']}"
        if expected_version and data["version"] != expected_version:
            return WARN, detail, f"the deployment records Dify {expected_version}: was an image replaced?"
        return PASS, detail, ""
    return validate


def _pong(data: Any) -> tuple[str, str, str]:
    if data != {"result": "pong"}:
        raise WrongPayload('{"result": "pong"}')
    return PASS, "pong", ""


def _daemon_health(data: Any) -> tuple[str, str, str]:
    if not isinstance(data, dict) or data.get("status") != "ok":
        raise WrongPayload('{"status": "ok", ...}')
    extra = ", ".join(f"{k} {data[k]}" for k in ("version", "pool_status") if isinstance(data.get(k), (str, int)))
    return PASS, "status ok" + (f", {extra}" if extra else ""), ""


def nginx_base_url(values: Mapping[str, str]) -> tuple[str, bool]:
    """(base URL of nginx as published on this host, whether it is https)."""
    if str(values.get("NGINX_HTTPS_ENABLED", "false")).lower() == "true":
        return f"https://127.0.0.1:{values.get('EXPOSE_NGINX_SSL_PORT') or 443}", True
    return f"http://127.0.0.1:{values.get('EXPOSE_NGINX_PORT') or 80}", False


def web_check(base: str, timeout: float, verify_tls: bool) -> Check:
    """The web UI answers through nginx (any 2xx page, after redirects)."""
    outcome = http_get(f"{base}/", timeout, {"Accept": "text/html"}, verify_tls=verify_tls)
    if outcome.kind == "ok":
        return Check("web via nginx", PASS, f"HTTP {outcome.status} at {base}/")
    return judge("web via nginx", outcome, lambda data: (PASS, "", ""), timeout,
                 hint="is the nginx (and web) service up, and EXPOSE_NGINX_PORT in .env the port published?")


def websocket_check(base: str, timeout: float, verify_tls: bool) -> Check:
    """Dify 1.14+'s collaboration websocket (api_websocket) answers a socket.io handshake through nginx."""
    url = f"{base}/socket.io/?EIO=4&transport=polling"
    outcome = http_get(url, timeout, {"Accept": "*/*"}, verify_tls=verify_tls)
    hint = ("nginx resolves api_websocket at request time through the `resolver` of nginx/conf.d/"
            "default.conf.template (127.0.0.11 = Docker's DNS; under podman compose-overrides/podman.yaml points "
            "it at aardvark-dns): is api_websocket running?")
    if outcome.kind == "ok" and outcome.body.startswith("0{"):
        return Check("websocket via nginx", PASS, f"socket.io handshake at {base}/socket.io/")
    if outcome.kind == "ok":
        return Check("websocket via nginx", FAIL, f"{url} answered, but not a socket.io handshake: "
                                                  f"{preview(outcome.body)!r}", hint)
    return judge("websocket via nginx", outcome, lambda data: (PASS, "", ""), timeout, hint=hint)


def tls_check(deployment: Deployment, values: Mapping[str, str], timeout: float) -> Check:
    """nginx's HTTPS port presents the certificate installed in docker/nginx/ssl/, not expired nor about to."""
    port = int(values.get("EXPOSE_NGINX_SSL_PORT") or 443)
    url = values.get("APP_WEB_URL") or values.get("CONSOLE_WEB_URL") or ""
    server = urlsplit(url).hostname or ""
    installed = (dep.project_dir_for(deployment.prefix) / tls.SSL_DIR
                 / (values.get("NGINX_SSL_CERT_FILENAME") or tls.CERT_FILE))
    try:
        der = tls.served_certificate("127.0.0.1", port, server, timeout)
    except (OSError, ssl.SSLError) as exc:
        return Check("https certificate", FAIL, f"no TLS handshake on 127.0.0.1:{port}: {exc}",
                     "is nginx up with NGINX_HTTPS_ENABLED=true, and EXPOSE_NGINX_SSL_PORT the published port?")
    served = x509.load_der_x509_certificate(der)
    days = (served.not_valid_after_utc - _dt.datetime.now(_dt.timezone.utc)).days
    what = f"{served.subject.rfc4514_string()}, valid until {served.not_valid_after_utc:%Y-%m-%d}"
    if installed.is_file():
        leaf = tls.installed_leaf(installed)
        if leaf.public_bytes(serialization.Encoding.DER) != der:
            return Check("https certificate", FAIL, f"nginx serves {what}, not {installed} "
                                                    f"({leaf.subject.rfc4514_string()})",
                         "nginx reads the certificate when it starts: restart it (in PREFIX/docker: "
                         "docker compose restart nginx, or podman-compose restart nginx)")
    if days < 0:
        return Check("https certificate", FAIL, f"{what}: EXPIRED", "install a renewed one: invoke install --tls-cert")
    if days < tls.EXPIRY_WARN_DAYS:
        return Check("https certificate", WARN, f"{what}: expires in {days} days",
                     "ask your CA for the renewal now; install it with invoke install --tls-cert")
    return Check("https certificate", PASS, f"127.0.0.1:{port} serves {installed.name}: {what} ({days} days left)")


def check_deployment(deployment: Deployment, engine: Engine | None = None, *,
                     timeout: float = DEFAULT_TIMEOUT, nginx_url: str | None = None,
                     models: Sequence[tuple[str, str]] = ()) -> list[Check]:
    """The checks of an installed Dify: services, images, API health, console and web via nginx, plugin daemon.

    ``nginx_url`` overrides the base URL nginx is reached at (default: 127.0.0.1 and the published
    port from the deployment's .env).
    """
    engine = engine or deployment.engine()
    values = _env_values(deployment)
    specs = _expected_services(deployment, values)
    current = stack.states(engine, deployment.project_name,
                           lambda args, **kw: deployment.compose(engine, args, **kw))
    checks = [Check("deployment", PASS, f"{deployment.prefix}: {engine.runtime}, compose project "
                                        f"{deployment.project_name}" + (f", Dify {deployment.dify_version}"
                                                                        if deployment.dify_version else ""))]
    checks += service_checks(engine, deployment, current, specs)
    checks.append(image_check(engine, deployment))
    if deployment.stack.middleware:
        return checks + middleware_checks(engine, values, specs, current, timeout)

    api = current.get("api")
    api_up = api is not None and api.state == "running"
    port = values.get("DIFY_PORT") or "5001"
    if api_up:
        outcome = container_get(engine, api.container, f"http://localhost:{port}/health", timeout)
        checks.append(judge("dify api /health", outcome, dify_health_validator(deployment.dify_version), timeout,
                            hint=f"`{engine.runtime} logs --tail 50 {api.container}` shows why"))
    else:
        checks.append(Check("dify api /health", FAIL, "cannot ask: the api container is not running",
                            "see `service api` above"))

    base, https = (nginx_url.rstrip("/"), nginx_url.startswith("https")) if nginx_url else nginx_base_url(values)
    checks.append(check_http_json("console api via nginx", f"{base}/console/api/ping", _pong, timeout,
                                  hint="is nginx up, and EXPOSE_NGINX_PORT in .env the published port? "
                                       "(a firewall in front of this host does not matter here: this is 127.0.0.1)",
                                  verify_tls=not https))
    checks.append(web_check(base, timeout, verify_tls=not https))
    if https and not nginx_url:
        checks.append(tls_check(deployment, values, timeout))
    if "api_websocket" in specs:
        checks.append(websocket_check(base, timeout, verify_tls=not https))

    daemon = current.get("plugin_daemon")
    daemon_url = (values.get("PLUGIN_DAEMON_URL") or "http://plugin_daemon:5002").rstrip("/") + "/health/check"
    if "plugin_daemon" not in specs and daemon is None:
        pass  # a Dify without the plugin daemon (older releases): nothing to check
    elif daemon is None or daemon.state != "running":
        checks.append(Check("plugin daemon /health/check", FAIL,
                            f"cannot ask: the plugin_daemon container is {daemon.state if daemon else 'missing'}",
                            "see `service plugin_daemon` above"))
    else:
        via = api.container if api_up else daemon.container
        url = daemon_url if api_up else f"http://localhost:{values.get('PLUGIN_DAEMON_PORT') or 5002}/health/check"
        checks.append(judge("plugin daemon /health/check", container_get(engine, via, url, timeout), _daemon_health,
                            timeout, hint=f"`{engine.runtime} logs --tail 50 {daemon.container}` shows why"))
    for ext in external.find(values, set(specs) | compose_services(dep.project_dir_for(deployment.prefix), False)):
        name = f"external {ext.what}"
        checks.append(check_tcp(engine, api.container, name, ext.host, ext.port, timeout) if api_up else
                      Check(name, FAIL, "cannot ask: the api container is not running", "see `service api` above"))
    proxy = values.get("SSRF_PROXY_HTTP_URL") or "http://ssrf_proxy:3128"
    for name, url in models:  # as Dify calls them: from the api container, through the SSRF proxy
        checks.append(check_through_proxy(engine, api.container, name, url, proxy, timeout) if api_up else
                      Check(name, FAIL, "cannot ask: the api container is not running", "see `service api` above"))
    return checks


def middleware_checks(engine: Engine, values: Mapping[str, str], specs: Mapping, current: Mapping,
                      timeout: float) -> list[Check]:
    """The middleware stack (no api, no nginx): what a developer's api connects to must answer on THIS host.

    The plugin daemon's ``/health/check`` asked inside its own container, and every published port of the
    active services opened from this host (the api runs here, outside compose)."""
    checks = []
    daemon = current.get("plugin_daemon")
    if "plugin_daemon" in specs:
        if daemon is None or daemon.state != "running":
            checks.append(Check("plugin daemon /health/check", FAIL,
                                f"cannot ask: the plugin_daemon container is {daemon.state if daemon else 'missing'}",
                                "see `service plugin_daemon` above"))
        else:
            url = f"http://localhost:{values.get('PLUGIN_DAEMON_PORT') or 5002}/health/check"
            checks.append(judge("plugin daemon /health/check", container_get(engine, daemon.container, url, timeout),
                                _daemon_health, timeout,
                                hint=f"`{engine.runtime} logs --tail 50 {daemon.container}` shows why"))
    for name, spec in sorted(specs.items()):
        for published in spec.ports:
            host, _, port = published.rpartition(":")
            if port.isdigit():
                checks.append(host_port_check(name, host, int(port), timeout))
    return checks


def host_port_check(service: str, host: str, port: int, timeout: float) -> Check:
    """Item "port N": service's published port accepts a TCP connection on this host."""
    target = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host.strip("[]")
    label = f"port {port} ({service})"
    try:
        socket.create_connection((target, port), timeout=timeout).close()
    except OSError as exc:
        return Check(label, FAIL, f"{target}:{port} does not accept connections: {exc.strerror or exc}",
                     f"is {service} running and publishing {port}? (see `service {service}` above; "
                     f"the port is set in middleware.env)")
    return Check(label, PASS, f"{target}:{port} accepts connections")


def run_checks(deployment: Deployment | None = None, *, engine: Engine | None = None,
               ollama_url: str | None = None, ollama_model: str | None = None,
               vllm_url: str | None = None, vllm_api_key: str | None = None, vllm_model: str | None = None,
               timeout: float = DEFAULT_TIMEOUT, nginx_url: str | None = None, wait: float = 0,
               interval: float = 5.0) -> CheckReport:
    """Everything `invoke check` runs: the deployment's checks (if given), then the model servers asked for.

    ``wait`` > 0: run them again every ``interval`` seconds while any fails, for up to ``wait`` seconds
    (right after an install or a reboot, a stack needs a moment: on Podman 4.3 the first lookups of
    service names can go unanswered for a while). The last report is returned either way.
    """
    if vllm_api_key:
        register_secret(vllm_api_key)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        report = _run_once(deployment, engine, ollama_url, ollama_model, vllm_url, vllm_api_key, vllm_model,
                           timeout, nginx_url)
        left = deadline - time.monotonic()
        if report.ok or left <= 0:
            return report
        LOG.info("check: %d failing (%s); again in %.0fs, for up to %.0fs more", len(report.failed()),
                 ", ".join(c.name for c in report.failed()), min(interval, left), left)
        time.sleep(min(interval, left))


def _run_once(deployment, engine, ollama_url, ollama_model, vllm_url, vllm_api_key, vllm_model, timeout,
              nginx_url) -> CheckReport:
    report = CheckReport()
    if deployment is not None:
        report.checks += check_deployment(deployment, engine, timeout=timeout, nginx_url=nginx_url,
                                          models=model_urls(ollama_url, vllm_url))
    if ollama_url:
        report.checks.append(check_ollama(ollama_url, ollama_model, timeout))
    if vllm_url:
        report.checks.append(check_vllm(vllm_url, vllm_api_key, vllm_model, timeout))
    return report
