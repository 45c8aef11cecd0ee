"""Every query and form the desk accepts, as Pydantic models: validated before any use."""

from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from desk.store import QueueFilter
from desk.workflow import ACKNOWLEDGE, PLATE
from section_speed.domain.events import ID_PATTERN
from section_speed.domain.verification import HEX32, MAX_NOTE_CHARACTERS, REJECT_REASONS

FINE_ID_PATTERN = f"^{HEX32}$"  # fine ids and claim ids alike
Action = Literal["plate", "acknowledge", "plate_unreadable", "wrong_vehicle",
                 "implausible_measurement", "other"]  # fmt: skip
assert set(Action.__args__) == {PLATE, ACKNOWLEDGE, *REJECT_REASONS}


class QueueParams(BaseModel):
    """The queue's filters, in the query string and carried along in every form."""

    model_config = ConfigDict(extra="ignore")

    radar_id: Annotated[str | None, Field(pattern=f"^{ID_PATTERN.pattern}$")] = None
    day: date | None = None
    min_confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    max_confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def queue_filter(self) -> QueueFilter:
        return QueueFilter(self.radar_id, self.day, self.min_confidence, self.max_confidence)

    def query_string(self) -> str:
        """`?radar_id=...` for links and redirects that keep the filters ("" when none)."""
        values = {
            name: str(value)
            for name in ("radar_id", "day", "min_confidence", "max_confidence")
            if (value := getattr(self, name)) is not None
        }
        return f"?{urlencode(values)}" if values else ""


class CsrfForm(QueueParams):
    csrf: Annotated[str, Field(max_length=128)] = ""


class DecisionForm(CsrfForm):
    revision: Annotated[int, Field(ge=0)]
    claim_id: Annotated[str, Field(pattern=FINE_ID_PATTERN)]
    action: Action
    plate: Annotated[str, Field(max_length=64)] = ""
    note: Annotated[str, Field(max_length=MAX_NOTE_CHARACTERS)] = ""
    photo_sha256: Annotated[str | None, Field(pattern="^[0-9a-f]{64}$")] = None  # blank: none
    shown_ms: Annotated[int | None, Field(ge=0)] = None  # the browser's word only: not trusted


class ClaimForm(BaseModel):
    """A claim's renewal or release, from the fine's page (desk.js)."""

    model_config = ConfigDict(extra="ignore")
    csrf: Annotated[str, Field(max_length=128)] = ""
    claim_id: Annotated[str, Field(pattern=FINE_ID_PATTERN)]
    # When the page that sends it was served (release): a page served later keeps the claim.
    served_at: Annotated[str, Field(max_length=40)] = ""


class LoginForm(BaseModel):
    token: Annotated[str, Field(max_length=128)] = ""
    reviewer: Annotated[str, Field(max_length=64)] = ""
