"""Cluster tests share one embedded control plane per session (tools/localcluster/pytest_plugin.py).

pytest refuses ``pytest_plugins`` outside the top-level conftest, so the plugin
is registered here unless tests/conftest.py already lists
``localcluster.pytest_plugin`` (registering it once keeps one cluster per session).
"""

PLUGIN = "localcluster.pytest_plugin"


def pytest_configure(config):
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
