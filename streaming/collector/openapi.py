"""The collector's OpenAPI 3.0 document, written by hand to say exactly what the raw ASGI app does.

Served at ``GET /openapi.json``; the schemathesis test holds the app to it.
"""

from __future__ import annotations

from typing import Any

from streaming.contract import MAX_DEPTH, MAX_EVENT_BYTES, MAX_ID_LENGTH

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _response(description: str, schema: str = "Error", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer", "minimum": 1}}}

_COLLECT_RESPONSES: dict[str, Any] = {
    "200": _response("Every event was acknowledged by the broker (acks=all) and is on `events.raw`.", "Success"),
    "400": _response("Malformed JSON, a body that is not an object, nesting deeper than the contract allows, "
                     "or an event that breaks the contract. A batch is rejected whole: `index` and `field` name "
                     "the first offending event and field. Not retryable."),
    "401": _response("Missing or unknown write key. Decided before anything about the body: without an "
                     "`Authorization` header the key is read from the body, and a body that cannot be read (over "
                     "the limit, unsupported encoding, malformed) is a 401 too."),
    "413": _response(f"Body over the limit (single call {MAX_EVENT_BYTES} bytes, batch 524288 bytes, after "
                     f"gzip decompression) or one batch event over {MAX_EVENT_BYTES} bytes."),
    "415": _response("A `Content-Encoding` other than `gzip` or `identity`."),
    "429": _response("The write key's rate limit (a token bucket, counted in events) is exhausted.",
                     headers=_RETRY_AFTER),
    "503": _response("The broker did not acknowledge in time or is down. Nothing of the request is acknowledged; "
                     "retry with the same `messageId`s (they make retries safe downstream).", headers=_RETRY_AFTER),
}


def _event_schema(type_name: str, description: str, *, extra: dict[str, Any] | None = None,
                  required: tuple[str, ...] = (), any_of: list[dict[str, Any]] | None = None,
                  in_batch: bool = False) -> dict[str, Any]:
    types = ["page", "screen"] if type_name == "page" else [type_name]
    props: dict[str, Any] = {
        "type": {"type": "string", "enum": types,
                 "description": "Required in a batch; on a single call the endpoint sets it."},
        "messageId": _ref("MessageId"),
        "anonymousId": _ref("Id"),
        "userId": _ref("Id"),
        "timestamp": {"type": "string", "format": "date-time",
                      "description": "When the event happened on the device (ISO 8601). Corrected for clock "
                                     "skew with `sentAt`; an old timestamp (historical import) is kept. A "
                                     "correction that leaves years 1-9999 is a 400."},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time",
                   "description": "When the device sent it; `sentAt - receivedAt` is the clock skew."},
        "context": _ref("Context"),
        "integrations": {"description": "Accepted and ignored (any JSON value)."},
        **(extra or {}),
    }
    if not in_batch:
        props["writeKey"] = {"type": "string", "nullable": True,
                             "description": "The write key, when HTTP Basic is not used (ignored when it is)."}
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": props,
        "required": ["messageId", *required, *(["type"] if in_batch else [])],
        "anyOf": any_of or [{"required": ["anonymousId"]}, {"required": ["userId"]}],
    }
    return schema


def _nested(description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": True,
            "description": f"{description} Objects and arrays nest at most {MAX_DEPTH} levels."}


_EXTRAS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "track": ("A user action.", {
        "event": {"type": "string", "minLength": 1, "description": "The action's name."},
        "properties": _nested("Properties of the action."),
    }, ("event",)),
    "page": ("A page view (web) or, posted as `screen` to `/v1/screen`, a screen view (mobile).", {
        "name": {"type": "string"},
        "category": {"type": "string"},
        "properties": _nested("Properties of the page (url, path, referrer, title...)."),
    }, ()),
    "identify": ("Ties a device to a user and records traits.", {
        "traits": _nested("Traits of the user."),
    }, ()),
    "alias": ("Merges two identities: `previousId` becomes `userId`.", {
        "previousId": {"type": "string"},
    }, ()),
    "group": ("Ties the user to a group (an account, a company) and records the group's traits.", {
        "groupId": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
        "traits": _nested("Traits of the group."),
    }, ()),
    "consent": ("Grants or revokes consent purposes (or carries an IAB TCF v2 string).", {
        "consent": {"type": "object", "additionalProperties": {"type": "boolean"}, "minProperties": 1,
                    "description": "Purpose → granted, e.g. {\"analytics\": true, \"marketing\": false}."},
        "properties": _nested("Free properties."),
    }, ()),
}

_CONSENT_ANY_OF = [
    {"required": ["anonymousId", "consent"]}, {"required": ["userId", "consent"]},
]


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "MessageId": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"\S",
                      "description": "Client-generated unique id of the event: the dedupe key (`event_id`)."},
        "Id": {"oneOf": [{"type": "string", "minLength": 1},
                         {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1}],
               "description": "`anonymousId` (the device) or `userId`; at least one of them is required."},
        "Context": {
            "type": "object",
            "description": "Only these fields are kept; others are accepted and dropped. In a batch the batch's "
                           "`context` is merged under each event's.",
            "properties": {
                "ip": {"type": "string"},
                "userAgent": {"type": "string"},
                "locale": {"type": "string"},
                "timezone": {"type": "string"},
                "page": {"type": "object", "properties": {k: {"type": "string"} for k in
                                                          ("url", "path", "referrer", "title")}},
                "tcf": {"type": "string", "description": "IAB TCF v2 consent string."},
                "consent": {"type": "object", "properties": {
                    "tcString": {"type": "string", "description": "IAB TCF v2 consent string."},
                    "purposes": {"type": "object", "additionalProperties": {"type": "boolean"}}}},
                "traits": _nested("Traits, used when the event has none."),
            },
        },
        "Success": {"type": "object", "required": ["success"],
                    "properties": {"success": {"type": "boolean", "enum": [True]},
                                   "token": {"type": "string", "pattern": r"^\d+\.\d+(,\d+\.\d+)*$",
                                             "description": "What was written (`<partition>.<offset>` per "
                                                            "events.raw partition): pass it as `after` to the "
                                                            "serving API to read the profile once it reflects "
                                                            "these events."}}},
        "Error": {
            "type": "object", "required": ["success", "code", "message"],
            "properties": {
                "success": {"type": "boolean", "enum": [False]},
                "code": {"type": "string", "description": "Stable machine-readable code, e.g. `invalid_json`, "
                                                          "`schema`, `missing_id`, `missing_identity`, `too_deep`, "
                                                          "`unauthorized`, `payload_too_large`, `rate_limited`, "
                                                          "`broker_unavailable`."},
                "message": {"type": "string"},
                "index": {"type": "integer", "minimum": 0, "description": "The offending event in a batch."},
                "field": {"type": "string", "description": "The offending field (wire name)."},
            },
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }
    batch_items = []
    for name, (description, extra, required) in _EXTRAS.items():
        title = name.capitalize()
        any_of = _CONSENT_ANY_OF if name == "consent" else None
        schemas[f"{title}Event"] = _event_schema(name, description, extra=extra, required=required, any_of=any_of)
        schemas[f"{title}BatchEvent"] = _event_schema(name, description, extra=extra, required=required,
                                                      any_of=any_of, in_batch=True)
        batch_items.append(_ref(f"{title}BatchEvent"))
    schemas["Batch"] = {
        "type": "object", "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "minItems": 1, "items": {"anyOf": batch_items},
                      "description": "Events, each with its `type`. One bad event rejects the whole batch."},
            "sentAt": {"type": "string", "format": "date-time", "description": "Applies to events without one."},
            "context": _ref("Context"),
            "writeKey": {"type": "string", "nullable": True,
                         "description": "The write key, when HTTP Basic is not used (ignored when it is)."},
            "integrations": {"description": "Accepted and ignored (any JSON value)."},
        },
    }
    return schemas


def _collect(summary: str, schema: str, description: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "description": description,
        "operationId": summary.lower().replace(" ", "_").replace("/", "_"),
        "security": [{"writeKey": []}, {}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref(schema)},
            "text/plain": {"schema": _ref(schema)},  # analytics.js avoids CORS preflights with text/plain
        }},
        "responses": _COLLECT_RESPONSES,
    }}


_SERVER_KEY: list[dict[str, list[str]]] = [{"serverKey": []}]
_REGULATION_ERRORS: dict[str, Any] = {
    "401": _response("Missing or unknown server key (a write key cannot file a regulation)."),
    "503": _response("The broker did not acknowledge, or control.regulations is not readable yet: retry.",
                     headers=_RETRY_AFTER),
}


def _regulation_paths() -> dict[str, Any]:
    create = {
        "type": "object", "required": ["regulationType", "subjectType", "subjectIds"],
        "properties": {
            "regulationType": {"type": "string", "enum": ["SUPPRESS", "SUPPRESS_WITH_DELETE"]},
            "subjectType": {"type": "string", "enum": ["USER_ID", "ANONYMOUS_ID"]},
            "subjectIds": {"type": "array", "minItems": 1, "maxItems": 5000,
                           "items": {"type": "string", "minLength": 1}},
        },
    }
    created = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "object", "required": ["regulateId"], "properties": {"regulateId": {"type": "string"}}}}}
    state = {"type": "object", "required": ["state", "at"], "properties": {
        "state": {"type": "string", "enum": ["received", "suppressed_at_edge", "lake_rewritten", "warehouse_rebuilt",
                                             "ml_artefacts_checked", "done", "failed"]},
        "at": {"type": "string", "format": "date-time"}, "detail": {"type": "object", "nullable": True}}}
    regulation = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "object", "required": ["regulation"], "properties": {"regulation": {
            "type": "object", "required": ["id", "overallStatus", "states"],
            "properties": {"id": {"type": "string"}, "regulationType": {"type": "string"},
                           "subjectType": {"type": "string"}, "subjectIds": {"type": "array",
                                                                             "items": {"type": "string"}},
                           "createdAt": {"type": "string"}, "overallStatus": {"type": "string"},
                           "states": {"type": "array", "items": state}}}}}}}
    return {
        "/v1/regulations": {"post": {
            "summary": "File an erasure request (Segment Regulations API shape)", "operationId": "createRegulation",
            "security": _SERVER_KEY,
            "description": "The subject ids are on control.erasure when this answers: every worker drops the "
                           "subject's next event. SUPPRESS_WITH_DELETE also deletes the subject's data in the "
                           "loop (lake, warehouse, ML artefacts). The same request again answers the same id.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": create}}},
            "responses": {"200": {"description": "Accepted and suppressed at the edge.",
                                  "content": {"application/json": {"schema": created}}},
                          "400": _response("Malformed JSON or a field breaking the shape (`field` names it)."),
                          "413": _response("Body over 1 MiB."), **_REGULATION_ERRORS}}},
        "/v1/regulations/{regulateId}": {"get": {
            "summary": "A regulation's states, each with its time", "operationId": "getRegulation",
            "security": _SERVER_KEY,
            "parameters": [{"name": "regulateId", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The request and its states.",
                                  "content": {"application/json": {"schema": regulation}}},
                          "404": _response("No such request."), **_REGULATION_ERRORS}}},
    }


def openapi_document() -> dict[str, Any]:
    single = "One event; the body may carry `writeKey` instead of HTTP Basic. Body limit 32 KB."
    batch = ("Up to 512 KB of events (32 KB each). Accepted all or none: 200 only once every event is "
             "acknowledged, 400 naming the first bad event.")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "firstmile collector",
            "version": "1.0.0",
            "description": "The Segment HTTP tracking API (as Segment's and RudderStack's libraries send it), plus "
                           "consent. Auth: the write key as HTTP Basic user name (password empty), or `writeKey` "
                           "in the body. Responses are sent after the broker acknowledged every event.",
        },
        "components": {
            "securitySchemes": {"writeKey": {"type": "http", "scheme": "basic",
                                             "description": "User name: the write key; password: empty."},
                                "serverKey": {"type": "http", "scheme": "basic",
                                              "description": "User name: a server key (FIRSTMILE_SERVER_KEYS)."}},
            "schemas": _schemas(),
        },
        "paths": {
            "/v1/track": _collect("track", "TrackEvent", single),
            "/v1/page": _collect("page", "PageEvent", single),
            "/v1/screen": _collect("screen", "PageEvent", single + " Stored as a `page` event."),
            "/v1/identify": _collect("identify", "IdentifyEvent", single),
            "/v1/alias": _collect("alias", "AliasEvent", single),
            "/v1/group": _collect("group", "GroupEvent", single),
            "/v1/consent": _collect("consent", "ConsentEvent", single),
            "/v1/batch": _collect("batch", "Batch", batch),
            "/v1/import": _collect("import", "Batch", batch + " Historical import: old timestamps are kept and "
                                                              "flow through the same path (late data downstream)."),
            **_regulation_paths(),
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "security": [],
                                 "responses": {"200": {"description": "The process serves requests.",
                                                       "content": {"application/json": {"schema": _ref("Status")}}}}}},
            "/readyz": {"get": {"summary": "Readiness", "operationId": "readyz", "security": [],
                                "responses": {
                                    "200": {"description": "The broker accepted a metadata request or a write "
                                                           "recently.",
                                            "content": {"application/json": {"schema": _ref("Status")}}},
                                    "503": {"description": "The broker does not accept writes.",
                                            "content": {"application/json": {"schema": _ref("Status")}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.0 document.",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}}},
        },
    }
