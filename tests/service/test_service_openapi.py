"""OpenAPI conformance: a bounded, seeded schemathesis run (every check, like `schemathesis run
--checks all`) against the live API. It must find no server error and no response that disagrees
with the documented schema (undocumented status codes, wrong `Allow` headers, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import schemathesis
from schemathesis.engine import Status, events

from service.contract.tokens import SESSIONS_ADMIN

if TYPE_CHECKING:
    from tests.service.conftest import Api

MAX_EXAMPLES = 20  # per operation and phase: about 20 s on a loaded 2-core machine
SEED = 14
# A session spec that fits its JSON schema can still be refused with 422 on meaning (an unknown
# preset, electrodes that overlap, a model past the limits): no JSON schema can say that.
SEMANTIC_422 = {"include-name": "POST /v1/sessions", "checks": {"positive_data_acceptance": {
    "expected-statuses": ["2XX", 401, 403, 422]}}}


def test_the_api_conforms_to_its_openapi_document(api: Api) -> None:
    config = schemathesis.Config.from_dict({
        "seed": SEED, "headers": api.auth(), "checks": {"enabled": True},
        "cache": {"enabled": False},
        "generation": {"max-examples": MAX_EXAMPLES},
        "phases": {"stateful": {"enabled": False}}, "operations": [SEMANTIC_422],
    })
    loaded = schemathesis.openapi.from_url(f"{api.base}/openapi.json", config=config)
    failures, errors, tested = [], [], 0
    for event in schemathesis.engine.from_schema(loaded).execute():
        if isinstance(event, events.ScenarioFinished) and event.status != Status.SKIP:
            tested += 1
            for checks in event.recorder.checks.values():
                failures += [f"{event.label}: {c.name}: {c.failure_info.failure.title}"
                             for c in checks if c.status == Status.FAILURE and c.failure_info]
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "info", event)))
    assert not errors and not failures, "\n".join(errors + sorted(set(failures)))
    assert tested > 0


def test_the_documented_examples_are_accepted(api: Api) -> None:
    doc = httpx.get(f"{api.base}/openapi.json", trust_env=False).json()
    sid = api.create_session()["id"]

    def example(path: str, method: str, name: str | None = None) -> object:
        content = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        if name is not None:
            return content["examples"][name]["value"]
        return doc["components"]["schemas"][content["schema"]["$ref"].split("/")[-1]][
            "examples"][0]

    with api.client() as c:
        frames = c.post(f"/v1/sessions/{sid}/frames", headers=api.auth(),
                        json=example("/v1/sessions/{sid}/frames", "post", "two frames"))
        reference = c.put(f"/v1/sessions/{sid}/reference", headers=api.auth(SESSIONS_ADMIN),
                          json=example("/v1/sessions/{sid}/reference", "put"))
        created = [c.post("/v1/sessions", headers=api.auth(SESSIONS_ADMIN), json=e["value"])
                   for e in doc["paths"]["/v1/sessions"]["post"]["requestBody"]["content"][
                       "application/json"]["examples"].values()]
    assert frames.status_code == 202, frames.text
    assert reference.status_code == 200, reference.text
    assert [r.status_code for r in created] == [201] * len(created)
