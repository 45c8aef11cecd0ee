"""Fail fast on configuration: check what the options name before the first pull.

A pipeline that starts with a missing topic, no credentials or a cars API that does not
answer fails later, at the first message or the first fine, and loses what it holds by
then. `require_valid_configuration` runs before the pipeline is launched (locally, and
where a Dataflow job is submitted or a Flex Template launched) and checks, each only when
its option is in use:

- credentials for each Google service in use (Application Default Credentials), unless
  its emulator variable is set (PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST,
  BIGQUERY_EMULATOR_HOST; Cloud Vision has none);
- the input subscription and the output and dead-letter topics exist (Pub/Sub
  get_subscription / get_topic; when the account may not read their metadata, whether
  it holds the one permission the pipeline uses: consume, publish);
- each BigQuery table the job writes exists with its columns (`tables.get`, which the
  workers' role grants): a dataset not provisioned would otherwise show only in the
  workers' logs, after the job started;
- the evidence bucket exists and the pipeline's account may create and read objects in
  it: `test_iam_permissions`, which asks for exactly the permissions the pipeline uses,
  writes nothing (an evidence bucket may have a retention policy, under which a probe
  object could not be deleted again) and needs no delete permission the pipeline has no
  use for;
- the cars API answers: one GET with a short timeout (a fixed-URL API as it is; a
  `{vehicle_id}` template for a probe vehicle, whose 404 is an answer).

Every problem is one sentence naming the fix; all are reported together. Every call has
a bounded timeout and no retry, so the checks take seconds, not minutes.
"""

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from google.api_core import exceptions as api_exceptions

from pipeline.options import SectionSpeedOptions, resource_path
from section_speed.clients.cars_api import (
    CarsApiClient,
    EvidenceRejected,
    EvidenceUnavailable,
    PhotoHostRefused,
)
from section_speed.clients.warehouse import TablesMissing, Warehouse
from section_speed.domain.course import CARS_API_FORM_HINT
from section_speed.domain.plate_reading import CASCADE_READER, CLOUD_VISION_READER
from section_speed.domain.schemas import TABLES

_log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0  # each Google API call
CARS_API_TIMEOUT_S = (2.0, 5.0)  # (connect, read) of the one GET
# What the pipeline does in the bucket: EvidenceStore reads an object before creating it.
BUCKET_PERMISSIONS = ("storage.objects.create", "storage.objects.get")
PUBSUB, STORAGE, BIGQUERY, VISION = "Pub/Sub", "Cloud Storage", "BigQuery", "Cloud Vision"
EMULATOR_VARIABLES = {
    PUBSUB: "PUBSUB_EMULATOR_HOST",
    STORAGE: "STORAGE_EMULATOR_HOST",
    BIGQUERY: "BIGQUERY_EMULATOR_HOST",
}


class ConfigurationError(RuntimeError):
    """The options name something that is missing or unreachable; the message says what."""


def _google_default_credentials() -> object:
    import google.auth

    return google.auth.default()


def _publisher() -> Any:
    from google.cloud import pubsub_v1  # finds PUBSUB_EMULATOR_HOST by itself

    return pubsub_v1.PublisherClient()


def _subscriber() -> Any:
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def _storage(project: str) -> Any:
    from google.cloud import storage  # finds STORAGE_EMULATOR_HOST by itself

    return storage.Client(project=project)


def _warehouse(project: str, dataset: str) -> Warehouse:
    return Warehouse(project, dataset)  # finds BIGQUERY_EMULATOR_HOST by itself


def _cars_api(url: str, photo_hosts: str | None) -> CarsApiClient:
    return CarsApiClient(url, photo_hosts=photo_hosts, attempts=1, timeout_s=CARS_API_TIMEOUT_S)


@dataclass(frozen=True)
class StartupServices:
    """How the checks reach each service: the real clients, or a test's fakes."""

    default_credentials: Callable[[], object] = _google_default_credentials
    publisher: Callable[[], Any] = _publisher
    subscriber: Callable[[], Any] = _subscriber
    storage: Callable[[str], Any] = _storage
    warehouse: Callable[[str, str], Warehouse] = _warehouse
    cars_api: Callable[[str, str | None], CarsApiClient] = _cars_api
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


@dataclass(frozen=True)
class _Use:
    service: str
    option: str  # the option that needs it, as the message names it


def services_in_use(options: SectionSpeedOptions) -> list[_Use]:
    """The Google services the options need, each with the option that needs it."""
    uses = []
    if _reads_pubsub(options) or options.dead_letter_topic:
        uses.append(_Use(PUBSUB, "--input_subscription/--output_topic"))
    gcs = [
        f"--{name}"
        for name in ("sections_file", "input_file", "output_path")
        if str(getattr(options, name, None) or "").startswith("gs://")
    ]
    if options.bucket or gcs:
        uses.append(_Use(STORAGE, "/".join((["--bucket"] if options.bucket else []) + gcs)))
    if options.bq_dataset:
        uses.append(_Use(BIGQUERY, "--bq_dataset"))
    if options.cars_api and options.plate_reader in (CLOUD_VISION_READER, CASCADE_READER):
        uses.append(_Use(VISION, f"--plate_reader {options.plate_reader}"))
    return uses


def check_configuration(
    options: PipelineOptions, services: StartupServices | None = None
) -> list[str]:
    """Problems with what the options name, each naming its fix; empty when all is well."""
    own = options.view_as(SectionSpeedOptions)
    services = services or StartupServices()
    uses = services_in_use(own)
    problems = _check_credentials(uses, services)
    if not problems:  # without credentials every call below would fail the same way
        if any(use.service == PUBSUB for use in uses):
            problems += _guarded(lambda: _check_pubsub(own, services), PUBSUB)
        if own.bq_dataset:
            problems += _guarded(lambda: _check_warehouse(own, services), BIGQUERY)
        if own.bucket:
            problems += _guarded(lambda: _check_bucket(own, services), STORAGE)
    if own.cars_api:
        problems += _guarded(lambda: _check_cars_api(own, services), "the cars API")
    return problems


def require_valid_configuration(
    options: PipelineOptions, services: StartupServices | None = None
) -> None:
    """Raise ConfigurationError listing every problem; a --dry_run build checks nothing."""
    if options.view_as(TestOptions).dry_run:  # read as DataflowRunner reads it
        _log.info("start-up checks skipped: --dry_run builds the job without running it")
        return
    started = time.monotonic()
    problems = check_configuration(options, services)
    if problems:
        raise ConfigurationError(
            f"the pipeline does not start: {len(problems)} configuration problem"
            f"{'s' if len(problems) > 1 else ''}:\n  - " + "\n  - ".join(problems)
        )
    _log.info("start-up checks passed in %.1f s", time.monotonic() - started)


def _guarded(check: Callable[[], list[str]], what: str) -> list[str]:
    """A check's problems; an error the check did not foresee is a problem too, not a crash."""
    try:
        return check()
    except Exception as error:
        return [f"could not check {what}: {type(error).__name__}: {str(error)[:300]}"]


def _check_credentials(uses: list[_Use], services: StartupServices) -> list[str]:
    needing = [use for use in uses if not _emulated(use.service, services.environ)]
    if not needing:
        return []
    try:
        services.default_credentials()
    except Exception as error:  # DefaultCredentialsError, or a broken key file
        names = ", ".join(f"{use.service} ({use.option})" for use in needing)
        emulators = [
            f"{EMULATOR_VARIABLES[use.service]} for {use.service}"
            for use in needing
            if use.service in EMULATOR_VARIABLES
        ]
        fixes = (
            "run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
        )
        if emulators:
            fixes += ", or to use the local emulators set " + ", ".join(emulators)
        if any(use.service == VISION for use in needing):
            fixes += "; Cloud Vision has no emulator: use --plate_reader embedded locally"
        return [
            f"no Google credentials for {names} ({type(error).__name__}: "
            f"{str(error)[:200]}): {fixes}"
        ]
    return []


def _emulated(service: str, environ: Mapping[str, str]) -> bool:
    variable = EMULATOR_VARIABLES.get(service)
    return bool(variable and environ.get(variable))


def _reads_pubsub(options: SectionSpeedOptions) -> bool:
    return not getattr(options, "input_file", None)  # a bounded run reads files


def _check_pubsub(options: SectionSpeedOptions, services: StartupServices) -> list[str]:
    project = options.project_id
    problems = []
    topics = [("--dead_letter_topic", options.dead_letter_topic)]
    if _reads_pubsub(options):
        topics.insert(0, ("--output_topic", options.output_topic))
        subscriber = services.subscriber()
        try:
            path = resource_path(project, "subscriptions", options.input_subscription)
            problems += _check_pubsub_resource(
                "--input_subscription",
                path,
                lambda: subscriber.get_subscription(
                    request={"subscription": path}, timeout=CALL_TIMEOUT_S, retry=None
                ),
                subscriber,
                "pubsub.subscriptions.consume",
                "roles/pubsub.subscriber",
                f"gcloud pubsub subscriptions create {path.rsplit('/', 1)[1]} "
                f"--project {path.split('/')[1]} --topic TOPIC",
            )
        finally:
            _close(subscriber)
    publisher = services.publisher()
    try:
        for option, name in topics:
            if not name:
                continue
            path = resource_path(project, "topics", name)
            problems += _check_pubsub_resource(
                option,
                path,
                lambda path=path: publisher.get_topic(
                    request={"topic": path}, timeout=CALL_TIMEOUT_S, retry=None
                ),
                publisher,
                "pubsub.topics.publish",
                "roles/pubsub.publisher",
                f"gcloud pubsub topics create {path.rsplit('/', 1)[1]} "
                f"--project {path.split('/')[1]}",
            )
    finally:
        _close(publisher)
    return problems


def _check_pubsub_resource(
    option: str,
    path: str,
    get: Callable[[], object],
    client: Any,
    permission: str,
    role: str,
    create_command: str,
) -> list[str]:
    missing = (
        f"{option}: {path} does not exist: create it (`{create_command}`) or name one that does"
    )
    try:
        get()
        return []
    except api_exceptions.NotFound:
        return [missing]
    except api_exceptions.PermissionDenied:
        pass  # reading metadata is not what the pipeline does: ask for what it does
    except api_exceptions.GoogleAPICallError as error:
        return [
            f"{option}: cannot reach Pub/Sub to check {path} ({type(error).__name__}: "
            f"{str(error)[:200]}): check the network, or PUBSUB_EMULATOR_HOST for the emulator"
        ]
    try:
        granted = client.test_iam_permissions(
            request={"resource": path, "permissions": [permission]}, timeout=CALL_TIMEOUT_S
        ).permissions
    except api_exceptions.NotFound:
        return [missing]
    except api_exceptions.GoogleAPICallError:
        granted = []
    if permission in granted:
        return []
    return [
        f"{option}: the pipeline's account lacks {permission} on {path}: grant it {role} "
        "on that resource"
    ]


def _check_warehouse(options: SectionSpeedOptions, services: StartupServices) -> list[str]:
    """Every table the job writes, read once, without retry (TablesMissing names the fix)."""
    dataset = options.bq_dataset
    warehouse = services.warehouse(options.project_id, dataset)
    try:
        warehouse.check_tables(TABLES, retry=None, timeout=CALL_TIMEOUT_S)
    except TablesMissing as error:
        return [f"--bq_dataset {dataset}: {error}"]
    except api_exceptions.Forbidden as error:
        return [
            f"--bq_dataset {dataset}: the pipeline's account may not read the tables "
            f"({str(error)[:200]}): grant it bigquery.tables.get and "
            "bigquery.tables.updateData on each table (docs/deploy.md, Roles)"
        ]
    except (api_exceptions.GoogleAPICallError, OSError) as error:
        return [
            f"--bq_dataset {dataset}: cannot reach BigQuery ({type(error).__name__}: "
            f"{str(error)[:200]}): check the network, or BIGQUERY_EMULATOR_HOST for the emulator"
        ]
    finally:
        _close(warehouse.client)
    return []


def _check_bucket(options: SectionSpeedOptions, services: StartupServices) -> list[str]:
    bucket = options.bucket
    client = services.storage(options.project_id)
    try:
        granted = client.bucket(bucket).test_iam_permissions(
            list(BUCKET_PERMISSIONS), timeout=CALL_TIMEOUT_S, retry=None
        )
    except api_exceptions.NotFound:
        return [
            f"--bucket {bucket} does not exist: create it (`gcloud storage buckets create "
            f"gs://{bucket} --project {options.project_id} --location REGION`), or leave "
            "--bucket out to keep the cars API's photo URLs without copies"
        ]
    except api_exceptions.Forbidden as error:
        return [
            f"--bucket {bucket}: access refused ({str(error)[:200]}): grant the pipeline's "
            f"account roles/storage.objectUser on gs://{bucket}"
        ]
    except (api_exceptions.GoogleAPICallError, OSError) as error:
        return [
            f"--bucket {bucket}: cannot reach Cloud Storage ({type(error).__name__}: "
            f"{str(error)[:200]}): check the network, or STORAGE_EMULATOR_HOST for the emulator"
        ]
    finally:
        _close(client)
    missing = [permission for permission in BUCKET_PERMISSIONS if permission not in granted]
    if missing:
        return [
            f"--bucket {bucket}: the pipeline's account lacks {', '.join(missing)}: grant it "
            f"roles/storage.objectCreator and roles/storage.objectViewer (or "
            f"roles/storage.objectUser) on gs://{bucket}"
        ]
    return []


def _check_cars_api(options: SectionSpeedOptions, services: StartupServices) -> list[str]:
    url = options.cars_api
    client = services.cars_api(url, getattr(options, "photo_hosts", None))
    try:
        answer = client.probe()
    except EvidenceUnavailable as error:
        return [
            f"--cars_api {url} does not answer ({error}): start the cars API or correct the "
            "URL (fines would otherwise go out without photos)"
        ]
    except PhotoHostRefused as error:
        return [
            f"--cars_api {url} answers with a photo the pipeline may not fetch ({error}): "
            "if you trust that host, add it to --photo_hosts (https, public addresses only)"
        ]
    except EvidenceRejected as error:
        if client.fixed_url:
            expected = CARS_API_FORM_HINT
        else:
            expected = "this project's form, GET .../cars/{vehicle_id} answering image_url"
        return [f"--cars_api {url} answered, but not as a cars API ({error}): expected {expected}"]
    finally:
        client.close()
    _log.info("cars API %s %s", url, answer)
    return []


def _close(client: Any) -> None:
    close = getattr(client, "close", None) or getattr(
        getattr(client, "transport", None), "close", None
    )
    if close:
        close()
