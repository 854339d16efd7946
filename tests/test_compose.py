"""Static checks of ``compose.yaml`` (no Docker engine here): every banditloop service runs a real
command whose options parse, addresses and credentials agree across services, and start-up order
is right.

Commands are parsed with :func:`banditloop.cli.build_parser` given the service's environment (the
CLI reads ``BANDITLOOP_<OPTION>`` variables), after resolving compose's ``${VAR:-default}``
interpolation with the defaults, as ``docker compose`` does without an ``.env`` file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from banditloop.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BANDITLOOP_COMMANDS = {"db-init": "models", "consumer": "consume", "scorer": "serve", "simulator": "simulate"}
_VAR = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: object) -> object:
    """Compose interpolation with no variables set: ``${X:-d}`` -> d, ``${X}`` -> "", ``$$`` -> ``$``."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def parse(service: dict) -> argparse.Namespace:
    """The service's command parsed as the container's ``banditloop`` entry point would."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser(environment(service)).parse_args(command(service))
    except SystemExit:
        raise AssertionError(f"`banditloop {' '.join(command(service))}` does not parse: {stderr.getvalue()}") from None


def kafka_advertised(services) -> str:
    listeners = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    plaintext = [item.split("://", 1)[1] for item in listeners if item.startswith("PLAINTEXT://")]
    assert len(plaintext) == 1, listeners
    return plaintext[0]


def test_the_stack_has_every_service(services):
    assert {"kafka", "postgres", "topics", *BANDITLOOP_COMMANDS} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert not any("zookeeper" in name for name in services)


def test_kafka_is_a_single_kraft_node(services):
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    listeners = dict(item.split("://", 1)[::-1] for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners == {":9092": "PLAINTEXT", ":9093": "CONTROLLER"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert kafka_advertised(services) == "kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(v.endswith(":" + env["KAFKA_LOG_DIRS"]) for v in services["kafka"]["volumes"])


@pytest.mark.parametrize("name", sorted(BANDITLOOP_COMMANDS))
def test_every_banditloop_command_parses(services, name):
    service = services[name]
    assert service["build"] == "." and service["image"].startswith("banditloop")
    args = parse(service)
    assert args.command == BANDITLOOP_COMMANDS[name] and callable(args.func)


def test_the_image_runs_banditloop(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["banditloop"\]', dockerfile, re.M)
    assert re.search(r"pip install '\.\[[^\]]*\bpostgres\b", dockerfile)  # psycopg for postgresql+psycopg URLs


def test_every_bootstrap_is_the_advertised_listener(services):
    advertised = kafka_advertised(services)
    for name in ("consumer", "scorer", "simulator"):
        assert parse(services[name]).bootstrap == advertised, name


def test_database_urls_point_at_postgres_with_its_credentials(services):
    pg = environment(services["postgres"])
    for name in ("db-init", "consumer", "scorer"):
        url = make_url(parse(services[name]).db)
        assert url.drivername == "postgresql+psycopg", name
        assert url.host == "postgres" and url.port in (None, 5432), name
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]), name


def test_the_scorer_listens_on_all_interfaces_on_its_published_port(services):
    scorer = services["scorer"]
    args = parse(scorer)
    assert args.host == "0.0.0.0"
    container_ports = {str(p).rsplit(":", 1)[-1] for p in scorer["ports"]}
    assert str(args.port) in container_ports
    assert f"127.0.0.1:{args.port}/healthz" in " ".join(scorer["healthcheck"]["test"])


def test_learners_and_scorer_agree_on_the_model(services):
    consumer, scorer, simulator = (parse(services[n]) for n in ("consumer", "scorer", "simulator"))
    assert services["consumer"]["deploy"]["replicas"] == 2 and consumer.group
    assert consumer.model and consumer.model == scorer.model
    assert scorer.cold_start is True  # answers (uniformly) before the learners' first checkpoint
    # the simulator must not write checkpoints under the learners' model name
    assert simulator.no_checkpoint or (simulator.model or simulator.learner) != consumer.model
    # the consumer featurizes the simulator's contexts x0..x{d-1} in their own slots
    assert consumer.numeric.split(",") == [f"x{i}" for i in range(simulator.dim)]
    assert consumer.dim >= simulator.dim + 1


def test_topics_are_the_pipelines_with_equal_partition_counts(services):
    from banditloop.pipeline.topics import TopicNames

    script = " ".join(command(services["topics"]))
    created = {t: int(n) for t, n in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
    names = TopicNames()
    assert set(created) == set(names.all())
    assert len({created[t] for t in names.events}) == 1
    assert created[names.impressions] >= services["consumer"]["deploy"]["replicas"]  # no idle worker
    assert "kafka:9092" in script and kafka_advertised(services) == "kafka:9092"
    for name in ("consumer", "scorer"):
        args = parse(services[name])
        assert (args.impressions_topic, args.clicks_topic, args.conversions_topic) == names.events, name


def test_start_up_order(services):
    def needs(name: str) -> dict[str, str]:
        deps = services[name].get("depends_on") or {}
        return {d: "service_started" for d in deps} if isinstance(deps, list) else {
            d: spec.get("condition", "service_started") for d, spec in deps.items()}

    assert needs("topics") == {"kafka": "service_healthy"}
    assert needs("db-init") == {"postgres": "service_healthy"}
    for name in ("consumer", "scorer"):
        assert needs(name) == {"db-init": "service_completed_successfully",
                               "topics": "service_completed_successfully"}, name
    assert needs("simulator") == {"topics": "service_completed_successfully"}
    for name in services:
        for dep, condition in needs(name).items():
            assert dep in services, (name, dep)
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], dep
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", dep  # a one-shot must not be restarted
    # no cycles: a topological order exists
    order: list[str] = []
    pending = dict.fromkeys(services)
    while pending:
        ready = [n for n in pending if all(d in order for d in needs(n))]
        assert ready, f"dependency cycle among {sorted(pending)}"
        for n in ready:
            order.append(n)
            del pending[n]


def test_only_the_simulator_is_optional(services):
    assert services["simulator"]["profiles"] == ["simulator"]
    assert [n for n, s in services.items() if s.get("profiles")] == ["simulator"]


def test_the_image_copies_every_source_folder_of_the_package():
    import tomllib

    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {path.split("/")[0] for path in package_dir.values()}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./", dockerfile, re.M))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
    assert "LICENSE" in dockerfile



def test_the_scorer_requires_a_token_from_a_compose_secret(services, compose, tmp_path):
    """It listens on 0.0.0.0, so the production example is authenticated: the token comes from a
    compose secret (a file, mounted under /run/secrets), never from a literal in compose.yaml."""
    from banditloop.serving.http.security import BearerAuth

    scorer = services["scorer"]
    args = parse(scorer)
    names = [s if isinstance(s, str) else s["source"] for s in scorer.get("secrets", [])]
    assert names, "the scorer mounts no secret"
    targets = {f"/run/secrets/{s if isinstance(s, str) else s.get('target', s['source'])}"
               for s in scorer["secrets"]}
    assert args.api_token_file in targets
    source = compose["secrets"][next(n for n in names if args.api_token_file.endswith("/" + n))]
    assert set(source) == {"file"} and source["file"] == "./secrets/api-token"
    assert "secrets/" in (ROOT / ".gitignore").read_text()  # the default token file is never committed
    assert "BANDITLOOP_API_TOKEN" not in environment(scorer)
    assert not args.auth_all  # the healthcheck's GET /healthz stays open
    # the scorer accepts the file the compose comments tell an operator to create, refuses an empty one
    token = tmp_path / "api-token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    auth = BearerAuth.configured(str(token), environ={})
    assert auth is not None and auth.allows("Bearer 0123456789abcdef0123456789abcdef")
    token.write_text("")
    with pytest.raises(ValueError, match="holds no token"):
        BearerAuth.configured(str(token), environ={})
    assert "secrets/api-token" in (ROOT / "README.md").read_text()


def test_db_init_runs_with_the_stacks_environment(services, tmp_path):
    """``models`` with the shared BANDITLOOP_MODEL set lists that model (it used to refuse --model
    without --prune, so the one-shot failed and nothing else started)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}
    env.update(environment(services["db-init"]), BANDITLOOP_DB=f"sqlite:///{tmp_path / 'init.db'}",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "banditloop.cli", *command(services["db-init"])], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "init.db").exists()
