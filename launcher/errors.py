"""One error tree for everything a user can get wrong, caught once at the CLI edge."""


class LaunchError(Exception):
    """Root of every error the launcher reports as one line (the traceback shows with --debug)."""


class SpecError(LaunchError):
    """A job spec, flag or sweep expression is invalid."""


class BackendError(LaunchError):
    """A backend refused or failed an operation (credentials, quota, API errors)."""


class CapacityError(BackendError):
    """No capacity for the requested instance type in any zone tried."""


class StorageError(LaunchError):
    """Storage is unreachable, or an object is missing or corrupt."""


class NotFoundError(LaunchError):
    """A named run, experiment, datastore or checkpoint does not exist."""
