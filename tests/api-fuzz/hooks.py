"""Schemathesis hooks for the API fuzz (tests/suite/openapi.rs).

`console_answers` replaces schemathesis' `not_a_server_error`: any 5xx fails, except the one the
document promises for the operations that reach the tenant's mail server, 502 with the code
`mail_server_error` (a fuzzed tenant's mail host does not exist). It also logs every answer's
method, path, status and request id to $SMTP_VAULT_FUZZ_LOG, so the test can prove that no
refused request wrote anything (the audit trail records every write with its request id).
"""

import json
import os

import schemathesis


def _error_code(response):
    try:
        return response.json()["error"]["code"]
    except Exception:  # the body is not the error contract: the check below names it
        return None


@schemathesis.check
def console_answers(ctx, response, case):
    request_id = (response.headers.get("x-request-id") or [None])[0]
    with open(os.environ["SMTP_VAULT_FUZZ_LOG"], "a", encoding="utf-8") as log:
        log.write(
            json.dumps(
                {
                    "method": case.method,
                    "path": case.path,
                    "status": response.status_code,
                    "request_id": request_id,
                }
            )
            + "\n"
        )
    if response.status_code >= 500:
        code = _error_code(response)
        if not (response.status_code == 502 and code == "mail_server_error"):
            raise AssertionError(f"the console answered {response.status_code} (code {code!r})")
