"""The local stack: real emulators started, checked and stopped in one place.

The demo, the tests and the benchmarks all start their services through
`LocalStack`, so free ports, readiness checks, log files and clean shutdown (by
process group, also on Ctrl-C) are written once. Each service is a
`local_stack.processes.ManagedProcess`, stopped with its children.
"""

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from local_stack.processes import ManagedProcess, free_port, wait_until
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults

_log = logging.getLogger(__name__)

PUBSUB_EMULATOR_INSTALL_HINT = (
    "The Google Cloud Pub/Sub emulator is required (gcloud component 'pubsub-emulator', "
    "Java 17+). Install it with one of:\n"
    "  gcloud components install pubsub-emulator beta\n"
    "  apt-get install google-cloud-cli-pubsub-emulator openjdk-17-jre-headless  "
    "(Debian/Ubuntu, from Google Cloud's apt repository)\n"
    "See https://cloud.google.com/pubsub/docs/emulator"
)


BIGQUERY_EMULATOR_INSTALL_HINT = (
    "The BigQuery emulator (PyPI bqemulator, in its own virtualenv .venv-bqemulator) is "
    "required: run `make venv` (scripts/bootstrap.sh), or set BQEMULATOR_PYTHON to a Python "
    "that has `pip install -r requirements-bqemulator.txt`."
)
STORAGE_EMULATOR_INSTALL_HINT = (
    "The Cloud Storage emulator (PyPI gcp-storage-emulator, in requirements.txt) is required: "
    "run `make venv`."
)
REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("pubsub", "bigquery", "storage", "cars_api")
_SERVICE_NAMES = {  # service: (log file name, what error messages call it)
    "bigquery": ("bigquery-emulator", "the BigQuery emulator"),
    "storage": ("storage-emulator", "the Cloud Storage emulator"),
    "cars_api": ("cars-api", "the cars API"),
}


class ServiceUnavailable(RuntimeError):
    """A local service is missing or did not become ready; the message says what to do."""


def _check_pubsub_emulator_installed() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise ServiceUnavailable("gcloud is not on PATH.\n" + PUBSUB_EMULATOR_INSTALL_HINT)
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        raise ServiceUnavailable(
            f"gcloud at {sdk_root} has no pubsub-emulator component.\n"
            + PUBSUB_EMULATOR_INSTALL_HINT
        )
    if shutil.which("java") is None:
        raise ServiceUnavailable("java (17+) is not on PATH.\n" + PUBSUB_EMULATOR_INSTALL_HINT)
    return gcloud


def _wait_for_http(
    process: ManagedProcess, url: str, *, what: str, install_hint: str, timeout_s: float
) -> None:
    """Wait until `url` answers 200; fail at once, with its log, if the service exits."""

    def ready() -> bool:
        if not process.running():
            raise ServiceUnavailable(f"{what} exited:\n{process.log_tail()}\n{install_hint}")
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout_s=timeout_s, what=f"{what} at {url}")


class LocalStack:
    """Starts the local services; use as a context manager, read `env` for clients.

    `env` holds the variables Google's client libraries read to find the emulators
    (PUBSUB_EMULATOR_HOST, ...). `apply_env()` sets them in this process, for an
    in-process pipeline or client; child processes get them through `child_env()`.
    """

    def __init__(
        self,
        project_id: str = defaults.PROJECT_ID,
        work_dir: Path | None = None,
        services: tuple[str, ...] = SERVICES,
        bigquery_on_disk: bool = False,
    ) -> None:
        self.project_id = project_id
        self.services = services
        # A DuckDB file instead of memory: restart_service("bigquery") keeps the tables, at
        # the cost of slower streaming inserts (about 4x per request, measured).
        self.bigquery_on_disk = bigquery_on_disk
        self._own_dir = work_dir is None
        # Absolute: the storage emulator refuses a relative data directory.
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="section-speed-stack-")).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {}
        self._processes: list[ManagedProcess] = []
        self._saved_env: dict[str, str | None] = {}
        self._services: dict[str, tuple[ManagedProcess, Callable[[], ManagedProcess]]] = {}
        self.cars_api_url = ""

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "LocalStack":
        try:
            self.start_pubsub()
            if "bigquery" in self.services:
                self.start_bigquery()
            if "storage" in self.services:
                self.start_storage()
            if "cars_api" in self.services:
                self.start_cars_api()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def apply_env(self) -> None:
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Start a child that the stack stops with the services (e.g. the pipeline)."""
        process = ManagedProcess(name, argv, self.work_dir / f"{name}.log", env or self.child_env())
        self._processes.append(process)
        return process

    # -- Pub/Sub -----------------------------------------------------------------------
    def start_pubsub(self, timeout_s: float = 60.0) -> str:
        gcloud = _check_pubsub_emulator_installed()
        port = free_port()
        host = f"127.0.0.1:{port}"
        data_dir = self.work_dir / "pubsub-data"
        data_dir.mkdir(exist_ok=True)
        # gcloud writes its own config and logs under CLOUDSDK_CONFIG: keep them in the stack dir.
        env = self.child_env({"CLOUDSDK_CONFIG": str(self.work_dir / "gcloud-config")})
        process = self.spawn(
            "pubsub-emulator",
            [
                gcloud,
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={host}",
                f"--project={self.project_id}",
                f"--data-dir={data_dir}",
            ],
            env,
        )
        _wait_for_http(
            process,
            f"http://{host}/v1/projects/{self.project_id}/topics",
            what="the Pub/Sub emulator",
            install_hint=PUBSUB_EMULATOR_INSTALL_HINT,
            timeout_s=timeout_s,
        )
        self.env["PUBSUB_EMULATOR_HOST"] = host
        self.env["PUBSUB_PROJECT_ID"] = self.project_id
        _log.info("Pub/Sub emulator ready on %s", host)
        return host

    # -- BigQuery ----------------------------------------------------------------------
    def start_bigquery(self, timeout_s: float = 60.0) -> str:
        """bqemulator (DuckDB-backed BigQuery REST API), without extensions.

        In memory, or with `bigquery_on_disk` in a DuckDB file under the stack's work_dir
        (emptied when the stack starts it), so that `restart_service("bigquery")` brings
        the tables and rows back.
        """
        python = Path(
            os.environ.get("BQEMULATOR_PYTHON", REPO_ROOT / ".venv-bqemulator" / "bin" / "python")
        )
        if not python.exists():
            raise ServiceUnavailable(f"{python} is missing.\n{BIGQUERY_EMULATOR_INSTALL_HINT}")
        rest_port, grpc_port = free_port(), free_port()
        argv = [
            str(python), str(REPO_ROOT / "scripts" / "bqemulator_offline.py"), "start",
            "--rest-host", "127.0.0.1", f"--rest-port={rest_port}",
            "--grpc-host", "127.0.0.1", f"--grpc-port={grpc_port}",
            f"--project={self.project_id}", "--log-level", "warning",
        ]  # fmt: skip
        if self.bigquery_on_disk:
            data_dir = _empty_dir(self.work_dir / "bigquery-data")
            argv += ["--persistent", f"--data-dir={data_dir}"]
        endpoint = f"http://127.0.0.1:{rest_port}"
        self._start_service(
            "bigquery", argv, f"{endpoint}/readyz", BIGQUERY_EMULATOR_INSTALL_HINT, timeout_s
        )
        # google-cloud-bigquery reads this variable itself; see clients.warehouse.
        self.env["BIGQUERY_EMULATOR_HOST"] = endpoint
        _log.info("BigQuery emulator ready on %s", endpoint)
        return endpoint

    # -- Cloud Storage -----------------------------------------------------------------
    def start_storage(self, timeout_s: float = 30.0) -> str:
        """gcp-storage-emulator; google-cloud-storage finds it by env variable.

        Buckets and objects are kept on disk under the stack's work_dir (emptied when the
        stack starts it), so that `restart_service("storage")` keeps them.
        """
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        data_dir = _empty_dir(self.work_dir / "storage-data")
        argv = [
            str(Path(sys.executable).with_name("gcp-storage-emulator")),
            f"--data-dir={data_dir}",
            "start", "--host=127.0.0.1", f"--port={port}", "--quiet",
        ]  # fmt: skip
        self._start_service(
            "storage", argv, f"{endpoint}/storage/v1/b", STORAGE_EMULATOR_INSTALL_HINT, timeout_s
        )
        self.env["STORAGE_EMULATOR_HOST"] = endpoint
        _log.info("Cloud Storage emulator ready on %s", endpoint)
        return endpoint

    def create_bucket(self, name: str) -> None:
        with _env(self.env):
            EvidenceStore(name, self.project_id).ensure_bucket()

    def provision_warehouse(self, dataset: str) -> None:
        """The deploy-time step (`python -m pipeline.provision`): the pipeline's workers
        only check that the dataset's tables exist."""
        with _env(self.env):
            Warehouse(self.project_id, dataset).ensure_tables()

    # -- cars API ----------------------------------------------------------------------
    def start_cars_api(self, timeout_s: float = 30.0) -> str:
        """The vehicle-registry photo archive (generator.cars_api, FastAPI on uvicorn)."""
        port = free_port()
        self.cars_api_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "generator.cars_api", "--host=127.0.0.1", f"--port={port}"]
        hint = "run `make venv` (fastapi, uvicorn, pillow from requirements.txt)"
        self._start_service(
            "cars_api", argv, f"{self.cars_api_url}/_admin/requests", hint, timeout_s
        )
        _log.info("cars API ready on %s", self.cars_api_url)
        return self.cars_api_url

    def _start_service(
        self, name: str, argv: list[str], ready_url: str, install_hint: str, timeout_s: float
    ) -> None:
        """Start a service that can be restarted on the same address (`restart_service`)."""

        log_name, title = _SERVICE_NAMES[name]

        def launch() -> ManagedProcess:
            process = self.spawn(log_name, argv)
            _wait_for_http(
                process, ready_url, what=title, install_hint=install_hint, timeout_s=timeout_s
            )
            return process

        self._services[name] = (launch(), launch)

    # -- faults: a service down and back, on the same address ---------------------------
    def stop_service(self, name: str) -> None:
        process, _ = self._services[name]
        process.stop()
        self._processes.remove(process)

    def restart_service(self, name: str) -> None:
        """Start `name` again on its old port.

        Storage, and BigQuery when `bigquery_on_disk`, come back with their data (kept on
        disk); the cars API's request log and queued faults, which live in memory, start
        empty.
        """
        if name == "bigquery" and not self.bigquery_on_disk:
            raise ValueError(
                "restarting BigQuery in memory would lose its tables: "
                "start the stack with bigquery_on_disk=True"
            )
        process, launch = self._services[name]
        if process.running():
            self.stop_service(name)
        self._services[name] = (launch(), launch)

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project_id}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project_id}/subscriptions/{name}"

    def create_topics(
        self, topics: Iterable[str], subscriptions: dict[str, str] | None = None
    ) -> None:
        """Create topics, then subscriptions given as {subscription: topic} (short names)."""
        publisher, subscriber = pubsub_clients(self.env["PUBSUB_EMULATOR_HOST"])
        with subscriber:
            for topic in topics:
                publisher.create_topic(name=self.topic_path(topic))
            for subscription, topic in (subscriptions or {}).items():
                subscriber.create_subscription(
                    name=self.subscription_path(subscription),
                    topic=self.topic_path(topic),
                    ack_deadline_seconds=60,
                )
        publisher.transport.close()


def _empty_dir(path: Path) -> Path:
    """`path` as a new empty directory (what an earlier stack left there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def pubsub_clients(emulator_host: str) -> tuple[Any, Any]:
    """Publisher and subscriber clients on a plaintext channel to the emulator.

    (`client_options` alone would make the clients try TLS against the emulator.)
    """
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(emulator_host))
    )
    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(emulator_host))
    )
    return publisher, subscriber


@contextmanager
def _env(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (clients read emulator hosts from there)."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
