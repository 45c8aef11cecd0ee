"""The cars API's local form and its client, over real HTTP(S) on loopback.

Both contracts: the course's (`GET {cars_api}` -> `{"image_url"}` -> the photo, possibly
on another https host) and this project's (`{vehicle_id}` URL template, or a bare origin).
A "foreign" photo host is a second server on loopback, reached over https under a made-up
name through an injected resolver, with a certificate for that name made here.
"""

import datetime
import io
import ipaddress
import warnings
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.responses import RedirectResponse
from PIL import Image
from urllib3.exceptions import InsecureRequestWarning

from generator.cars_api import MAX_RESPONSE_BYTES, CarsRegistry, create_app, serving
from local_stack.processes import free_port
from section_speed.clients.cars_api import (
    CarsApiClient,
    EvidenceRejected,
    EvidenceUnavailable,
    ForbiddenPhotoAddress,
    Photo,
    invalid_cars_api,
    is_public_address,
    parse_photo_hosts,
)
from section_speed.clients.images import InvalidImage, check_image

REGISTERED = {"veh-1", "veh-2", "bus.7"}
PHOTO_HOST = "photos.test"  # the foreign photo host's name (resolved by the tests only)


def tiny_jpeg(vehicle_id: str) -> bytes:
    """A small valid photo per id: these tests are about HTTP, not about rendering."""
    shade = sum(vehicle_id.encode()) % 256
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (shade, 80, 160)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def api():
    app = create_app(CarsRegistry(frozenset(REGISTERED)), render=tiny_jpeg, seed=3)
    with serving(app) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_api(api):
    requests.delete(f"{api}/_admin/faults", timeout=5)
    requests.delete(f"{api}/_admin/requests", timeout=5)


def fault(api: str, **spec) -> None:
    requests.post(f"{api}/_admin/faults", json=spec, timeout=5).raise_for_status()


def request_log(api: str, verify: bool = True) -> list[tuple[str, int]]:
    with warnings.catch_warnings():  # verify=False: the log of the https photo host
        warnings.simplefilter("ignore", InsecureRequestWarning)
        answer = requests.get(f"{api}/_admin/requests", timeout=5, verify=verify)
    return [(r["path"], r["status"]) for r in answer.json()]


def fast_client(api: str, attempts: int = 3, **kwargs) -> CarsApiClient:
    return CarsApiClient(api, attempts=attempts, backoff_s=0.01, timeout_s=(1.0, 2.0), **kwargs)


# --- the local cars API ------------------------------------------------------------------


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


def test_random_car_answers_only_image_url_like_the_course_api(api):
    answers = [requests.get(f"{api}/cars", timeout=5).json() for _ in range(20)]
    assert all(set(answer) == {"image_url"} for answer in answers)
    ids = {answer["image_url"].removeprefix(f"{api}/cars/").split("/")[0] for answer in answers}
    assert ids <= REGISTERED
    assert len(ids) > 1


# --- this project's forms ----------------------------------------------------------------


def test_template_form_fetches_the_vehicles_photo_and_its_url(api):
    client = fast_client(f"{api}/cars/{{vehicle_id}}")
    assert not client.fixed_url
    assert client.fetch("bus.7") == Photo(f"{api}/cars/bus.7/image.jpg", tiny_jpeg("bus.7"))
    assert request_log(api) == [("/cars/bus.7", 200), ("/cars/bus.7/image.jpg", 200)]


def test_template_quotes_the_vehicle_id_and_may_put_it_in_the_query():
    client = CarsApiClient("https://registry.example/v2/car?id={vehicle_id}&size=large")
    assert client.car_url("a/b c") == "https://registry.example/v2/car?id=a%2Fb%20c&size=large"


def test_bare_origin_keeps_meaning_cars_slash_vehicle_id(api):
    client = fast_client(api)
    assert client.car_url("veh-1") == f"{api}/cars/veh-1"
    assert client.photo("veh-1") == tiny_jpeg("veh-1")
    assert request_log(api) == [("/cars/veh-1", 200), ("/cars/veh-1/image.jpg", 200)]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://{vehicle_id}.cars.example/", "never in its host"),
        ("http://cars.example/cars/{vehicle}", "placeholder other than {vehicle_id}"),
        ("ftp://cars.example/cars", "http(s) URL"),
    ],
)
def test_malformed_cars_api_urls_are_refused(url, reason):
    assert reason in invalid_cars_api(url)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        CarsApiClient(url)


# --- a fixed URL (the course's form), end to end against the local API -------------------


def test_fixed_url_gets_the_api_url_then_the_photo_it_names(api):
    client = fast_client(f"{api}/cars")
    assert client.fixed_url
    photo = client.fetch("aZ3k9Q")  # the course's API ignores the vehicle: a random car
    vehicle = photo.url.removeprefix(f"{api}/cars/").removesuffix("/image.jpg")
    assert vehicle in REGISTERED
    assert photo.data == tiny_jpeg(vehicle)
    assert request_log(api) == [("/cars", 200), (f"/cars/{vehicle}/image.jpg", 200)]


def test_fixed_url_probe_needs_an_image_url(api):
    assert fast_client(f"{api}/cars").probe().startswith("answered with image_url http://")
    with pytest.raises(EvidenceRejected, match="answered 404"):
        fast_client(f"{api}/_admin").probe()  # no such route: not a cars API


def test_template_probe_takes_an_unknown_probe_vehicle_as_an_answer(api):
    assert "404" in fast_client(f"{api}/cars/{{vehicle_id}}").probe()
    assert request_log(api) == [("/cars/startup-probe", 404)]
    assert "image_url" in fast_client(f"{api}/cars/{{vehicle_id}}").probe("veh-2")


# --- retries, limits, bodies -------------------------------------------------------------


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
    with pytest.raises(EvidenceRejected, match="404") as raised:
        fast_client(api).photo("veh-404")
    assert raised.value.status == 404
    assert request_log(api) == [("/cars/veh-404", 404)]


def test_connection_refused_is_unavailable():
    client = fast_client(f"http://127.0.0.1:{free_port()}", attempts=2)
    with pytest.raises(EvidenceUnavailable, match=r"unreachable|kept failing"):
        client.photo("veh-1")
    with pytest.raises(EvidenceUnavailable):
        client.probe()


def test_non_image_body_is_rejected_with_a_reason(api):
    fault(api, status=200, times=1, path_prefix="/cars/veh-1/image.jpg", body="<html>oops</html>")
    body = fast_client(api).photo("veh-1")
    with pytest.raises(InvalidImage, match="not a decodable image"):
        check_image(body)


def test_photo_over_the_size_limit_is_not_read(api):
    client = CarsApiClient(api, attempts=1, max_image_bytes=100)
    with pytest.raises(EvidenceRejected, match="100-byte limit"):
        client.photo("veh-1")


# --- photo hosts: the API's own, allowed https hosts, never private addresses ------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for PHOTO_HOST: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PHOTO_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PHOTO_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def photo_host(certificate):
    """A second server, over https on loopback, holding the photos: yields its port."""
    app = create_app(CarsRegistry(frozenset(REGISTERED)), render=tiny_jpeg)
    with serving(app, tls=certificate) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture
def photo_log(photo_host, certificate):
    """The photo host's request log, emptied first."""
    base = f"https://127.0.0.1:{photo_host}"
    # The certificate names PHOTO_HOST, not 127.0.0.1: the admin calls skip verification.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        requests.delete(f"{base}/_admin/requests", timeout=5, verify=False)
    return lambda: request_log(base, verify=False)


@pytest.fixture(scope="module")
def api_pointing_elsewhere():
    """A cars API in the course's form whose image_url is whatever the test queued."""
    app = create_app(render=tiny_jpeg)
    answers: list[str] = []

    @app.get("/course-api", include_in_schema=False)
    def course_api() -> dict[str, str]:
        return {"image_url": answers[-1]}

    @app.get("/moved", include_in_schema=False)
    def moved() -> RedirectResponse:
        return RedirectResponse(answers[-1], status_code=302)

    with serving(app) as url:
        yield url, answers.append


def loopback_as(name: str):
    """A resolver that sends `name` to loopback (the test's photo host) and nothing else."""

    def resolve(host: str, port: int) -> list[str]:
        assert host == name, host
        return ["127.0.0.1"]

    return resolve


def only_loopback(address) -> bool:
    return address == ipaddress.ip_address("127.0.0.1")


def test_photo_on_an_allowed_https_host_is_fetched(
    api_pointing_elsewhere, photo_host, photo_log, certificate
):
    api, answer = api_pointing_elsewhere
    url = f"https://{PHOTO_HOST}:{photo_host}/cars/veh-2/image.jpg"
    answer(url)
    client = fast_client(
        f"{api}/course-api",
        photo_hosts=f"storage.googleapis.com,{PHOTO_HOST.upper()}",
        resolve=loopback_as(PHOTO_HOST),
        address_allowed=only_loopback,  # stands in for "public": the test has loopback only
        ca_bundle=str(certificate[0]),
    )
    assert client.fetch("veh-2") == Photo(url, tiny_jpeg("veh-2"))
    assert photo_log() == [("/cars/veh-2/image.jpg", 200)]


def test_photo_on_a_host_not_allowed_is_refused_unfetched(
    api_pointing_elsewhere, photo_host, photo_log, certificate
):
    api, answer = api_pointing_elsewhere
    answer(f"https://{PHOTO_HOST}:{photo_host}/cars/veh-2/image.jpg")
    client = fast_client(
        f"{api}/course-api",  # default --photo_hosts: storage.googleapis.com only
        resolve=loopback_as(PHOTO_HOST),
        address_allowed=only_loopback,
        ca_bundle=str(certificate[0]),
    )
    with pytest.raises(
        EvidenceRejected,
        match=r"nor on an allowed photo host \(--photo_hosts storage.googleapis.com\)",
    ):
        client.fetch("veh-2")
    assert photo_log() == []


def test_photo_on_another_host_over_plain_http_is_refused_even_when_allowed(
    api_pointing_elsewhere, photo_log
):
    api, answer = api_pointing_elsewhere
    answer(f"http://{PHOTO_HOST}/cars/veh-2/image.jpg")
    client = fast_client(
        f"{api}/course-api",
        photo_hosts=PHOTO_HOST,
        resolve=loopback_as(PHOTO_HOST),
        address_allowed=only_loopback,
    )
    with pytest.raises(EvidenceRejected, match="not https"):
        client.fetch("veh-2")
    assert photo_log() == []


def test_allowed_host_on_loopback_is_refused_with_the_real_resolver_and_check(
    api_pointing_elsewhere, photo_host, photo_log, certificate
):
    api, answer = api_pointing_elsewhere
    answer(f"https://localhost:{photo_host}/cars/veh-2/image.jpg")
    client = fast_client(
        f"{api}/course-api", photo_hosts="localhost", ca_bundle=str(certificate[0])
    )
    with pytest.raises(ForbiddenPhotoAddress, match=r"localhost resolves to .* not a public"):
        client.fetch("veh-2")
    assert photo_log() == []  # refused before connecting, not after


@pytest.mark.parametrize(
    "addresses",
    [["169.254.169.254"], ["10.0.0.8"], ["93.184.215.14", "192.168.1.1"], ["::ffff:127.0.0.1"]],
)
def test_a_name_resolving_to_any_private_address_is_refused(api_pointing_elsewhere, addresses):
    api, answer = api_pointing_elsewhere
    answer(f"https://{PHOTO_HOST}/photo.jpg")
    client = fast_client(
        f"{api}/course-api", photo_hosts=PHOTO_HOST, resolve=lambda host, port: addresses
    )
    with pytest.raises(ForbiddenPhotoAddress, match="not a public address"):
        client.fetch("veh-1")


def test_redirects_are_not_followed(api_pointing_elsewhere):
    api, answer = api_pointing_elsewhere
    answer("http://169.254.169.254/latest/meta-data")
    with pytest.raises(EvidenceRejected, match="redirects are not followed") as raised:
        fast_client(f"{api}/moved").fetch("veh-1")
    assert raised.value.status == 302


def test_photo_url_with_credentials_or_another_scheme_is_refused(api_pointing_elsewhere):
    api, answer = api_pointing_elsewhere
    client = fast_client(f"{api}/course-api", photo_hosts=PHOTO_HOST)
    for url, reason in [
        (f"https://user:secret@{PHOTO_HOST}/p.jpg", "carries credentials"),
        ("file:///etc/passwd", "not an http"),
    ]:
        answer(url)
        with pytest.raises(EvidenceRejected, match=reason):
            client.fetch("veh-1")


def test_photo_on_the_apis_own_origin_needs_no_allow_list(api):
    client = fast_client(f"{api}/cars", photo_hosts="")
    assert client.photo_hosts == frozenset()
    assert client.fetch("veh-1").url.startswith(f"{api}/cars/")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_public_address_check(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_photo_hosts_are_parsed_and_normalised():
    assert parse_photo_hosts(" Storage.GoogleAPIs.com., cdn.example ,") == {
        "storage.googleapis.com",
        "cdn.example",
    }
    assert parse_photo_hosts("") == frozenset()
    assert parse_photo_hosts(None) == frozenset()
