"""Reading what a test's subprocess printed."""

import json


def json_report(stdout: str) -> dict:
    """The last line of `stdout` that is a JSON object: the report a test script prints last.

    Other lines (gloo prints its connection messages to stdout) are passed over."""
    reports = [line for line in stdout.splitlines() if line.startswith("{")]
    assert reports, f"no JSON report in the output: {stdout[-2000:]!r}"
    return json.loads(reports[-1])
