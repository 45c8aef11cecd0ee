"""`POST /push/fines`: the fines topic's push subscription on Cloud Run (docs/desk.md).

Pub/Sub retries a message until it is answered 2xx: a stored (or already stored) fine and
a message that is no traversal record (logged, never better on retry) are 204; a request
without a valid push token is 401; a database failure is 500, so the message comes again.
"""

import base64
import binascii
import json
import logging

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from desk.deps import State
from desk.ingest import NotAFine, ingest_message

router = APIRouter()
_log = logging.getLogger(__name__)
MAX_BODY = 1_000_000  # a fine's record is a few kB


@router.post("/push/fines")
async def push_fines(request: Request, state: State) -> Response:
    if state.push is None:
        raise HTTPException(404, "this desk takes no push subscription")
    if state.push.claims(request.headers.get("authorization")) is None:
        raise HTTPException(401, "a valid push token of the desk's service account is required")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "message too large")
    try:
        message = json.loads(body)["message"]
        data = base64.b64decode(message.get("data", ""), validate=True)
        await run_in_threadpool(ingest_message, state.desk.store, data)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, NotAFine) as error:
        _log.error("push: dropped a message that is no fine: %s", error)
    return Response(status_code=204)
