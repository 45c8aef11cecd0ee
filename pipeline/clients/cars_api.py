"""Client of the cars API (the vehicle-registry photo archive): vehicle id -> photo bytes.

One `requests.Session` per worker, with urllib3's `Retry` for transient failures
(connection refused, timeouts, 5xx) with exponential backoff, a timeout on every call,
and two guards: the photo URL the API returns must be on the API's own host (the client
never follows a message or a response to somewhere else), and a photo is read only up to
a size limit.
"""

from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.clients.images import MAX_IMAGE_BYTES

TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_TIMEOUT_S = (3.05, 10.0)  # (connect, read)
_CHUNK = 64 * 1024


class EvidenceUnavailable(RuntimeError):
    """A transient failure that outlasted the retries (service down, 5xx, timeouts)."""


class EvidenceRejected(ValueError):
    """A permanent failure: unknown vehicle, foreign photo host, oversized or bad body."""


def retrying_session(attempts: int, backoff_s: float) -> requests.Session:
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
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=8)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class CarsApiClient:
    """GET /cars/{vehicle_id} -> image_url -> photo bytes."""

    def __init__(
        self,
        base_url: str,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._origin = _origin(self.base_url)
        self.timeout_s = timeout_s
        self.max_image_bytes = max_image_bytes
        self.session = session or retrying_session(attempts, backoff_s)

    def close(self) -> None:
        self.session.close()

    def photo(self, vehicle_id: str) -> bytes:
        """The vehicle's photo; raises EvidenceUnavailable or EvidenceRejected."""
        car = self._get(urljoin(self.base_url, f"cars/{quote(vehicle_id, safe='')}"))
        try:
            image_url = car.json()["image_url"]
        except (ValueError, KeyError, TypeError) as error:
            raise EvidenceRejected(f"cars API answered without an image_url: {error}") from error
        if not isinstance(image_url, str) or _origin(image_url) != self._origin:
            raise EvidenceRejected(
                f"photo URL {str(image_url)[:200]!r} is not on the cars API's host "
                f"{self._origin}; not followed"
            )
        return self._read_bounded(self._get(image_url, stream=True))

    def _get(self, url: str, stream: bool = False) -> requests.Response:
        try:
            response = self.session.get(
                url, timeout=self.timeout_s, stream=stream, allow_redirects=False
            )
        except requests.exceptions.RetryError as error:
            raise EvidenceUnavailable(f"cars API kept failing: {_reason(error)}") from error
        except (requests.ConnectionError, requests.Timeout) as error:
            raise EvidenceUnavailable(f"cars API unreachable: {_reason(error)}") from error
        if response.status_code in TRANSIENT_STATUSES:
            raise EvidenceUnavailable(f"cars API answered {response.status_code}")
        if response.status_code != 200:
            detail = response.text[:200] if not stream else ""
            raise EvidenceRejected(f"cars API answered {response.status_code} {detail}".strip())
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


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _reason(error: Exception) -> str:
    """The innermost cause, short: urllib3 wraps its reasons several levels deep."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return str(reason or error)[:300]
