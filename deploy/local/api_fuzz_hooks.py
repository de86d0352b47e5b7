"""schemathesis hooks for deploy/local/api-fuzz.sh.

Each distinct request gets its own `Idempotency-Key`. The gateway answers a key reused for a
different request with 422 (`idempotency-key-reused`, tested in gateway/tests/api.rs), and
generated keys repeat across unrelated test cases, which is not what the property-based run
checks. A valid key becomes a digest of itself and the request, so a repeated request keeps
its key (a retry stays a retry); an invalid key is left as generated, to be refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import schemathesis

VALID_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext,
    case: schemathesis.Case[Any],
    kwargs: dict[str, Any],
) -> None:
    # A case that leaves out a header on purpose is sent as generated: rewriting it makes
    # schemathesis re-derive the case and send the header it meant to leave out.
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    if getattr(data, "scenario", None) == "missing_parameter":
        return
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if not isinstance(key, str) or VALID_KEY.fullmatch(key) is None:
        return
    request = repr(
        (key, case.method, case.formatted_path, sorted(case.query.items()), case.body)
    )
    case.headers["Idempotency-Key"] = hashlib.sha256(request.encode()).hexdigest()
