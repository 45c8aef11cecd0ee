"""The desk's other services: photos from the evidence bucket, messages to Pub/Sub.

Each sits behind a small interface and is made by a factory (`Services`), so the command
line passes the real clients and tests pass the emulators'.
"""

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from google.api_core import exceptions as api_exceptions

from section_speed.domain.verification import HEX32

if TYPE_CHECKING:
    from desk.store import Fine
    from section_speed.clients.warehouse import Warehouse

# gs://BUCKET/fines/RADAR/YYYY-MM-DD/FINE_ID.jpg, as section_speed/domain/evidence.py names it.
_PHOTO_OBJECT = re.compile(
    rf"fines/[A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}/[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}/(?P<fine>{HEX32})\.jpg"
)
PUBLISH_TIMEOUT_S = 30.0


def photo_matches_record(fine: "Fine", data: bytes) -> bool:
    """Whether these bytes are the photo the record vouches for (its image_sha256).

    The notice carries that digest as the evidence: an officer must never confirm a plate
    against other bytes (a replaced object, a wrong copy).
    """
    expected = fine.image_sha256
    return isinstance(expected, str) and hashlib.sha256(data).hexdigest() == expected


def stored_photo(fine: "Fine", bucket: str, photos: "PhotoSource") -> bytes | None:
    """The fine's photo as stored in the evidence bucket; None when it has none there."""
    name = photo_object_name(fine, bucket)
    return photos.read(name) if name is not None else None


def photo_object_name(fine: "Fine", bucket: str) -> str | None:
    """The object to serve for a fine: its image_url's, when that is this fine's photo in
    the configured evidence bucket (gs://BUCKET/fines/RADAR/DAY/FINE_ID.jpg); else None.

    Nothing from the request takes part: the URL is the fine row's, and it must name the
    fine's own id, so a row pointing elsewhere serves nothing.
    """
    url = fine.image_url
    prefix = f"gs://{bucket}/"
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    name = url.removeprefix(prefix)
    match = _PHOTO_OBJECT.fullmatch(name)
    if match is None or ".." in name.split("/") or match["fine"] != fine.fine_id:
        return None
    return name


class PhotoSource(Protocol):
    def read(self, object_name: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""
        ...


class TopicPublisher(Protocol):
    def publish(self, record: Mapping[str, Any], attributes: Mapping[str, str]) -> None:
        """Publish one JSON message with these attributes; return once accepted."""
        ...

    def close(self) -> None: ...


class StoragePhotoSource:
    """Photos from the evidence bucket with the pipeline's store client (google-cloud-storage;
    the emulator through STORAGE_EMULATOR_HOST)."""

    def __init__(self, bucket: str, project: str | None = None) -> None:
        from section_speed.clients.evidence_store import EvidenceStore

        self._store = EvidenceStore(bucket, project)

    def read(self, object_name: str) -> bytes | None:
        try:
            return self._store.read(object_name)
        except api_exceptions.NotFound:
            return None


class PubSubTopicPublisher:
    """Messages to a Pub/Sub topic (google-cloud-pubsub finds the emulator through
    PUBSUB_EMULATOR_HOST by itself)."""

    def __init__(self, topic_path: str) -> None:
        from google.cloud import pubsub_v1

        self.topic_path = topic_path
        self._publisher = pubsub_v1.PublisherClient()

    def publish(self, record: Mapping[str, Any], attributes: Mapping[str, str]) -> None:
        data = json.dumps(dict(record), sort_keys=True, ensure_ascii=False).encode("utf-8")
        self._publisher.publish(self.topic_path, data, **attributes).result(
            timeout=PUBLISH_TIMEOUT_S
        )

    def close(self) -> None:
        self._publisher.stop()


@dataclass(frozen=True)
class Services:
    """Factories of the desk's clients, called when the app starts (its lifespan)."""

    photos: Callable[[], PhotoSource]
    notices: Callable[[], TopicPublisher]
    # The outbox's BigQuery export (fine_reviews, notices); None: no export.
    warehouse: Callable[[], "Warehouse | None"]


def topic_path(project: str, topic: str) -> str:
    """A short topic name in `project`, or a full projects/P/topics/T path as given."""
    return topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"


def subscription_path(project: str, name: str) -> str:
    if name.startswith("projects/"):
        return name
    return f"projects/{project}/subscriptions/{name}"


def cloud_services(project: str, dataset: str, bucket: str, notices_topic: str) -> Services:
    """The real clients: Cloud Storage, Pub/Sub and BigQuery (or their emulators)."""

    def warehouse() -> "Warehouse | None":
        if not dataset:
            return None
        from section_speed.clients.warehouse import Warehouse
        from section_speed.domain.verification import FINE_REVIEWS, NOTICES

        made = Warehouse(project, dataset)
        made.check_tables((FINE_REVIEWS, NOTICES))
        return made

    return Services(
        photos=lambda: StoragePhotoSource(bucket, project),
        notices=lambda: PubSubTopicPublisher(topic_path(project, notices_topic)),
        warehouse=warehouse,
    )
