"""Engine adapter: compose provider detection order, dry-run argv, error mapping (no engine needed)."""

from __future__ import annotations

import pytest

from scripts.core.errors import AirgapError, CommandFailed, ComposeMissing, EngineMissing, ImageMissing
from scripts.engine.client import (
    ComposeProvider,
    Engine,
    Result,
    classify,
    compose_args,
    detect_runtime,
    parse_compose_version,
    resolve_runtime,
    subprocess_runner,
)


class FakeRunner:
    """Answers probes from a table {argv tuple prefix: (rc, stdout)}; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]]):
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv, **kwargs) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, (rc, out) in self.answers.items():
            if argv[: len(prefix)] == prefix:
                return Result(argv, rc, out, "" if rc == 0 else out)
        return Result(argv, 127, "", f"{argv[0]}: command not found")


@pytest.mark.parametrize(
    "runtime, answers, expected",
    [
        ("docker", {("docker", "compose", "version"): (0, "Docker Compose version v2.40.3"),
                    ("docker-compose", "version"): (0, "Docker Compose version v2.30.0")},
         (("docker", "compose"), "2.40.3")),
        ("docker", {("docker", "compose", "version"): (1, "docker: 'compose' is not a docker command."),
                    ("docker-compose", "version"): (0, "Docker Compose version v2.30.0")},
         (("docker-compose",), "2.30.0")),
        ("podman", {("podman-compose", "--version"): (0, "podman-compose version 1.6.0\npodman version 4.3.1"),
                    ("podman", "compose", "version"): (0, "Docker Compose version v2.40.3")},
         (("podman-compose",), "1.6.0")),
        ("podman", {("podman", "compose", "version"): (0, "Docker Compose version v2.40.3")},
         (("podman", "compose"), "2.40.3")),
    ],
)
def test_compose_detection_order(runtime, answers, expected):
    runner = FakeRunner(answers)
    provider = Engine(runtime, runner=runner).find_compose()
    assert (provider.argv, provider.version) == expected


def test_compose_v1_is_rejected_and_missing_provider_raises():
    runner = FakeRunner({("docker-compose", "version"): (0, "docker-compose version 1.29.2, build unknown")})
    engine = Engine("docker", runner=runner)
    assert engine.find_compose() is None
    with pytest.raises(ComposeMissing, match="no Compose v2 provider found for docker"):
        engine.compose()
    # both candidates were probed, in order
    assert [c[:2] for c in runner.calls][:2] == [("docker", "compose"), ("docker-compose", "version")]


def test_forced_compose_provider_wins(monkeypatch):
    runner = FakeRunner({("docker", "compose", "version"): (0, "Docker Compose version v2.40.3"),
                         ("docker-compose", "version"): (0, "Docker Compose version v2.30.0")})
    monkeypatch.setenv("DIFY_AIRGAP_COMPOSE", "docker-compose")
    assert Engine("docker", runner=runner).find_compose().argv == ("docker-compose",)


@pytest.mark.parametrize("argv, output, expected", [
    (("docker", "compose"), "2.40.3", "2.40.3"),
    (("docker-compose",), "docker-compose version 1.29.2, build 5becea4c", None),
    (("podman-compose",), "podman-compose version: 1.0.6\n['podman', '--version', '']\nusing podman version: 4.4.1",
     "1.0.6"),
    (("podman-compose",), "podman version 4.3.1", None),
])
def test_parse_compose_version(argv, output, expected):
    assert parse_compose_version(argv, output) == expected


def test_dry_run_prints_exact_argv_and_runs_nothing(capsys):
    runner = FakeRunner({})
    engine = Engine("podman", dry_run=True, runner=runner)
    engine.run(["load", "-i", "/tmp/dify images.tar"])
    assert capsys.readouterr().out.strip() == "[dry-run] podman load -i '/tmp/dify images.tar'"
    assert runner.calls == []


def test_dry_run_still_runs_read_only_commands():
    runner = FakeRunner({("docker", "image", "inspect"): (0, '[{"Id": "sha256:abc"}]')})
    engine = Engine("docker", dry_run=True, runner=runner)
    assert engine.inspect_image("busybox:latest")["Id"] == "sha256:abc"
    assert runner.calls == [("docker", "image", "inspect", "busybox:latest")]


def test_compose_dry_run_argv(capsys):
    runner = FakeRunner({("docker", "compose", "version"): (0, "v2.40.3")})
    engine = Engine("docker", dry_run=True, runner=runner)
    engine.compose_run(["up", "-d"], project_dir="/opt/dify/docker", env_file="/opt/dify/docker/.env",
                       files=["docker-compose.yaml", "override.yaml"], profiles=["weaviate"])
    assert capsys.readouterr().out.strip() == (
        "[dry-run] docker compose --project-directory /opt/dify/docker -f docker-compose.yaml "
        "-f override.yaml --env-file /opt/dify/docker/.env --profile weaviate up -d")


def test_podman_compose_args_have_no_project_directory():
    provider = ComposeProvider(("podman-compose",), "1.6.0")
    assert compose_args(provider, project_dir="/x", project_name="dify") == ["-p", "dify"]


@pytest.mark.parametrize("runtime, stderr, kind, image", [
    ("docker", "Error response from daemon: No such image: langgenius/dify-api:1.11.3",
     ImageMissing, "langgenius/dify-api:1.11.3"),
    ("docker", "Error: No such image: busybox:latest", ImageMissing, "busybox:latest"),
    ("podman", "Error: inspecting object: langgenius/dify-web:1.11.3: image not known",
     ImageMissing, "langgenius/dify-web:1.11.3"),
    ("podman", "Error: busybox:latest: image not known", ImageMissing, "busybox:latest"),
    ("docker", "Error response from daemon: manifest for redis:6-alpine not found: manifest unknown",
     ImageMissing, "redis:6-alpine"),
    ("docker", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     EngineMissing, None),
    ("podman", "Error: unable to connect to Podman socket", EngineMissing, None),
    ("docker", "docker: 'compose' is not a docker command.", ComposeMissing, None),
    ("docker", "Error response from daemon: conflict: unable to remove repository reference", CommandFailed, None),
])
def test_error_mapping(runtime, stderr, kind, image):
    err = classify([runtime, "image", "inspect", "x"], 1, stderr)
    assert type(err) is kind
    assert err.returncode == 1 and err.stderr == stderr and err.argv[0] == runtime
    assert f"command: {runtime} image inspect x" in str(err)
    if image:
        assert err.image == image


def test_missing_client_is_engine_missing():
    engine = Engine("podman", runner=FakeRunner({}))
    with pytest.raises(EngineMissing):
        engine.run(["ps"])


def test_action_error_carries_command_and_stderr():
    runner = FakeRunner({("docker", "load"): (1, "unexpected EOF")})
    with pytest.raises(CommandFailed) as info:
        Engine("docker", runner=runner).run(["load", "-i", "x.tar"])
    assert info.value.argv == ["docker", "load", "-i", "x.tar"]
    assert "unexpected EOF" in str(info.value)


def test_runtime_precedence():
    env = {"DIFY_AIRGAP_RUNTIME": "podman"}
    never = lambda: pytest.fail("auto-detection must not run")  # noqa: E731
    assert resolve_runtime("docker", "podman", env, never) == ("docker", "--runtime")
    assert resolve_runtime(None, "docker", env, never) == ("docker", "invoke.yaml airgap.runtime")
    assert resolve_runtime(None, None, env, never) == ("podman", "$DIFY_AIRGAP_RUNTIME")
    assert resolve_runtime(None, None, {}, lambda: "docker") == ("docker", "auto-detected")
    with pytest.raises(AirgapError, match="unknown runtime 'dokcer' \\(from --runtime\\)"):
        resolve_runtime("dokcer", None, {}, never)


def test_detect_runtime_prefers_answering_engine():
    runner = FakeRunner({("podman", "info"): (0, "{}")})
    assert detect_runtime(runner, which=lambda name: f"/usr/bin/{name}") == "podman"
    with pytest.raises(EngineMissing, match="neither docker nor podman"):
        detect_runtime(runner, which=lambda name: None)


def test_uncaptured_command_output_goes_to_stderr(capfd):
    """A command run for the operator to watch (compose up) writes to stderr, never into --json's stdout."""
    subprocess_runner(["sh", "-c", "echo progress"], capture=False)
    out, err = capfd.readouterr()
    assert out == "" and "progress" in err
