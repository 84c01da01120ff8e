"""scripts.dify.stack's wait on podman: a `restart: always` service podman left stopped is started again, a bounded
number of times; one-shot services never (command construction only: the behaviour runs in the integration tests)."""

from __future__ import annotations

from scripts.dify import stack
from scripts.engine.client import Engine, Result


def test_an_exited_long_running_service_is_started_again_at_most_three_times():
    ran = []

    def runner(argv, **kwargs):
        ran.append(list(argv))
        return Result(tuple(argv), 0, "", "")

    engine = Engine("podman", runner=runner)
    specs = {"nginx": stack.ServiceSpec("nginx", "nginx:latest", [], False, False, ["80"]),
             "init_permissions": stack.ServiceSpec("init_permissions", "busybox", [], False, True, []),
             "api": stack.ServiceSpec("api", "api", [], False, False, [])}
    current = {"nginx": stack.ServiceState("nginx", "p_nginx_1", "stopped", 1, ""),
               "init_permissions": stack.ServiceState("init_permissions", "p_init_1", "exited", 0, ""),
               "api": stack.ServiceState("api", "p_api_1", "running", 0, "")}
    restarted: dict[str, int] = {}
    for _ in range(5):
        stack._start_exited_again(engine, specs, current, restarted)
    assert ran == [["podman", "start", "p_nginx_1"]] * stack.RESTARTS
