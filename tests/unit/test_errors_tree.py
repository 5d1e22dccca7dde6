"""The exception tree at the top of errors.py is the truth: every class, its place, its flag."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import s3forward
from s3forward import errors
from s3forward.errors import S3ForwardError

ROW = re.compile(r"^\s*[│├└─\s]*(\w+)\s+(yes|no|-)\s", re.MULTILINE)


def documented() -> dict[str, str]:
    return dict(ROW.findall(errors.__doc__ or ""))


def test_every_s3forward_exception_is_in_the_documented_tree_with_its_transient_flag() -> None:
    """No module defines an exception outside the tree, and each flag matches the table."""
    table = documented()
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(s3forward.__path__, "s3forward."):
        mod = importlib.import_module(module.name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            public = not obj.__name__.startswith("_")
            if public and issubclass(obj, BaseException) and obj.__module__.startswith("s3forward"):
                found[obj.__name__] = obj
    assert set(found) - {"S3ForwardError"} <= set(table), "an exception missing from the tree"
    for name, cls in found.items():
        assert issubclass(cls, S3ForwardError), f"{name} is outside the tree"
        assert cls.__module__ == "s3forward.errors", f"{name} is defined outside errors.py"
        flag = table.get(name, "-")
        if flag != "-":
            assert cls.transient is (flag == "yes"), f"{name}.transient disagrees with the tree"
