"""Client of the cars API (the vehicle-registry photo archive): vehicle id -> photo.

`--cars_api` takes one of three forms:

- this project's URL template, with `{vehicle_id}` in its path or query
  (`http://127.0.0.1:8085/cars/{vehicle_id}`): GET it with the quoted id;
- a bare origin (`http://127.0.0.1:8085`, no path): read as `{origin}/cars/{vehicle_id}`,
  the path of the local cars API (generator/cars_api.py);
- any other URL is a fixed URL (no `{vehicle_id}`): `GET {cars_api}` answers
  `{"image_url": ...}` for a car of the API's choosing (docs/course.md).

Either way the answer's `image_url` is then fetched. It may lie on the API's own origin
(same scheme, host and port), or on another host only over https, only when that host is
in `photo_hosts` (by default Cloud Storage's, `DEFAULT_PHOTO_HOSTS`) and only when every
address it resolves to is public: never loopback, private, link-local or reserved. The
address check runs in the connection itself, on the addresses actually connected to, so
a DNS answer that changes between check and connect cannot slip through, and foreign
hosts are reached directly, never through a proxy from the environment. No redirect is
followed anywhere.

One `requests.Session` per worker, with urllib3's `Retry` for transient failures
(connection refused, timeouts, 5xx) with exponential backoff, a timeout on every call,
and a photo read only up to a size limit.
"""

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util.retry import Retry

from section_speed.clients.images import MAX_IMAGE_BYTES
from section_speed.domain.course import PHOTO_HOST

TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_TIMEOUT_S = (3.05, 10.0)  # (connect, read)
# Where a fixed-URL API's photos are: Cloud Storage's public endpoint (docs/course.md).
DEFAULT_PHOTO_HOSTS: tuple[str, ...] = (PHOTO_HOST,)
VEHICLE_ID_PLACEHOLDER = "{vehicle_id}"
BARE_ORIGIN_PATH = "cars/" + VEHICLE_ID_PLACEHOLDER  # what a bare origin means
# A well-formed id that no camera produces: what the start-up check asks the API for.
PROBE_VEHICLE_ID = "startup-probe"
_CHUNK = 64 * 1024

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class EvidenceUnavailable(RuntimeError):
    """A transient failure that outlasted the retries (service down, 5xx, timeouts)."""


class EvidenceRejected(ValueError):
    """A permanent failure: unknown vehicle, refused photo host, oversized or bad body."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status that refused, when there was one


class PhotoHostRefused(EvidenceRejected):
    """The photo URL points somewhere the client does not fetch from (host, scheme, address)."""


class ForbiddenPhotoAddress(PhotoHostRefused):
    """A foreign photo host resolved to an address the client never connects to."""


@dataclass(frozen=True, slots=True)
class Photo:
    """A vehicle's photo and where it was read from (the fine's image_url without a bucket)."""

    url: str
    data: bytes


def parse_photo_hosts(value: str | Iterable[str] | None) -> frozenset[str]:
    """`--photo_hosts` ("a.example,b.example") as normalised host names."""
    names = value.split(",") if isinstance(value, str) else (value or ())
    return frozenset(_normalise_host(name) for name in names if name.strip())


def invalid_cars_api(url: str) -> str | None:
    """Why `url` cannot be a cars API URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL"
    if "{" in parts.netloc or "}" in parts.netloc:
        return "may hold {vehicle_id} only in its path or query, never in its host"
    rest = url.replace(VEHICLE_ID_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        return "has a placeholder other than {vehicle_id}"
    return None


def is_public_address(address: IpAddress) -> bool:
    """Whether `address` is on the public internet: a photo host may only be there."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def retrying_session(
    attempts: int, backoff_s: float, adapter: type[HTTPAdapter] | None = None, **kwargs: Any
) -> requests.Session:
    retry = Retry(
        total=attempts - 1,
        connect=attempts - 1,
        read=attempts - 1,
        status=attempts - 1,
        other=0,
        backoff_factor=backoff_s,
        backoff_max=10.0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=True,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    mounted = (adapter or HTTPAdapter)(max_retries=retry, pool_maxsize=8, **kwargs)
    session.mount("http://", mounted)
    session.mount("https://", mounted)
    return session


class _AddressGuard:
    """Connects only to addresses `allowed` accepts, after resolving the host itself."""

    def __init__(self, resolve: Resolver, allowed: Callable[[IpAddress], bool]) -> None:
        self.resolve = resolve
        self.allowed = allowed

    def connect(self, conn: HTTPConnection) -> socket.socket:
        host, port = conn.host, conn.port or 443
        try:
            addresses = [ipaddress.ip_address(a) for a in self.resolve(host, port)]
        except socket.gaierror as error:
            raise NameResolutionError(host, conn, error) from error
        refused = [a for a in addresses if not self.allowed(a)]
        if refused or not addresses:
            shown = refused[0] if refused else "no address"
            raise ForbiddenPhotoAddress(
                f"photo host {host} resolves to {shown}, which is not a public address "
                "(loopback, private, link-local or reserved); not fetched"
            )
        last_error: OSError | None = None
        for address in addresses:  # every one was checked: connect to the first that answers
            try:
                return urllib3_connection.create_connection(
                    (str(address), port),
                    conn.timeout,
                    source_address=conn.source_address,
                    socket_options=conn.socket_options,
                )
            except TimeoutError as error:
                raise ConnectTimeoutError(conn, f"connection to {host} timed out") from error
            except OSError as error:
                last_error = error
        raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}")


class _GuardedAdapter(HTTPAdapter):
    """An adapter whose connections (TLS keeps the host name for SNI and its certificate)
    go only to addresses the guard accepts."""

    def __init__(self, *, guard: _AddressGuard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        guard = self.guard

        class GuardedHTTPConnection(HTTPConnection):
            def _new_conn(self) -> socket.socket:
                return guard.connect(self)

        class GuardedHTTPSConnection(HTTPSConnection):
            def _new_conn(self) -> socket.socket:
                return guard.connect(self)

        class GuardedHTTPPool(HTTPConnectionPool):
            ConnectionCls = GuardedHTTPConnection

        class GuardedHTTPSPool(HTTPSConnectionPool):
            ConnectionCls = GuardedHTTPSConnection

        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPPool,
            "https": GuardedHTTPSPool,
        }


class CarsApiClient:
    """The cars API at a fixed URL or a `{vehicle_id}` template (see the module docstring)."""

    def __init__(
        self,
        cars_api: str,
        *,
        photo_hosts: Iterable[str] | str | None = DEFAULT_PHOTO_HOSTS,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        session: requests.Session | None = None,
        resolve: Resolver = system_resolver,
        address_allowed: Callable[[IpAddress], bool] = is_public_address,
        ca_bundle: str | None = None,
    ) -> None:
        problem = invalid_cars_api(cars_api)
        if problem:
            raise ValueError(f"--cars_api {cars_api!r} {problem}")
        parts = urlsplit(cars_api)
        if VEHICLE_ID_PLACEHOLDER not in cars_api and parts.path in ("", "/") and not parts.query:
            cars_api = f"{parts.scheme}://{parts.netloc}/{BARE_ORIGIN_PATH}"
        self.cars_api = cars_api
        self.fixed_url = VEHICLE_ID_PLACEHOLDER not in cars_api
        self._origin = _origin(cars_api)
        self.photo_hosts = parse_photo_hosts(photo_hosts)
        self.timeout_s = timeout_s
        self.max_image_bytes = max_image_bytes
        self.session = session or retrying_session(attempts, backoff_s)
        guard = _AddressGuard(resolve, address_allowed)
        self.photo_session = retrying_session(attempts, backoff_s, _GuardedAdapter, guard=guard)
        # No proxy, netrc or CA bundle from the environment: a proxy would connect for us,
        # past the address check.
        self.photo_session.trust_env = False
        if ca_bundle:
            self.photo_session.verify = ca_bundle

    def close(self) -> None:
        self.session.close()
        self.photo_session.close()

    def car_url(self, vehicle_id: str) -> str:
        """The URL asked for `vehicle_id`'s car (a fixed URL ignores the id)."""
        return self.cars_api.replace(VEHICLE_ID_PLACEHOLDER, quote(vehicle_id, safe=""))

    def fetch(self, vehicle_id: str) -> Photo:
        """The vehicle's photo and its URL; raises EvidenceUnavailable or EvidenceRejected."""
        image_url = self._image_url(self._get(self.session, self.car_url(vehicle_id)))
        session = self._session_for(image_url)
        return Photo(image_url, self._read_bounded(self._get(session, image_url, stream=True)))

    def photo(self, vehicle_id: str) -> bytes:
        return self.fetch(vehicle_id).data

    def probe(self, vehicle_id: str = PROBE_VEHICLE_ID) -> str:
        """One GET of the car (no photo): what it answered, or EvidenceUnavailable/Rejected.

        A `{vehicle_id}` template's API may not know the probe vehicle: a 404 is an answer.
        """
        try:
            answer = self._get(self.session, self.car_url(vehicle_id))
        except EvidenceRejected as error:
            if not self.fixed_url and error.status == 404:
                return "answered 404 for the probe vehicle (unknown vehicle): reachable"
            raise
        image_url = self._image_url(answer)
        self._check_photo_url(image_url)
        return f"answered with image_url {image_url[:200]}"

    def _image_url(self, answer: requests.Response) -> str:
        try:
            image_url = answer.json()["image_url"]
        except (ValueError, KeyError, TypeError) as error:
            raise EvidenceRejected(f"cars API answered without an image_url: {error}") from error
        if not isinstance(image_url, str):
            raise EvidenceRejected(f"cars API's image_url is not a string: {image_url!r:.200}")
        return image_url

    def _check_photo_url(self, url: str) -> bool:
        """Whether `url` is on the API's own origin; raises EvidenceRejected if not allowed."""
        shown = f"photo URL {url[:200]!r}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PhotoHostRefused(f"{shown} is not an http(s) URL; not followed")
        if parts.username is not None or parts.password is not None:
            raise PhotoHostRefused(f"{shown} carries credentials; not followed")
        if _origin(url) == self._origin:
            return True
        if parts.scheme != "https":
            raise PhotoHostRefused(
                f"{shown} is on another host than the cars API's and not https; not followed"
            )
        if _normalise_host(parts.hostname) not in self.photo_hosts:
            allowed = ",".join(sorted(self.photo_hosts)) or "none"
            raise PhotoHostRefused(
                f"{shown} is neither on the cars API's host {self._origin[1]} nor on an "
                f"allowed photo host (--photo_hosts {allowed}); not followed"
            )
        return False

    def _session_for(self, image_url: str) -> requests.Session:
        return self.session if self._check_photo_url(image_url) else self.photo_session

    def _get(self, session: requests.Session, url: str, stream: bool = False) -> requests.Response:
        try:
            response = session.get(
                url, timeout=self.timeout_s, stream=stream, allow_redirects=False
            )
        except requests.exceptions.RetryError as error:
            raise EvidenceUnavailable(f"cars API kept failing: {_reason(error)}") from error
        except (requests.ConnectionError, requests.Timeout) as error:
            raise EvidenceUnavailable(f"cars API unreachable: {_reason(error)}") from error
        if response.status_code in TRANSIENT_STATUSES:
            raise EvidenceUnavailable(f"cars API answered {response.status_code}")
        if response.is_redirect:
            location = response.headers.get("Location", "")[:200]
            response.close()
            raise EvidenceRejected(
                f"{url[:200]} answered {response.status_code} (redirect to {location!r}); "
                "redirects are not followed",
                response.status_code,
            )
        if response.status_code != 200:
            detail = response.text[:200] if not stream else ""
            response.close()
            raise EvidenceRejected(
                f"cars API answered {response.status_code} {detail}".strip(), response.status_code
            )
        return response

    def _read_bounded(self, response: requests.Response) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_image_bytes:
            response.close()
            raise EvidenceRejected(
                f"photo of {declared} bytes is over the {self.max_image_bytes}-byte limit"
            )
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body.extend(chunk)
                if len(body) > self.max_image_bytes:
                    raise EvidenceRejected(
                        f"photo is over the {self.max_image_bytes}-byte limit; not read further"
                    )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise EvidenceUnavailable(f"photo download failed: {_reason(error)}") from error
        finally:
            response.close()
        return bytes(body)


def _normalise_host(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _reason(error: Exception) -> str:
    """The innermost cause, short: urllib3 wraps its reasons several levels deep."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return str(reason or error)[:300]
