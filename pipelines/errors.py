"""Errors that reach a user as one line saying what to do, never as a stack trace."""


class TailorError(Exception):
    """A problem the user can fix; the CLI prints `tailor: <message>` and exits 2."""


class ConfigError(TailorError):
    """A config file, an environment name or a --set override is wrong."""


class EnvironmentProblem(TailorError):
    """A tool the job needs (Java, Maven, the JVM jars) is missing or too old."""
