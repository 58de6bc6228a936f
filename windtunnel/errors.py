"""The one error type a user can cause: bad input that the CLI reports on one line with exit status 2."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "WindtunnelError", "WindtunnelWarning"]


class WindtunnelError(Exception):
    """Something the user can fix: the CLI prints the message on one line and exits with status 2.
    Every error windtunnel raises on bad input is one (ConfigError, DataError are its kinds).

    Example:
        >>> try:
        ...     load_config("proxies/xs.yaml", overrides=["model.d_model=-3"])
        ... except WindtunnelError as e:
        ...     print(e)                                                    # doctest: +SKIP
        proxies/xs.yaml: model.d_model: expected a positive integer, got -3
    """


class ConfigError(WindtunnelError, ValueError):
    """A config value breaks a rule. The message names the file, the key, the rule and the bad value.

    Example:
        >>> str(ConfigError("proxies/xs.yaml", "model.d_model", "expected a positive integer, got -3"))
        'proxies/xs.yaml: model.d_model: expected a positive integer, got -3'
    """

    def __init__(self, source: str | None, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


class DataError(WindtunnelError, ValueError):
    """Token data is missing, corrupt or unusable. The message names the file and what was expected.

    Example:
        >>> str(DataError("/data/train.bin: expected 100 bytes, found 40"))
        '/data/train.bin: expected 100 bytes, found 40'
    """


class WindtunnelWarning(UserWarning):
    """Something the user should know that does not stop the job (a plot that cannot be drawn). The CLI
    prints it as one plain line, `windtunnel: warning: ...`, without Python's source-line dump.

    Example:
        >>> import warnings; warnings.warn("no muTransfer plot: ...", WindtunnelWarning)   # doctest: +SKIP
    """
