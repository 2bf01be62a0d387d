"""schemathesis hooks for tests/quantum_live_python.rs (a run against `kirqd demo` on loopback).

Every check stays on. One failure is dropped, only in its exact documented shape:

1. "Server error" for a 503 from POST /api/rng/random whose body says reason "pool_depleted".
   The pool holds only what the hubs delivered; asking for a provenance it has none of (the demo
   hub's only source is `local`, so e.g. "source": "qrng") is answered 503, as the contract
   documents. The response-schema check still applies to that 503.
"""

import json

import schemathesis


def _random(case):
    return case.operation.path == "/api/rng/random" and case.method.upper() == "POST"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    name = type(failure).__name__
    if not _random(case):
        return True
    if name == "ServerError" and response.status_code == 503:
        try:
            body = json.loads(response.content)
        except ValueError:
            return True
        return body.get("reason") != "pool_depleted"
    return True
