"""``vibecode``: the command line over the same flows the Prefect UI and schedules run.

One module per command group (platform, people, workspaces, backups), each readable alone;
:mod:`vibecode_cli.app` assembles them and turns errors into exit codes (0 done, 1 failed,
2 bad input or a missing prerequisite); :mod:`vibecode_cli.output` prints (``--json``: one
JSON document on stdout); :mod:`vibecode_cli.outcomes` maps each flow's typed result to its
exit code.
"""

from vibecode_cli.app import app, main
from vibecode_cli.people import HR_COMMAND_TYPES, MAX_EVENT_BYTES, parse_hr_event

__all__ = ["app", "main", "parse_hr_event", "HR_COMMAND_TYPES", "MAX_EVENT_BYTES"]

