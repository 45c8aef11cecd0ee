"""EvidenceServices: the clients the evidence steps call, one of each per worker process."""

import functools
from dataclasses import dataclass

from section_speed.clients.cars_api import CarsApiClient
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.plate_readers import PlateReader, plate_reader_pool
from transforms.worker_clients import ClientHandler


@dataclass(frozen=True)
class EvidenceServices:
    """Handlers of the evidence clients, one client each per worker process.

    Their factories are picklable: the graph passes partials of the real clients, tests
    pass fakes. The three steps that use the evidence store share its one client.
    `evidence_store=None`: no bucket, no copy; the fine keeps the cars API's photo URL.
    """

    cars_api: ClientHandler[CarsApiClient]
    plate_reader: ClientHandler[PlateReader]
    evidence_store: ClientHandler[EvidenceStore] | None = None


def evidence_services(
    *,
    cars_api: str,
    plate_reader: str,
    min_confidence: float,
    bucket: str | None,
    reader_threads: int = 1,
    project: str,
    photo_hosts: str,
    fetch_attempts: int = 6,  # 0.5+1+2+4+8 s of backoff: rides out a ~15 s outage
    fetch_backoff_s: float = 0.5,
) -> EvidenceServices:
    """The real clients, as the pipeline's options name them."""
    return EvidenceServices(
        cars_api=ClientHandler(
            functools.partial(
                CarsApiClient,
                cars_api,
                photo_hosts=photo_hosts,
                attempts=fetch_attempts,
                backoff_s=fetch_backoff_s,
            )
        ),
        plate_reader=ClientHandler(
            functools.partial(plate_reader_pool, plate_reader, min_confidence, reader_threads)
        ),
        evidence_store=(
            ClientHandler(functools.partial(EvidenceStore, bucket, project)) if bucket else None
        ),
    )
