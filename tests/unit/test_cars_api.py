"""The cars API's local form and its client, over real HTTP on loopback."""

import io

import pytest
import requests
from PIL import Image

from generator.cars_api import MAX_RESPONSE_BYTES, CarsRegistry, create_app, serving
from local_stack.services import free_port
from pipeline.clients.cars_api import CarsApiClient, EvidenceRejected, EvidenceUnavailable
from pipeline.clients.images import InvalidImage, check_image


def tiny_jpeg(vehicle_id: str) -> bytes:
    """A small valid photo per id: these tests are about HTTP, not about rendering."""
    shade = sum(vehicle_id.encode()) % 256
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (shade, 80, 160)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def api():
    app = create_app(CarsRegistry(frozenset({"veh-1", "veh-2", "bus.7"})), render=tiny_jpeg, seed=3)
    with serving(app) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_api(api):
    requests.delete(f"{api}/_admin/faults", timeout=5)
    requests.delete(f"{api}/_admin/requests", timeout=5)


def fault(api: str, **spec) -> None:
    requests.post(f"{api}/_admin/faults", json=spec, timeout=5).raise_for_status()


def request_log(api: str) -> list[tuple[str, int]]:
    return [
        (r["path"], r["status"]) for r in requests.get(f"{api}/_admin/requests", timeout=5).json()
    ]


def fast_client(api: str, attempts: int = 3) -> CarsApiClient:
    return CarsApiClient(api, attempts=attempts, backoff_s=0.01, timeout_s=(1.0, 2.0))


def test_car_json_points_at_its_photo_on_the_same_host(api):
    car = requests.get(f"{api}/cars/veh-1", timeout=5).json()
    assert car == {"vehicle_id": "veh-1", "image_url": f"{api}/cars/veh-1/image.jpg"}
    photo = requests.get(car["image_url"], timeout=5)
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.content == tiny_jpeg("veh-1")
    assert len(photo.content) <= MAX_RESPONSE_BYTES


def test_unknown_or_malformed_ids_get_404_json(api):
    for path in ("/cars/veh-404", "/cars/veh-404/image.jpg", "/cars/..%2Fetc"):
        response = requests.get(f"{api}{path}", timeout=5)
        assert response.status_code == 404, path
        assert "unknown vehicle" in response.json()["error"]


def test_random_car_is_a_registered_one(api):
    ids = {requests.get(f"{api}/cars", timeout=5).json()["vehicle_id"] for _ in range(20)}
    assert ids <= {"veh-1", "veh-2", "bus.7"}
    assert len(ids) > 1


def test_client_fetches_the_photo(api):
    client = fast_client(api)
    assert client.photo("bus.7") == tiny_jpeg("bus.7")
    assert request_log(api) == [("/cars/bus.7", 200), ("/cars/bus.7/image.jpg", 200)]


def test_two_500s_then_200_completes(api):
    fault(api, status=500, times=2)
    assert fast_client(api).photo("veh-2") == tiny_jpeg("veh-2")
    assert request_log(api) == [
        ("/cars/veh-2", 500),
        ("/cars/veh-2", 500),
        ("/cars/veh-2", 200),
        ("/cars/veh-2/image.jpg", 200),
    ]


def test_always_500_is_unavailable_after_bounded_attempts(api):
    fault(api, status=503, times=100)
    with pytest.raises(EvidenceUnavailable, match=r"kept failing|503"):
        fast_client(api, attempts=3).photo("veh-1")
    assert [status for _, status in request_log(api)] == [503, 503, 503]


def test_unknown_vehicle_is_rejected_without_retry(api):
    with pytest.raises(EvidenceRejected, match="404"):
        fast_client(api).photo("veh-404")
    assert request_log(api) == [("/cars/veh-404", 404)]


def test_connection_refused_is_unavailable():
    client = fast_client(f"http://127.0.0.1:{free_port()}", attempts=2)
    with pytest.raises(EvidenceUnavailable, match=r"unreachable|kept failing"):
        client.photo("veh-1")


def test_non_image_body_is_rejected_with_a_reason(api):
    fault(api, status=200, times=1, path_prefix="/cars/veh-1/image.jpg", body="<html>oops</html>")
    body = fast_client(api).photo("veh-1")
    with pytest.raises(InvalidImage, match="not a decodable image"):
        check_image(body)


def test_photo_over_the_size_limit_is_not_read(api):
    client = CarsApiClient(api, attempts=1, max_image_bytes=100)
    with pytest.raises(EvidenceRejected, match="100-byte limit"):
        client.photo("veh-1")


def test_client_follows_only_its_own_host():
    foreign = create_app(render=tiny_jpeg)

    @foreign.get("/evil/cars/{vehicle_id}", include_in_schema=False)
    def redirecting(vehicle_id: str) -> dict[str, str]:
        return {"vehicle_id": vehicle_id, "image_url": "http://169.254.169.254/latest/meta-data"}

    with serving(foreign) as url:
        client = fast_client(f"{url}/evil")
        with pytest.raises(EvidenceRejected, match="not on the cars API's host"):
            client.photo("veh-1")
