"""Least privilege that works: the documented roles grant every Google API call the code makes.

1. The product code (pipeline/) is scanned with `ast` for every call of a Google client
   method (any public method of the client classes below, found by introspection) and of
   Beam's Google I/O. Each must be in METHOD_NEEDS (permission, and on which resource), or
   the test fails: a new call needs its permission worked out, and the roles checked.
2. Calls made only at deploy time or by local tooling (NOT_ON_WORKERS) are left out, unless
   worker code can reach them: a name-based call graph over pipeline/ decides.
3. The grants are read from docs/deploy.md's command block (the smoke script's dry run,
   tests/unit/test_smoke_script.py keeps them equal); the resources each option names come
   from the script's launch command. Every need must be granted on its resource (or the
   project), every grant must serve a need, and each role must be grantable there.
4. Workers only read the BigQuery tables' definitions and insert rows, through a custom role
   (created by the procedure) holding exactly the permissions of those calls, bound on
   each table; `pipeline.provision` creates the tables, checked against a strict fake
   client.

ROLE_PERMISSIONS holds, per role, the permissions of Google's IAM reference
(cloud.google.com/iam/docs/roles-permissions/{pubsub,bigquery,storage,dataflow,
artifactregistry}) that matter here, and the lowest resources the role can be granted on.
"""

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery, pubsub_v1, storage, vision

from pipeline import provision
from section_speed.clients.warehouse import TablesMissing, Warehouse
from section_speed.domain.schemas import TABLES, VIEWS

REPO = Path(__file__).resolve().parents[2]
# The packages setup.py ships to the workers.
PRODUCT = [REPO / "pipeline", REPO / "transforms", REPO / "section_speed"]
DEPLOY_DOC = REPO / "docs" / "deploy.md"
SMOKE = REPO / "scripts" / "dataflow_smoke.sh"

# --- what Google's roles grant --------------------------------------------------------------

PROJECT, DATASET, TABLE, BUCKET, TOPIC, SUBSCRIPTION, REPOSITORY = (
    "project", "dataset", "table", "bucket", "topic", "subscription", "repository",
)  # fmt: skip


@dataclass(frozen=True)
class Role:
    permissions: frozenset[str]
    grantable_on: frozenset[str]  # the lowest resource kinds; a project grant always works


def role(permissions: str, *grantable_on: str) -> Role:
    return Role(frozenset(permissions.split()), frozenset(grantable_on) | {PROJECT})


ROLE_PERMISSIONS = {
    "roles/dataflow.worker": role(
        "dataflow.jobs.get dataflow.shuffle.read dataflow.shuffle.write "
        "dataflow.streamingWorkItems.commitWork dataflow.streamingWorkItems.getData "
        "dataflow.streamingWorkItems.getWork dataflow.workItems.lease "
        "dataflow.workItems.sendMessage dataflow.workItems.update logging.logEntries.create "
        "storage.buckets.get compute.instanceGroupManagers.update compute.instances.delete "
        "compute.instances.setDiskAutoDelete autoscaling.sites.readRecommendations "
        "autoscaling.sites.writeMetrics"
    ),
    "roles/bigquery.dataEditor": role(
        "bigquery.datasets.get bigquery.models.create bigquery.models.delete "
        "bigquery.models.getData bigquery.models.getMetadata bigquery.models.list "
        "bigquery.models.updateData bigquery.models.updateMetadata bigquery.routines.create "
        "bigquery.routines.delete bigquery.routines.get bigquery.routines.list "
        "bigquery.routines.update bigquery.tables.create bigquery.tables.createIndex "
        "bigquery.tables.delete bigquery.tables.deleteIndex bigquery.tables.export "
        "bigquery.tables.get bigquery.tables.getData bigquery.tables.getIamPolicy "
        "bigquery.tables.list bigquery.tables.update bigquery.tables.updateData "
        "bigquery.tables.updateTag",  # bigquery.datasets.create: only when granted on a project
        DATASET,
    ),
    "roles/bigquery.jobUser": role("bigquery.jobs.create resourcemanager.projects.get"),
    "roles/storage.objectAdmin": role(
        "storage.objects.create storage.objects.delete storage.objects.get "
        "storage.objects.getIamPolicy storage.objects.list storage.objects.restore "
        "storage.objects.setIamPolicy storage.objects.update storage.managedFolders.create "
        "storage.managedFolders.delete storage.managedFolders.get storage.managedFolders.list "
        "storage.multipartUploads.abort storage.multipartUploads.create "
        "storage.multipartUploads.list storage.multipartUploads.listParts",
        BUCKET,
    ),
    "roles/storage.objectCreator": role(
        "storage.objects.create storage.managedFolders.create storage.multipartUploads.abort "
        "storage.multipartUploads.create storage.multipartUploads.listParts",
        BUCKET,
    ),
    "roles/storage.objectViewer": role(
        "storage.objects.get storage.objects.list storage.folders.get storage.folders.list "
        "storage.managedFolders.get storage.managedFolders.list",
        BUCKET,
    ),
    "roles/pubsub.subscriber": role(
        "pubsub.snapshots.seek pubsub.subscriptions.consume pubsub.topics.attachSubscription",
        TOPIC,
        SUBSCRIPTION,
    ),
    "roles/pubsub.viewer": role(
        "pubsub.schemas.get pubsub.schemas.list pubsub.snapshots.get pubsub.snapshots.list "
        "pubsub.subscriptions.get pubsub.subscriptions.list pubsub.topics.get "
        "pubsub.topics.list",
        TOPIC,
        SUBSCRIPTION,
    ),
    "roles/pubsub.publisher": role("pubsub.topics.publish", TOPIC),
    "roles/artifactregistry.reader": role(
        "artifactregistry.repositories.downloadArtifacts artifactregistry.repositories.get "
        "artifactregistry.repositories.list artifactregistry.files.get "
        "artifactregistry.files.list artifactregistry.tags.get artifactregistry.tags.list "
        "artifactregistry.versions.get artifactregistry.versions.list",
        REPOSITORY,
    ),
}

# --- what the code needs --------------------------------------------------------------------

# Which resource a call acts on, named by the option (or launch flag) that names it.
INPUT_SUBSCRIPTION = "input_subscription"
OUTPUT_TOPICS = "output_topic+dead_letter_topic"
EVIDENCE_BUCKET = "bucket"
WAREHOUSE = "bq_dataset"
STAGING_BUCKET = "staging bucket"
# The bucket --sections_file names: the rules, which workers only read (docs/deploy.md, Buckets).
CONFIG_BUCKET = "sections_file"
THE_PROJECT = "project"
IMAGE_REPOSITORY = "image repository"


@dataclass(frozen=True)
class Need:
    permission: str | None  # None: no IAM permission, only the API enabled
    resource: str
    api: str


# Every Google client method the product calls, with what it needs.
METHOD_NEEDS: dict[str, list[Need]] = {
    # BigQuery
    "get_table": [Need("bigquery.tables.get", WAREHOUSE, "bigquery.googleapis.com")],
    "insert_rows_json": [Need("bigquery.tables.updateData", WAREHOUSE, "bigquery.googleapis.com")],
    "query": [
        Need("bigquery.jobs.create", THE_PROJECT, "bigquery.googleapis.com"),
        Need("bigquery.tables.getData", WAREHOUSE, "bigquery.googleapis.com"),
    ],
    "create_dataset": [Need("bigquery.datasets.create", THE_PROJECT, "bigquery.googleapis.com")],
    "create_table": [Need("bigquery.tables.create", WAREHOUSE, "bigquery.googleapis.com")],
    "update_table": [Need("bigquery.tables.update", WAREHOUSE, "bigquery.googleapis.com")],
    # Deploy time only: a view whose rule changed is deleted and created again.
    "delete_table": [Need("bigquery.tables.delete", WAREHOUSE, "bigquery.googleapis.com")],
    "get_dataset": [Need("bigquery.datasets.get", WAREHOUSE, "bigquery.googleapis.com")],
    "update_dataset": [Need("bigquery.datasets.update", WAREHOUSE, "bigquery.googleapis.com")],
    # Cloud Storage (the evidence bucket)
    "get_blob": [Need("storage.objects.get", EVIDENCE_BUCKET, "storage.googleapis.com")],
    # if_generation_match=0: never an overwrite, so no storage.objects.delete
    "upload_from_string": [
        Need("storage.objects.create", EVIDENCE_BUCKET, "storage.googleapis.com")
    ],
    "download_as_bytes": [Need("storage.objects.get", EVIDENCE_BUCKET, "storage.googleapis.com")],
    "download_as_text": [Need("storage.objects.get", EVIDENCE_BUCKET, "storage.googleapis.com")],
    "list_blobs": [Need("storage.objects.list", EVIDENCE_BUCKET, "storage.googleapis.com")],
    "create_bucket": [Need("storage.buckets.create", THE_PROJECT, "storage.googleapis.com")],
    # testIamPermissions answers which of the asked permissions the caller has: it needs none.
    "test_iam_permissions": [Need(None, THE_PROJECT, "storage.googleapis.com")],
    # Pub/Sub: the replay command (an operator's credentials: pipeline.replay is not on
    # the workers) publishes to the input topic.
    "publish": [Need("pubsub.topics.publish", "input topic", "pubsub.googleapis.com")],
    # Pub/Sub (start-up checks)
    "get_subscription": [
        Need("pubsub.subscriptions.get", INPUT_SUBSCRIPTION, "pubsub.googleapis.com")
    ],
    # A refusal is tolerated (startup_checks falls back to testIamPermissions on the topic).
    "get_topic": [Need(None, OUTPUT_TOPICS, "pubsub.googleapis.com")],
    # Cloud Vision: image bytes inline, no resource to hold a role on; the API must be enabled.
    "batch_annotate_images": [Need(None, THE_PROJECT, "vision.googleapis.com")],
}
# Public names of the client classes that are called in pipeline/ but make no API request.
NOT_API_CALLS = {
    "bucket": "storage.Client.bucket builds a local Bucket object",
    "blob": "storage.Bucket.blob builds a local Blob object",
    "close": "closes a client's transport",
    "Feature": "vision's request type",
}
# Beam's Google I/O, by the name the product calls.
BEAM_IO_NEEDS: dict[str, list[Need]] = {
    # Dataflow's native Pub/Sub source pulls and acknowledges, and reads the subscription.
    "ReadFromPubSub": [
        Need("pubsub.subscriptions.consume", INPUT_SUBSCRIPTION, "pubsub.googleapis.com"),
        Need("pubsub.subscriptions.get", INPUT_SUBSCRIPTION, "pubsub.googleapis.com"),
    ],
    "WriteToPubSub": [Need("pubsub.topics.publish", OUTPUT_TOPICS, "pubsub.googleapis.com")],
    # --sections_file gs://...: docs/deploy.md puts it in the configuration bucket.
    "FileSystems.open": [Need("storage.objects.get", CONFIG_BUCKET, "storage.googleapis.com")],
}
# Batch runs over files (--input_file, --output_path) read and write the operator's own
# files with the operator's credentials; the streaming deployment never calls them.
BATCH_ONLY_IO = {"ReadFromText", "WriteToText"}
# Dataflow itself, for any job (Google's Flex Template guide: Dataflow Worker on the
# project, read/write on the staging bucket, read access to the template image).
DATAFLOW_NEEDS = [
    Need("dataflow.workItems.lease", THE_PROJECT, "dataflow.googleapis.com"),
    Need("dataflow.streamingWorkItems.getWork", THE_PROJECT, "dataflow.googleapis.com"),
    Need(None, THE_PROJECT, "compute.googleapis.com"),
    Need("storage.objects.create", STAGING_BUCKET, "storage.googleapis.com"),
    Need("storage.objects.get", STAGING_BUCKET, "storage.googleapis.com"),
    Need("storage.objects.delete", STAGING_BUCKET, "storage.googleapis.com"),
    Need("storage.objects.list", STAGING_BUCKET, "storage.googleapis.com"),
    Need(
        "artifactregistry.repositories.downloadArtifacts",
        IMAGE_REPOSITORY,
        "artifactregistry.googleapis.com",
    ),
]
# APIs the deploy procedure itself uses (not the job): building the image.
PROCEDURE_APIS = {"cloudbuild.googleapis.com"}

# Functions of pipeline/ that run at deploy time or in local tooling and tests, never on a
# worker or the launcher, unless worker code calls them (the call graph checks).
NOT_ON_WORKERS = {
    "pipeline.provision": "deploy time: `python -m pipeline.provision` (the whole module)",
    "pipeline.replay": "an operator's command: `python -m pipeline.replay` (the whole module)",
    "section_speed.clients.warehouse.Warehouse.ensure_tables": "deploy time, and the local stack",
    "section_speed.clients.warehouse.Warehouse._add_missing_columns": "only ensure_tables calls it",
    "section_speed.clients.warehouse.Warehouse.ensure_views": "only ensure_tables calls it",
    "section_speed.clients.warehouse.Warehouse.existing_insert_ids": "tests",
    "section_speed.clients.warehouse.Warehouse.count": "tests",
    "section_speed.clients.warehouse.Warehouse.query": "tests and the analyst report",
    "section_speed.clients.evidence_store.EvidenceStore.ensure_bucket": "the local stack",
    "section_speed.clients.evidence_store.EvidenceStore.list_names": "tests",
    "section_speed.clients.evidence_store.EvidenceStore.read": "tests",
}

GOOGLE_CLIENT_CLASSES = {
    "bigquery": [bigquery.Client],
    "storage": [storage.Client, storage.Bucket, storage.Blob],
    "vision": [vision.ImageAnnotatorClient],
    "pubsub_v1": [pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient],
}


@functools.cache
def google_api_names() -> frozenset[str]:
    """Public callables of the client classes: the names a Google API call can have."""
    return frozenset(
        name
        for classes in GOOGLE_CLIENT_CLASSES.values()
        for cls in classes
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name, None))
    )


# --- a name-based call graph of pipeline/ -----------------------------------------------------


@dataclass
class Function:
    key: str  # module.Class.function
    module: str
    cls: str | None
    name: str
    self_calls: set[str] = field(default_factory=set)  # self.NAME(...)
    attribute_calls: set[tuple[str | None, str]] = field(default_factory=set)  # (receiver, NAME)
    names: set[str] = field(default_factory=set)  # bare names referenced (calls, callbacks)
    google_calls: set[str] = field(default_factory=set)
    beam_io: set[str] = field(default_factory=set)


@dataclass
class Module:
    name: str
    imports_google_cloud: bool
    imported_names: dict[str, str]  # local name -> module.name or module
    functions: list[Function]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, google_module: bool) -> None:
        self.module = module
        self.google_module = google_module
        self.stack: list[Function] = []
        self.classes: list[str] = []
        self.top = Function(f"{module}.<module>", module, None, "<module>")
        self.functions = [self.top]

    @property
    def current(self) -> Function:
        return self.stack[-1] if self.stack else self.top

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if self.stack:  # a nested function belongs to its enclosing one
            self.generic_visit(node)
            return
        cls = self.classes[-1] if self.classes else None
        qualname = f"{cls}.{node.name}" if cls else node.name
        function = Function(f"{self.module}.{qualname}", self.module, cls, node.name)
        self.functions.append(function)
        self.stack.append(function)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Name(self, node: ast.Name) -> None:
        self.current.names.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        receiver = node.value
        if isinstance(receiver, ast.Name) and receiver.id == "FileSystems":
            self.current.beam_io.add(f"FileSystems.{node.attr}")
        if isinstance(receiver, ast.Attribute) and receiver.attr == "io":  # beam.io.X
            self.current.beam_io.add(node.attr)
        self.generic_visit(node)

    def _invokes(self, node: ast.expr) -> None:
        """An attribute called, or handed on as a callback (an argument)."""
        if not isinstance(node, ast.Attribute):
            return
        receiver = node.value
        dotted = receiver.id if isinstance(receiver, ast.Name) else None
        if dotted == "self":
            self.current.self_calls.add(node.attr)
        else:
            self.current.attribute_calls.add((dotted, node.attr))

    def visit_Call(self, node: ast.Call) -> None:
        self._invokes(node.func)
        for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
            self._invokes(argument)
        if (
            self.google_module
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in google_api_names()
        ):
            self.current.google_calls.add(node.func.attr)
        self.generic_visit(node)


@functools.cache
def product_modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(p for root in PRODUCT for p in root.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        imported: dict[str, str] = {}
        google_cloud = False
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                google_cloud |= node.module.startswith("google.cloud")
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    google_cloud |= alias.name.startswith("google.cloud")
                    imported[alias.asname or alias.name.split(".")[0]] = alias.name
        collector = _Collector(name, google_cloud)
        collector.visit(tree)
        modules[name] = Module(name, google_cloud, imported, collector.functions)
    return modules


def all_functions() -> dict[str, Function]:
    return {f.key: f for module in product_modules().values() for f in module.functions}


@functools.cache
def functions_by_name() -> dict[str, list[Function]]:
    index: dict[str, list[Function]] = {}
    for function in all_functions().values():
        index.setdefault(function.name, []).append(function)
    return index


def callees(function: Function) -> set[str]:
    """Functions `function` may call or hand on (a callback).

    self.X: X of the same class; obj.X: any method X, or function X of an imported module;
    a bare name: that function of this module or imported by name; a class named: its
    special methods (its constructor). DoFn methods run without a caller: they are never
    excluded in the first place.
    """
    module = product_modules()[function.module]
    index = functions_by_name()
    found = set()
    for name in function.self_calls:
        found |= {o.key for o in index.get(name, []) if o.cls and o.cls == function.cls}
    for receiver, name in function.attribute_calls:
        target_module = module.imported_names.get(receiver or "", "")
        for other in index.get(name, []):
            if other.cls and target_module not in product_modules():
                found.add(other.key)
            elif not other.cls and target_module == other.module:
                found.add(other.key)
    for name in function.names:
        target = module.imported_names.get(name, f"{function.module}.{name}")
        for other in index.get(name, []):
            if other.cls is None and target == f"{other.module}.{name}":
                found.add(other.key)
        for functions in index.values():
            for other in functions:
                if (
                    other.cls == name
                    and other.name.startswith("__")
                    and target == f"{other.module}.{name}"
                ):
                    found.add(other.key)
    return found


def clear_caches() -> None:
    for cached in (product_modules, functions_by_name, worker_functions):
        cached.cache_clear()


def excluded(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in NOT_ON_WORKERS)


@functools.cache
def worker_functions() -> frozenset[str]:
    """Every function of pipeline/ that can run on a worker or the template's launcher."""
    functions = all_functions()
    reachable = {key for key in functions if not excluded(key)}
    frontier = set(reachable)
    while frontier:
        added = set()
        for key in frontier:
            added |= callees(functions[key]) - reachable
        reachable |= added
        frontier = added
    return frozenset(reachable)


def worker_calls() -> tuple[set[str], set[str]]:
    """(Google client methods, Beam I/O) called by worker-reachable code."""
    functions = all_functions()
    google, io = set(), set()
    for key in worker_functions():
        google |= functions[key].google_calls
        io |= functions[key].beam_io
    return google, io


# --- the documented grants -------------------------------------------------------------------


def documented_commands() -> list[list[str]]:
    """The docs' command block (the smoke script's dry run), one argv per command."""
    text = DEPLOY_DOC.read_text()
    block = re.search(r"<!-- smoke-commands:start -->\n```sh\n(.*?)```", text, re.S)[1]
    commands = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        captured = re.fullmatch(r"[A-Za-z_]+=\$\((.*)\)", line)
        commands.append(shlex.split(captured[1] if captured else line))
    return commands


def smoke_dry_run(**env: str) -> list[list[str]]:
    result = subprocess.run(
        [str(SMOKE), "my-project", "us-central1", "my-project-section-speed", "--dry-run"],
        capture_output=True, text=True, check=True, env={**os.environ, **env}, cwd=REPO,
    )  # fmt: skip
    commands = []
    for line in result.stdout.splitlines():
        if line.strip() and not line.startswith("#"):
            captured = re.fullmatch(r"[A-Za-z_]+=\$\((.*)\)", line)
            commands.append(shlex.split(captured[1] if captured else line))
    return commands


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@dataclass(frozen=True)
class Grant:
    role: str
    kind: str
    resource: str


def workers_account(commands: list[list[str]]) -> str:
    (launch,) = [
        argv for argv in commands if argv[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    ]
    return flag(launch, "--service-account-email")


def documented_grants(commands: list[list[str]]) -> set[Grant]:
    """The roles granted to the workers' account (the one the launch runs the job as)."""
    member = f"serviceAccount:{workers_account(commands)}"
    grants = set()
    for argv in commands:
        if argv[:2] == ["bq", "add-iam-policy-binding"] and flag(argv, "--member") == member:
            assert "--table" in argv, argv  # bq's other resources are not used here
            table = argv[-1].split(":", 1)[1]  # PROJECT:DATASET.TABLE
            grants.add(Grant(flag(argv, "--role"), TABLE, table))
        elif "add-iam-policy-binding" in argv and flag(argv, "--member") == member:
            position = argv.index("add-iam-policy-binding")
            group, target = argv[position - 1], argv[position + 1]
            kind = {
                "projects": PROJECT,
                "buckets": BUCKET,
                "subscriptions": SUBSCRIPTION,
                "topics": TOPIC,
                "repositories": REPOSITORY,
            }[group]
            grants.add(Grant(flag(argv, "--role"), kind, target.removeprefix("gs://")))
        if argv[1:3] == ["-m", "pipeline.provision"] and "--worker_service_account" in argv:
            grants.add(Grant(provision.WORKER_DATASET_ROLE, DATASET, flag(argv, "--bq_dataset")))
    return grants


def custom_roles(commands: list[list[str]]) -> dict[str, Role]:
    """Roles the procedure creates (`gcloud iam roles create`), by their full name.

    A custom role holds only the permissions listed; like the BigQuery predefined roles,
    it can be granted on a dataset or a table (`bq add-iam-policy-binding`).
    """
    roles = {}
    for argv in commands:
        if argv[:4] == ["gcloud", "iam", "roles", "create"]:
            name = f"projects/{flag(argv, '--project')}/roles/{argv[4]}"
            roles[name] = role(flag(argv, "--permissions").replace(",", " "), DATASET, TABLE)
    return roles


@functools.cache
def role_permissions() -> dict[str, Role]:
    """Google's predefined roles used here and the procedure's custom roles."""
    return {**ROLE_PERMISSIONS, **custom_roles(documented_commands())}


def documented_apis(commands: list[list[str]]) -> set[str]:
    (enable,) = [argv for argv in commands if argv[:3] == ["gcloud", "services", "enable"]]
    return {word for word in enable[3:] if word.endswith(".googleapis.com")}


def launch_resources(commands: list[list[str]]) -> dict[str, list[tuple[str, str]]]:
    """What each resource label means in this deployment, as (kind, name) pairs."""
    (launch,) = [
        argv for argv in commands if argv[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    ]
    parameters = dict(pair.split("=", 1) for pair in flag(launch, "--parameters").split(","))
    staging = flag(launch, "--staging-location").removeprefix("gs://").split("/")[0]
    image_repository = parameters["sdk_container_image"].split("/")[2]
    project = flag(launch, "--project")
    return {
        INPUT_SUBSCRIPTION: [(SUBSCRIPTION, parameters["input_subscription"])],
        OUTPUT_TOPICS: [
            (TOPIC, parameters["output_topic"]),
            (TOPIC, parameters["dead_letter_topic"]),
        ],
        EVIDENCE_BUCKET: [(BUCKET, parameters["bucket"])] if "bucket" in parameters else [],
        # The job writes each table of the schema (the dataset's other tables are not its).
        WAREHOUSE: [(TABLE, f"{parameters['bq_dataset']}.{table.name}") for table in TABLES],
        STAGING_BUCKET: [(BUCKET, staging)],
        CONFIG_BUCKET: [(BUCKET, parameters["sections_file"].removeprefix("gs://").split("/")[0])],
        THE_PROJECT: [(PROJECT, project)],
        IMAGE_REPOSITORY: [(REPOSITORY, image_repository)],
    }


def worker_needs() -> list[Need]:
    google, io = worker_calls()
    needs = list(DATAFLOW_NEEDS)
    for name in google - NOT_API_CALLS.keys():
        needs += METHOD_NEEDS[name]
    for name in io - BATCH_ONLY_IO:
        needs += BEAM_IO_NEEDS[name]
    return needs


def granted(permission: str, kind: str, name: str, grants: set[Grant]) -> list[Grant]:
    return [
        grant
        for grant in grants
        if permission in role_permissions()[grant.role].permissions
        and (
            grant.kind == PROJECT
            or (grant.kind, grant.resource) == (kind, name)
            # a dataset's grant holds for its tables
            or ((grant.kind, kind) == (DATASET, TABLE) and name.startswith(f"{grant.resource}."))
        )
    ]


@pytest.fixture(scope="module")
def deployment() -> tuple[set[Grant], set[str], dict[str, list[tuple[str, str]]]]:
    commands = documented_commands()
    # The evidence bucket is a launch parameter only with the evidence stage (CARS_API).
    with_evidence = smoke_dry_run(CARS_API="https://cars.example.com/cars")
    return documented_grants(commands), documented_apis(commands), launch_resources(with_evidence)


# --- the tests -------------------------------------------------------------------------------


def test_every_google_call_in_the_product_has_its_permission_worked_out():
    unknown = {}
    for module in product_modules().values():
        for function in module.functions:
            for name in function.google_calls - METHOD_NEEDS.keys() - NOT_API_CALLS.keys():
                unknown.setdefault(name, []).append(function.key)
            for name in function.beam_io - BEAM_IO_NEEDS.keys() - BATCH_ONLY_IO:
                unknown.setdefault(name, []).append(function.key)
    assert not unknown, (
        f"Google API calls without a permission in METHOD_NEEDS / BEAM_IO_NEEDS: {unknown}; "
        "add what each needs, then the role to docs/deploy.md and scripts/dataflow_smoke.sh"
    )


def test_the_scan_finds_the_calls_it_must_find():
    """Guards the scanner itself: these calls exist today, on workers or at deploy time."""
    google, io = worker_calls()
    assert {"insert_rows_json", "get_table", "get_blob", "upload_from_string"} <= google
    assert {"batch_annotate_images", "get_subscription"} <= google
    assert {"ReadFromPubSub", "WriteToPubSub"} <= io
    everywhere = {name for f in all_functions().values() for name in f.google_calls}
    assert {"create_dataset", "create_table", "update_dataset"} <= everywhere


def test_only_known_google_client_libraries_are_used():
    known = {f"google.cloud.{name}" for name in GOOGLE_CLIENT_CLASSES}
    for module in product_modules().values():
        for target in module.imported_names.values():
            if target.startswith("google.cloud.") and not target.startswith(
                ("google.cloud.vision_v1.services",)
            ):
                library = ".".join(target.split(".")[:3])
                assert library in known, (
                    f"{module.name} uses {library}: add its client classes to "
                    "GOOGLE_CLIENT_CLASSES and its calls to METHOD_NEEDS"
                )


def test_workers_create_no_dataset_table_or_bucket():
    """No project-level permission at worker start: creation happens at deploy time."""
    google, _ = worker_calls()
    assert not google & {"create_dataset", "create_table", "create_bucket", "update_dataset"}
    functions = all_functions()
    reachable = worker_functions()
    assert "section_speed.clients.warehouse.Warehouse.check_tables" in reachable
    assert "section_speed.clients.warehouse.Warehouse.ensure_tables" not in reachable
    assert not any(key.startswith("pipeline.provision.") for key in reachable)
    # The exclusions are real: each names a function that exists.
    for name in NOT_ON_WORKERS:
        assert name in product_modules() or name in functions, f"{name} no longer exists"


def test_the_documented_roles_grant_every_permission_the_workers_need(deployment):
    grants, _, resources = deployment
    missing = []
    for need in worker_needs():
        if need.permission is None:
            continue
        targets = resources[need.resource]
        assert targets, f"{need}: the launch names no {need.resource}"
        for kind, name in targets:
            if not granted(need.permission, kind, name, grants):
                missing.append(f"{need.permission} on {kind} {name}")
    assert not missing, f"not granted by docs/deploy.md's roles: {missing}"


def test_every_documented_grant_serves_a_need_and_is_grantable_there(deployment):
    grants, _, resources = deployment
    needs = worker_needs()
    for grant in grants:
        assert grant.role in role_permissions(), f"{grant.role}: add its permissions to the table"
        assert grant.kind in role_permissions()[grant.role].grantable_on, grant
        serves = [
            need
            for need in needs
            if need.permission
            and any(
                grant in granted(need.permission, kind, name, {grant})
                for kind, name in resources[need.resource]
            )
        ]
        assert serves, f"{grant.role} on {grant.kind} {grant.resource} serves no call of the code"


def test_the_documented_apis_are_exactly_those_called(deployment):
    _, apis, _ = deployment
    needed = {need.api for need in worker_needs()}
    assert "vision.googleapis.com" in needed  # the plate reader on Dataflow
    assert needed <= apis, f"APIs the code calls but the procedure does not enable: {needed - apis}"
    assert apis <= needed | PROCEDURE_APIS, f"enabled but never called: {apis - needed}"


def test_the_role_table_of_the_doc_names_the_granted_roles(deployment):
    grants, _, _ = deployment
    section = DEPLOY_DOC.read_text().split("## Roles", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    documented = set(re.findall(r"`((?:projects/PROJECT/)?roles/[a-zA-Z.]+)`", table))
    assert documented == {
        re.sub(r"^projects/[^/]+/", "projects/PROJECT/", grant.role) for grant in grants
    }


def test_the_workers_warehouse_role_holds_exactly_what_their_calls_need(deployment):
    """No BigQuery Data Editor: it would also let workers create, update and delete tables."""
    grants, _, resources = deployment
    warehouse_grants = {g for g in grants if g.kind in (DATASET, TABLE)}
    (role_name,) = {g.role for g in warehouse_grants}
    assert role_name in custom_roles(documented_commands()), role_name
    needed = {n.permission for n in worker_needs() if n.resource == WAREHOUSE}
    assert needed == {"bigquery.tables.get", "bigquery.tables.updateData"}
    assert role_permissions()[role_name].permissions == needed
    # Bound on each table the job writes, and only there.
    assert {(g.kind, g.resource) for g in warehouse_grants} == set(resources[WAREHOUSE])


def test_a_warehouse_role_with_more_than_the_calls_need_is_refused(deployment):
    """The check can fail: BigQuery Data Editor on the dataset (what `pipeline.provision
    --worker_service_account` grants) serves the calls but holds more than they need."""
    grants, apis, resources = deployment
    dataset = resources[WAREHOUSE][0][1].split(".")[0]
    editor = Grant("roles/bigquery.dataEditor", DATASET, dataset)
    needed = {n.permission for n in worker_needs() if n.resource == WAREHOUSE}
    tables = resources[WAREHOUSE]
    assert all(granted(p, kind, name, {editor}) for p in needed for kind, name in tables)
    broader = {g for g in grants if g.kind != TABLE} | {editor}
    with pytest.raises(AssertionError):
        test_the_workers_warehouse_role_holds_exactly_what_their_calls_need(
            (broader, apis, resources)
        )


def test_the_scan_fails_on_a_call_without_a_known_permission(tmp_path, monkeypatch):
    """The checks can fail: a worker module that deletes objects is caught."""
    fake = tmp_path / "section_speed"
    (fake / "clients").mkdir(parents=True)
    (fake / "clients" / "purge.py").write_text(
        "from google.cloud import storage\n\n"
        "class Purge:\n"
        "    def process(self, name):\n"
        "        storage.Client().bucket('b').blob(name).delete()\n"
    )
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "PRODUCT", [fake])
    monkeypatch.setattr(this, "REPO", tmp_path)
    clear_caches()
    try:
        with pytest.raises(AssertionError, match="delete"):
            test_every_google_call_in_the_product_has_its_permission_worked_out()
    finally:
        monkeypatch.undo()
        clear_caches()


# What lets its holder change or delete an object (a bucket's configuration or build source).
OBJECT_WRITES = {"storage.objects.create", "storage.objects.delete", "storage.objects.update"}


def test_workers_only_read_the_configuration_and_write_no_other_bucket(deployment):
    """Workers write the staging bucket (Dataflow's files) and create evidence; the bucket
    of the rules they read, and every other bucket (the build's), they cannot change."""
    grants, _, resources = deployment
    ((_, staging),) = resources[STAGING_BUCKET]
    ((_, config),) = resources[CONFIG_BUCKET]
    evidence = {name for _, name in resources[EVIDENCE_BUCKET]}
    assert config != staging and config not in evidence
    writable = {
        grant.resource
        for grant in grants
        if grant.kind == BUCKET and role_permissions()[grant.role].permissions & OBJECT_WRITES
    }
    assert writable == {staging} | evidence, writable
    config_roles = {g.role for g in grants if (g.kind, g.resource) == (BUCKET, config)}
    assert config_roles == {"roles/storage.objectViewer"}
    assert granted("storage.objects.get", BUCKET, config, grants)


def test_a_grant_check_fails_without_the_role(deployment):
    grants, _, resources = deployment
    (evidence,) = resources[EVIDENCE_BUCKET]
    without_creator = {g for g in grants if g.role != "roles/storage.objectCreator"}
    assert granted("storage.objects.create", *evidence, grants)
    assert not granted("storage.objects.create", *evidence, without_creator)


# --- workers read the tables; provision creates them ------------------------------------------


class Field:
    def __init__(self, name: str, mode: str = "NULLABLE") -> None:
        self.name = name
        self.mode = mode


class FoundTable:
    def __init__(
        self,
        columns: list[str],
        table_id: str = "",
        time_partitioning: bigquery.TimePartitioning | None = None,
    ) -> None:
        self.schema = [Field(name) for name in columns]
        self.table_id = table_id
        self.time_partitioning = time_partitioning


class StrictFakeBigQuery:
    """Answers only the calls it is given; any other call fails the test."""

    def __init__(self, tables: dict[str, list[str]], access: list | None = None) -> None:
        self.tables = tables
        self.calls: list[str] = []
        self.created: dict[str, bigquery.Table] = {}
        self.dataset = bigquery.Dataset("p.d")
        self.dataset.access_entries = access or []
        self.dataset_location: str | None = None
        # Day partitions on a column, as ensure_tables makes them; expiry as last updated.
        self.partitioning: dict[str, bigquery.TimePartitioning] = {}

    def get_table(self, table_id: str, retry: object = None, timeout: object = None) -> FoundTable:
        self.calls.append(f"get_table {table_id}")
        if table_id not in self.tables:
            raise api_exceptions.NotFound(table_id)
        view = self.created.get(table_id.rpartition(".")[2])
        if view is not None and view.view_query:  # a view: as it was defined
            return view
        partitioning = self.partitioning.get(table_id) or bigquery.TimePartitioning()
        return FoundTable(self.tables[table_id], table_id, partitioning)

    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool, retry: object) -> None:
        assert exists_ok
        self.calls.append(f"create_dataset {dataset.dataset_id}")
        self.dataset_location = dataset.location

    def create_table(
        self, table: bigquery.Table, exists_ok: bool, retry: object
    ) -> bigquery.Table | FoundTable:
        assert exists_ok
        self.calls.append(f"create_table {table.table_id}")
        table_id = f"p.d.{table.table_id}"
        if table_id in self.tables and table.view_query:  # a view: as it was defined
            return self.created[table.table_id]
        if table_id in self.tables:  # exists: BigQuery's client answers with the table
            return FoundTable(self.tables[table_id], table_id)
        self.created[table.table_id] = table
        self.tables[table_id] = [f.name for f in table.schema]
        self.partitioning[table_id] = table.time_partitioning
        return table

    def update_table(self, table: FoundTable, fields: list[str], retry: object) -> None:
        if fields == ["time_partitioning"]:
            expiration_ms = table.time_partitioning.expiration_ms
            self.calls.append(f"update_table {table.table_id} expiration_ms={expiration_ms}")
            self.partitioning[table.table_id] = table.time_partitioning
            return
        assert fields == ["schema"]
        names = [f.name for f in table.schema]
        added = names[len(self.tables[table.table_id]) :]
        self.calls.append(f"update_table {table.table_id} {added}")
        self.tables[table.table_id] = names

    def get_dataset(self, dataset_id: str, retry: object) -> bigquery.Dataset:
        self.calls.append(f"get_dataset {dataset_id}")
        return self.dataset

    def update_dataset(self, dataset: bigquery.Dataset, fields: list[str], retry: object) -> None:
        self.calls.append(f"update_dataset {fields}")
        self.dataset = dataset

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unexpected BigQuery call: {name}")


def all_columns() -> dict[str, list[str]]:
    return {f"p.d.{t.name}": [c.name for c in t.columns] for t in TABLES}


def test_check_tables_only_reads_and_passes_when_every_table_is_there():
    client = StrictFakeBigQuery(all_columns())
    Warehouse("p", "d", client=client).check_tables()
    assert client.calls == [f"get_table p.d.{t.name}" for t in TABLES]


def test_check_tables_names_the_missing_table_and_the_provision_command():
    tables = all_columns()
    del tables["p.d.fines"]
    client = StrictFakeBigQuery(tables)
    with pytest.raises(TablesMissing) as error:
        Warehouse("p", "d", client=client).check_tables()
    message = str(error.value)
    assert "p.d.fines does not exist" in message
    assert "python -m pipeline.provision --project p --bq_dataset d" in message
    assert not any(call.startswith("create") for call in client.calls)


def test_check_tables_names_a_missing_column():
    tables = all_columns()
    tables["p.d.vehicle_speeds"] = tables["p.d.vehicle_speeds"][:-1]
    dropped = all_columns()["p.d.vehicle_speeds"][-1]
    with pytest.raises(TablesMissing, match=rf"vehicle_speeds lacks columns \['{dropped}'\]"):
        Warehouse("p", "d", client=StrictFakeBigQuery(tables)).check_tables()


def test_provision_adds_a_nullable_column_an_earlier_version_lacked_and_keeps_the_rest():
    tables = all_columns()
    tables["p.d.vehicle_speeds"].remove("withdrawn_reason")
    client = StrictFakeBigQuery(tables)
    warehouse = Warehouse("p", "d", client=client)
    provision.provision(warehouse)
    assert [c for c in client.calls if c.startswith("update_table") and "[" in c] == [
        "update_table p.d.vehicle_speeds ['withdrawn_reason']"
    ]
    provisioned = {
        f"p.d.{t.name}": {c.name for c in t.columns} for t in provision.PROVISIONED_TABLES
    } | {f"p.d.{view.name}": set() for view in VIEWS}  # the views, beside the tables
    assert {t: set(c) for t, c in client.tables.items()} == provisioned
    # and check_tables, which provision runs last, passed


def test_provision_refuses_to_add_a_required_column():
    tables = all_columns()
    tables["p.d.vehicle_speeds"].remove("revision")
    client = StrictFakeBigQuery(tables)
    with pytest.raises(TablesMissing, match=r"lacks required columns \['revision'\]"):
        provision.provision(Warehouse("p", "d", client=client))
    assert not any(c.startswith("update_table") for c in client.calls)


def test_provision_creates_dataset_and_tables_and_grants_the_workers_once():
    client = StrictFakeBigQuery({})
    warehouse = Warehouse("p", "d", client=client)
    provision.provision(warehouse, location="us-central1", worker_service_account="sa@p.iam")
    assert client.dataset_location == "us-central1"
    assert set(client.created) == {t.name for t in provision.PROVISIONED_TABLES} | {
        view.name for view in VIEWS
    }
    for table in provision.PROVISIONED_TABLES:
        created = client.created[table.name]
        assert created.time_partitioning.field == table.partition_column
        assert created.clustering_fields == list(table.cluster_columns)
    (entry,) = client.dataset.access_entries
    assert (entry.role, entry.entity_type, entry.entity_id) == (
        "roles/bigquery.dataEditor", "userByEmail", "sa@p.iam",
    )  # fmt: skip
    # Run again: nothing new, the grant is not repeated (BigQuery lists it as WRITER).
    legacy = bigquery.AccessEntry("WRITER", "userByEmail", "sa@p.iam")
    client.dataset.access_entries = [legacy]
    client.calls.clear()
    provision.provision(warehouse, worker_service_account="sa@p.iam")
    assert not any(call.startswith("update_dataset") for call in client.calls)


def test_provision_command_line(monkeypatch):
    client = StrictFakeBigQuery({})
    monkeypatch.setattr(provision, "Warehouse", lambda p, d: Warehouse(p, d, client=client))
    assert provision.main(["--project", "p", "--bq_dataset", "d"]) == 0
    assert "create_dataset d" in client.calls
    assert not any(call.startswith("update_dataset") for call in client.calls)
    with pytest.raises(SystemExit):
        provision.main(["--project", "p"])  # the dataset is required
