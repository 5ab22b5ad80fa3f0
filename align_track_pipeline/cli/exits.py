"""What a command returns, and the error the command maps to its own exit code. No Dagster
import: the commands that only read the tables use them without loading it."""

# A command's exit code, and with --json the one object to print on stdout.
Result = tuple[int, dict | None]


class PoolTimeout(RuntimeError):
    """A pool stayed held by a live writer for longer than the configured wait."""


class StoreUnreachable(RuntimeError):
    """A store a command needs could not be opened (its server is down, refuses the
    credentials, or the database is not there): said in one line, without a traceback."""


class PortInUse(RuntimeError):
    """The port a UI was to serve on is taken (another UI, often of another data dir): said
    before the server starts, which would otherwise print a traceback and exit 0, or run on
    without its web server."""
