"""The cars API, local form: the city's vehicle-registry camera archive (FastAPI).

    GET /cars/{vehicle_id}            {"vehicle_id", "image_url"}; 404 for an unknown id
    GET /cars/{vehicle_id}/image.jpg  the vehicle's photo (JPEG, plate rendered on it)
    GET /cars                         {"image_url"} of a random car, the course's contract

The pipeline's `--cars_api` is `http://HOST:PORT/cars/{vehicle_id}` for this project's
form, or `http://HOST:PORT/cars` for the course's (section_speed.clients.cars_api).

Photos are rendered by generator.car_images, deterministic per vehicle_id, so tests and
the generator know each photo's true plate (section_speed.domain.plate_formats.plate_for_vehicle).

Tests and benchmarks need a service that misbehaves on cue; the `/_admin` routes exist
only on this local form: `POST /_admin/faults` queues failures (status codes or a non-image
body) and `GET /_admin/requests` returns the request log, so a test can assert which
vehicles were fetched.

    python -m generator.cars_api --port 8085 [--registry ids.json]
"""

import argparse
import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from section_speed.domain.events import is_valid_id

MAX_RESPONSE_BYTES = 1024 * 1024  # every response is bounded: photos are ~30-80 KB
REQUEST_LOG_SIZE = 10_000

Renderer = Callable[[str], bytes]


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int


class Fault(BaseModel):
    """`times` requests (matching `path_prefix`) get `status`, or a non-image body if 200."""

    status: int = Field(500, ge=200, le=599)
    times: int = Field(1, ge=1, le=10_000)
    path_prefix: str = "/cars"
    body: str = "injected fault"


class CarsRegistry:
    """Which vehicles the archive knows: every well-formed id, or those of a registry file."""

    def __init__(self, known_ids: frozenset[str] | None = None) -> None:
        self.known_ids = known_ids

    def knows(self, vehicle_id: str) -> bool:
        if not is_valid_id(vehicle_id):
            return False
        return self.known_ids is None or vehicle_id in self.known_ids

    def random_id(self, rng: random.Random) -> str:
        if self.known_ids:
            return rng.choice(sorted(self.known_ids))
        return f"veh-{rng.getrandbits(40):010x}"


class _FaultQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    remaining = fault.times - 1
                    if remaining:
                        self._faults[self._faults.index(fault)] = fault.model_copy(
                            update={"times": remaining}
                        )
                    else:
                        self._faults.remove(fault)
                    return fault
        return None


def _default_renderer() -> Renderer:
    from generator.car_images import render_car_photo  # Pillow and fonts only when serving

    return render_car_photo


def create_app(
    registry: CarsRegistry | None = None,
    render: Renderer | None = None,
    seed: int | None = None,
) -> FastAPI:
    registry = registry or CarsRegistry()
    render = render or _default_renderer()
    rng = random.Random(seed)
    faults = _FaultQueue()
    log: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
    app = FastAPI(title="Cars API (local form)", docs_url=None, redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def json_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # One error shape for every failure, routed or not: {"error": "..."}.
        message = str(error.detail)
        if error.status_code == 404 and request.url.path.startswith("/cars/"):
            message = "unknown vehicle"
        return JSONResponse({"error": message}, status_code=error.status_code)

    @app.middleware("http")
    async def inject_faults_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        fault = None if path.startswith("/_admin") else faults.take(path)
        if fault is None:
            response = await call_next(request)
        elif fault.status == 200:  # a body that is not what the client asked for
            response = Response(fault.body, media_type="image/jpeg")
        else:
            response = JSONResponse({"error": fault.body}, status_code=fault.status)
        if not path.startswith("/_admin"):
            log.append(LoggedRequest(request.method, path, response.status_code))
        return response

    def car(vehicle_id: str, request: Request) -> dict[str, str]:
        return {
            "vehicle_id": vehicle_id,
            "image_url": str(request.url_for("car_image", vehicle_id=vehicle_id)),
        }

    @app.get("/cars")
    def random_car(request: Request) -> dict[str, str]:
        # The course's API answered only this key; which car it is shows in the photo.
        return {"image_url": car(registry.random_id(rng), request)["image_url"]}

    @app.get("/cars/{vehicle_id}", response_model=None)
    def car_by_id(vehicle_id: str, request: Request) -> dict[str, str] | JSONResponse:
        if not registry.knows(vehicle_id):
            return _unknown(vehicle_id)
        return car(vehicle_id, request)

    @app.get("/cars/{vehicle_id}/image.jpg", name="car_image", response_model=None)
    def car_image(vehicle_id: str) -> Response:
        if not registry.knows(vehicle_id):
            return _unknown(vehicle_id)
        photo = render(vehicle_id)
        if len(photo) > MAX_RESPONSE_BYTES:
            return JSONResponse({"error": "photo over the size bound"}, status_code=500)
        return Response(photo, media_type="image/jpeg")

    @app.post("/_admin/faults")
    def add_fault(fault: Fault) -> dict[str, str]:
        faults.add(fault)
        return {"status": "queued"}

    @app.delete("/_admin/faults")
    def clear_faults() -> dict[str, str]:
        faults.clear()
        return {"status": "cleared"}

    @app.get("/_admin/requests")
    def requests_log() -> list[dict[str, object]]:
        return [asdict(entry) for entry in log]

    @app.delete("/_admin/requests")
    def clear_requests_log() -> dict[str, str]:
        log.clear()
        return {"status": "cleared"}

    return app


def _unknown(vehicle_id: str) -> JSONResponse:
    return JSONResponse({"error": f"unknown vehicle {vehicle_id[:128]!r}"}, status_code=404)


@contextmanager
def serving(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[str]:
    """Run `app` on uvicorn in a thread (tests, benchmarks); yields its base URL.

    `tls` = (certificate file, key file) serves https instead of http.
    """
    import uvicorn

    with socket.socket() as probe:  # a free port, unless one is asked for
        probe.bind((host, port))
        port = probe.getsockname()[1]
    certfile, keyfile = tls or (None, None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cars-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the cars API did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--registry", type=Path, help="JSON list of known vehicle ids")
    parser.add_argument("--seed", type=int, help="seed of GET /cars's random choice")
    args = parser.parse_args(argv)
    known = frozenset(json.loads(args.registry.read_text())) if args.registry else None
    app = create_app(CarsRegistry(known), seed=args.seed)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
