"""A small local fake of the Hugging Face Hub HTTP API, for push and download tests.

It serves the routes huggingface_hub's ``create_repo``, ``create_branch``, ``upload_folder``,
``snapshot_download`` and ``hf_hub_download`` use (model and dataset repos), keeps the repos in
memory, checks the bearer token on writes, and can be told to fail the next N requests to a
route (``hub.fail("/commit/", 503, times=1)``) to exercise retries.

Use the ``fake_hub`` fixture from any test module or conftest::

    from fakehub import fake_hub  # noqa: F401  (a pytest fixture)
"""

from __future__ import annotations

from .server import FakeHub, fake_hub, seed_repo

__all__ = ["FakeHub", "fake_hub", "seed_repo"]
