"""pytest-memray leak tests: per component, a looped operation under ``limit_leaks``.
(The ``pytester`` plugin they use is enabled in pyproject's addopts: ``pytest_plugins``
is only honoured in the top-level conftest.)"""
