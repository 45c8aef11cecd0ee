"""Start-up checks: one test per problem message, with fake Google clients (the warehouse's
through the real Warehouse class) and the local cars API on loopback (the real Pub/Sub and
Cloud Storage emulators are in tests/integration/test_startup_checks.py)."""

import logging
from dataclasses import dataclass, field, replace

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from google.api_core import exceptions as api_exceptions
from google.auth.exceptions import DefaultCredentialsError

from generator.cars_api import CarsRegistry, create_app, serving
from local_stack.processes import free_port
from pipeline.startup_checks import (
    ConfigurationError,
    StartupServices,
    check_configuration,
    require_valid_configuration,
)
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.schemas import TABLES
from tests.unit.test_cars_api import tiny_jpeg

PROJECT = "course-project"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/camera-in-sub"
OUTPUT = f"projects/{PROJECT}/topics/camera-out"
EMULATED = {
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1",
    "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:1",
}


@dataclass
class Granted:
    permissions: list[str]


@dataclass
class FakePubSub:
    """get_topic / get_subscription / test_iam_permissions answering from tables."""

    missing: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)  # metadata read refused
    granted: dict[str, list[str]] = field(default_factory=dict)
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def _get(self, path: str) -> object:
        self.calls.append(path)
        if self.down:
            raise api_exceptions.ServiceUnavailable("connection refused")
        if path in self.missing:
            raise api_exceptions.NotFound(f"Resource not found (resource={path})")
        if path in self.denied:
            raise api_exceptions.PermissionDenied("User not authorized")
        return object()

    def get_topic(self, request: dict, timeout: float, retry: object) -> object:
        assert timeout <= 10 and retry is None
        return self._get(request["topic"])

    def get_subscription(self, request: dict, timeout: float, retry: object) -> object:
        assert timeout <= 10 and retry is None
        return self._get(request["subscription"])

    def test_iam_permissions(self, request: dict, timeout: float) -> Granted:
        granted = self.granted.get(request["resource"], [])
        return Granted([p for p in request["permissions"] if p in granted])


@dataclass
class FakeBucket:
    answer: list[str] | Exception

    def test_iam_permissions(self, permissions: list[str], timeout: float, retry: object):
        if isinstance(self.answer, Exception):
            raise self.answer
        return [p for p in permissions if p in self.answer]


@dataclass
class FakeStorage:
    buckets: dict[str, FakeBucket]
    projects: list[str] = field(default_factory=list)

    def bucket(self, name: str) -> FakeBucket:
        return self.buckets.get(name, FakeBucket(api_exceptions.NotFound("404 bucket")))


@dataclass
class FoundTable:
    schema: list


@dataclass
class Column:
    name: str


@dataclass
class FakeBigQuery:
    """get_table answering from a table of the dataset's tables and their columns."""

    tables: dict[str, list[str]] = field(
        default_factory=lambda: {t.name: [c.name for c in t.columns] for t in TABLES}
    )
    error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def get_table(self, table_id: str, retry: object, timeout: float) -> FoundTable:
        assert retry is None and timeout <= 10  # seconds, not the workers' ten minutes
        self.calls.append(table_id)
        if self.error:
            raise self.error
        name = table_id.rsplit(".", 1)[1]
        if name not in self.tables:
            raise api_exceptions.NotFound(f"Not found: Table {table_id}")
        return FoundTable([Column(c) for c in self.tables[name]])


def no_credentials() -> object:
    raise DefaultCredentialsError("Your default credentials were not found.")


def services(
    pubsub: FakePubSub | None = None,
    storage: FakeStorage | None = None,
    environ: dict[str, str] | None = None,
    credentials=no_credentials,
    bigquery: FakeBigQuery | None = None,
) -> StartupServices:
    pubsub = pubsub or FakePubSub()
    bigquery = bigquery or FakeBigQuery()
    storage = storage or FakeStorage({"evidence": FakeBucket(["storage.objects.create",
                                                              "storage.objects.get"])})  # fmt: skip

    def storage_factory(project: str) -> FakeStorage:
        storage.projects.append(project)
        return storage

    return StartupServices(
        default_credentials=credentials,
        publisher=lambda: pubsub,
        subscriber=lambda: pubsub,
        storage=storage_factory,
        warehouse=lambda project, dataset: Warehouse(project, dataset, client=bigquery),
        environ=EMULATED if environ is None else environ,
    )


def options(*extra: str) -> PipelineOptions:
    return PipelineOptions(
        [
            f"--project_id={PROJECT}",
            f"--input_subscription={SUBSCRIPTION}",
            f"--output_topic={OUTPUT}",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def cars_api():
    app = create_app(CarsRegistry(frozenset({"veh-1"})), render=tiny_jpeg)

    @app.get("/course-api-elsewhere", include_in_schema=False)
    def photo_elsewhere() -> dict[str, str]:  # the course's API kept its photos elsewhere
        return {"image_url": "https://photos.example/car.jpg"}

    with serving(app) as url:
        yield url


# --- all well ----------------------------------------------------------------------------


def test_nothing_to_report_when_everything_named_exists(cars_api):
    pubsub = FakePubSub()
    storage = FakeStorage(
        {"evidence": FakeBucket(["storage.objects.create", "storage.objects.get"])}
    )
    found = check_configuration(
        options("--bucket=evidence", f"--cars_api={cars_api}/cars", "--dead_letter_topic=dl"),
        services(pubsub, storage),
    )
    assert found == []
    assert pubsub.calls == [SUBSCRIPTION, OUTPUT, f"projects/{PROJECT}/topics/dl"]
    assert storage.projects == [PROJECT]


def test_emulator_variables_stand_in_for_credentials():
    called = []
    found = check_configuration(
        options("--bucket=evidence", "--bq_dataset=speeds"),
        services(credentials=lambda: called.append("default")),
    )
    assert found == [] and called == []


def test_credentials_are_asked_for_once_when_a_service_is_not_emulated():
    called = []
    found = check_configuration(
        options("--bucket=evidence", "--bq_dataset=speeds"),
        services(environ={}, credentials=lambda: called.append("default")),
    )
    assert found == [] and called == ["default"]


# --- one test per message ----------------------------------------------------------------


def test_missing_credentials_name_each_service_and_the_fixes():
    (problem,) = check_configuration(
        options("--bq_dataset=speeds"),
        services(environ={"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}),
    )
    assert problem.startswith("no Google credentials for BigQuery (--bq_dataset)")
    assert "DefaultCredentialsError" in problem
    assert "gcloud auth application-default login" in problem
    assert "GOOGLE_APPLICATION_CREDENTIALS" in problem
    assert "set BIGQUERY_EMULATOR_HOST for BigQuery" in problem
    assert "Pub/Sub" not in problem  # emulated


def test_cloud_vision_credentials_say_it_has_no_emulator(cars_api):
    (problem,) = check_configuration(
        options(f"--cars_api={cars_api}/cars", "--plate_reader=cloud-vision"),
        services(),
    )
    assert problem.startswith(
        "no Google credentials for Cloud Vision (--plate_reader cloud-vision)"
    )
    assert problem.endswith("Cloud Vision has no emulator: use --plate_reader embedded locally")


def test_missing_subscription_says_how_to_create_it():
    (problem,) = check_configuration(options(), services(FakePubSub(missing={SUBSCRIPTION})))
    assert problem == (
        f"--input_subscription: {SUBSCRIPTION} does not exist: create it (`gcloud pubsub "
        f"subscriptions create camera-in-sub --project {PROJECT} --topic TOPIC`) or name one "
        "that does"
    )


def test_missing_topics_say_how_to_create_them():
    dead = f"projects/{PROJECT}/topics/dead"
    found = check_configuration(
        options("--dead_letter_topic=dead"), services(FakePubSub(missing={OUTPUT, dead}))
    )
    assert found == [
        f"--output_topic: {OUTPUT} does not exist: create it (`gcloud pubsub topics create "
        f"camera-out --project {PROJECT}`) or name one that does",
        f"--dead_letter_topic: {dead} does not exist: create it (`gcloud pubsub topics "
        f"create dead --project {PROJECT}`) or name one that does",
    ]


def test_unreadable_metadata_falls_back_to_the_permission_the_pipeline_uses():
    pubsub = FakePubSub(
        denied={SUBSCRIPTION, OUTPUT},
        granted={SUBSCRIPTION: ["pubsub.subscriptions.consume"], OUTPUT: []},
    )
    (problem,) = check_configuration(options(), services(pubsub))
    assert problem == (
        f"--output_topic: the pipeline's account lacks pubsub.topics.publish on {OUTPUT}: "
        "grant it roles/pubsub.publisher on that resource"
    )


def test_unreachable_pubsub_says_where_it_looked():
    found = check_configuration(options(), services(FakePubSub(down=True)))
    assert len(found) == 2
    assert found[0].startswith(
        f"--input_subscription: cannot reach Pub/Sub to check {SUBSCRIPTION} (ServiceUnavailable"
    )
    assert found[0].endswith("check the network, or PUBSUB_EMULATOR_HOST for the emulator")


def test_missing_bucket_says_how_to_create_it_or_to_leave_it_out():
    (problem,) = check_configuration(options("--bucket=no-such-bucket"), services())
    assert problem == (
        "--bucket no-such-bucket does not exist: create it (`gcloud storage buckets create "
        f"gs://no-such-bucket --project {PROJECT} --location REGION`), or leave --bucket out "
        "to keep the cars API's photo URLs without copies"
    )


def test_bucket_without_write_permission_names_the_roles():
    storage = FakeStorage({"read-only": FakeBucket(["storage.objects.get"])})
    (problem,) = check_configuration(options("--bucket=read-only"), services(storage=storage))
    assert problem == (
        "--bucket read-only: the pipeline's account lacks storage.objects.create: grant it "
        "roles/storage.objectCreator and roles/storage.objectViewer (or "
        "roles/storage.objectUser) on gs://read-only"
    )


def test_bucket_refused_outright_names_a_role():
    storage = FakeStorage({"theirs": FakeBucket(api_exceptions.Forbidden("403 no access"))})
    (problem,) = check_configuration(options("--bucket=theirs"), services(storage=storage))
    assert problem.startswith("--bucket theirs: access refused (")
    assert problem.endswith("grant the pipeline's account roles/storage.objectUser on gs://theirs")


def test_unreachable_storage_says_where_it_looked():
    storage = FakeStorage({"evidence": FakeBucket(ConnectionRefusedError("refused"))})
    (problem,) = check_configuration(options("--bucket=evidence"), services(storage=storage))
    assert problem.startswith("--bucket evidence: cannot reach Cloud Storage (")
    assert problem.endswith("STORAGE_EMULATOR_HOST for the emulator")


def test_every_table_the_job_writes_is_read_once():
    bigquery = FakeBigQuery()
    assert check_configuration(options("--bq_dataset=speeds"), services(bigquery=bigquery)) == []
    assert bigquery.calls == [f"{PROJECT}.speeds.{table.name}" for table in TABLES]


def test_missing_table_names_the_provision_command():
    """Without this check a dataset not provisioned shows only in the workers' logs."""
    bigquery = FakeBigQuery()
    del bigquery.tables["fines"]
    (problem,) = check_configuration(options("--bq_dataset=speeds"), services(bigquery=bigquery))
    assert problem == (
        f"--bq_dataset speeds: table {PROJECT}.speeds.fines does not exist. Create the tables "
        f"at deploy time with `python -m pipeline.provision --project {PROJECT} --bq_dataset "
        "speeds` (docs/deploy.md)."
    )


def test_table_missing_a_column_names_it_and_the_provision_command():
    bigquery = FakeBigQuery()
    bigquery.tables["vehicle_speeds"].remove("revision")
    (problem,) = check_configuration(options("--bq_dataset=speeds"), services(bigquery=bigquery))
    assert f"table {PROJECT}.speeds.vehicle_speeds lacks columns ['revision']" in problem
    assert "python -m pipeline.provision" in problem


def test_tables_the_account_may_not_read_name_the_permissions():
    bigquery = FakeBigQuery(error=api_exceptions.Forbidden("403 Access Denied"))
    (problem,) = check_configuration(options("--bq_dataset=speeds"), services(bigquery=bigquery))
    assert problem.startswith("--bq_dataset speeds: the pipeline's account may not read the")
    assert problem.endswith(
        "grant it bigquery.tables.get and bigquery.tables.updateData on each table "
        "(docs/deploy.md, Roles)"
    )


def test_unreachable_bigquery_says_where_it_looked():
    bigquery = FakeBigQuery(error=api_exceptions.ServiceUnavailable("connection refused"))
    (problem,) = check_configuration(options("--bq_dataset=speeds"), services(bigquery=bigquery))
    assert problem.startswith("--bq_dataset speeds: cannot reach BigQuery (ServiceUnavailable")
    assert problem.endswith("BIGQUERY_EMULATOR_HOST for the emulator")
    assert len(bigquery.calls) == 1  # no retry: the checks take seconds


def test_cars_api_that_does_not_answer():
    url = f"http://127.0.0.1:{free_port()}/cars"
    (problem,) = check_configuration(options(f"--cars_api={url}"), services())
    assert problem.startswith(f"--cars_api {url} does not answer (cars API unreachable")
    assert problem.endswith(
        "start the cars API or correct the URL (fines would otherwise go out without photos)"
    )


def test_course_form_url_that_is_no_cars_api_names_both_forms(cars_api):
    url = f"{cars_api}/no-such-route"
    (problem,) = check_configuration(options(f"--cars_api={url}"), services())
    assert problem.startswith(f"--cars_api {url} answered, but not as a cars API (")
    assert "answered 404" in problem
    assert "template such as http://HOST:PORT/cars/{vehicle_id}" in problem


def test_cars_api_whose_photos_are_on_a_host_not_allowed(cars_api):
    url = f"{cars_api}/course-api-elsewhere"
    found = check_configuration(
        options(f"--cars_api={url}", "--photo_hosts=storage.googleapis.com"), services()
    )
    (problem,) = found
    assert problem.startswith(f"--cars_api {url} answers with a photo the pipeline may not")
    assert "https://photos.example/car.jpg" in problem
    assert problem.endswith("add it to --photo_hosts (https, public addresses only)")


def test_template_form_accepts_an_unknown_probe_vehicle(cars_api):
    found = check_configuration(options(f"--cars_api={cars_api}/cars/{{vehicle_id}}"), services())
    assert found == []


def test_an_unforeseen_error_is_a_problem_not_a_crash():
    def broken() -> FakePubSub:
        raise RuntimeError("client library exploded")

    found = check_configuration(options(), replace(services(), subscriber=broken))
    assert found == ["could not check Pub/Sub: RuntimeError: client library exploded"]


# --- the entry point ---------------------------------------------------------------------


def test_require_raises_one_error_listing_every_problem():
    pubsub = FakePubSub(missing={SUBSCRIPTION, OUTPUT})
    with pytest.raises(ConfigurationError) as raised:
        require_valid_configuration(options("--bucket=gone"), services(pubsub))
    message = str(raised.value)
    assert message.startswith("the pipeline does not start: 3 configuration problems:\n  - ")
    assert message.count("\n  - ") == 3
    assert "camera-in-sub" in message and "camera-out" in message and "gone" in message


def test_require_passes_quietly_and_skips_dry_runs(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.startup_checks")
    require_valid_configuration(options(), services())
    assert "start-up checks passed" in caplog.text
    missing = FakePubSub(missing={SUBSCRIPTION})
    require_valid_configuration(options("--dry_run=True"), services(missing))
    assert missing.calls == []
