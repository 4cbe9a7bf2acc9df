"""One exception root: every exception class firstmile defines on purpose derives from ``FirstmileError``, so a
caller can catch "anything firstmile refused or could not do" in one clause."""

import importlib
import inspect
import pkgutil

from streaming.errors import FirstmileError

PACKAGES = ("streaming", "warehouse", "ml", "orchestration")
#: Exceptions used as control flow inside one module, never raised to a caller (each says why).
INTERNAL = {
    "streaming.collector.app.Reject": "a request answered with its 4xx inside the ASGI app",
    "streaming.collector.app._ClientGone": "the client hung up; the app stops sending",
    "streaming.serving.api.Answer": "a profile read answered with its 4xx inside the ASGI app",
}


def _modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield root
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if not info.name.endswith(".__main__"):  # a command line: importing it runs it
                yield importlib.import_module(info.name)


def test_every_exception_class_derives_from_the_one_root():
    found, stray = [], []
    for module in _modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                continue
            qualified = f"{module.__name__}.{name}"
            found.append(qualified)
            if not issubclass(cls, FirstmileError) and qualified not in INTERNAL:
                stray.append(qualified)
    assert len(found) >= 8, found
    assert not stray, f"exception classes outside FirstmileError: {stray}"
