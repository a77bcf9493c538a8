"""One module per scenario of issue 5; each `run(settings, details)` returns table rows.

`details` collects the raw numbers behind the rows (they go to the JSON file).
"""

from __future__ import annotations

from bench.scenarios import batch, dispatch, e2e, retry, scale, single, soak

#: Scenario name -> runner, in the order the issue lists them.
SCENARIOS = {
    "e2e": e2e.run,
    "batch": batch.run,
    "single": single.run,
    "dispatch": dispatch.run,
    "scale": scale.run,
    "retry": retry.run,
    "soak": soak.run,
}
#: What runs without --only: every scenario but the soak (minutes to tens of minutes of its own).
DEFAULT = [name for name in SCENARIOS if name != "soak"]
