class LifecycleError(Exception):
    """An error caused by the user's input or configuration: reported without a traceback, exit 2."""


class ConfigError(LifecycleError):
    pass


class InputError(LifecycleError):
    pass
