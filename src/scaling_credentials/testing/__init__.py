"""For testing code that uses the library: :class:`FakeScalingAPI`, the ``scaling_api``
pytest fixture (plugin ``scaling_credentials.testing.pytest_plugin``) and the shared
provider test suite (:mod:`scaling_credentials.testing.provider_suite`, which needs
pytest), test doubles, and a rotation-under-load harness (:func:`run_rotation_threads`,
:func:`run_rotation_tasks`, :func:`run_prefork_rotation`; httpx by default, any HTTP
library through a :data:`ClientFactory`), a key file updated like a Kubernetes secret
volume (:class:`SecretVolume`), an HTTP server that misbehaves on purpose
(:class:`HostileServer`, fixture ``hostile_server``), a bounded wait for a forked child
(:func:`wait_child`), and the ``scaling-credentials demo`` (:func:`run_demo`)."""

from ._children import wait_child
from ._demo import DemoOptions, DemoReport, run_demo
from ._fake_api import FakeScalingAPI, RecordedRequest, ScriptedResponse
from ._helpers import FakeClock, FaultyProvider, MemoryCache, MemoryProvider, memory_cache
from ._hostile import HostileHit, HostileServer
from ._ports import free_port, wait_for_port
from ._rotation import (
    AsyncClientFactory,
    ClientFactory,
    PreforkRun,
    RotationRun,
    WorkerReport,
    rotate_and_revoke,
    run_prefork_rotation,
    run_rotation_tasks,
    run_rotation_threads,
)
from ._threads import run_in_threads
from ._volume import SecretVolume

__all__ = [
    "AsyncClientFactory",
    "ClientFactory",
    "DemoOptions",
    "DemoReport",
    "FakeClock",
    "FakeScalingAPI",
    "FaultyProvider",
    "HostileHit",
    "HostileServer",
    "MemoryCache",
    "MemoryProvider",
    "PreforkRun",
    "RecordedRequest",
    "RotationRun",
    "ScriptedResponse",
    "SecretVolume",
    "WorkerReport",
    "free_port",
    "memory_cache",
    "rotate_and_revoke",
    "run_demo",
    "run_in_threads",
    "run_prefork_rotation",
    "run_rotation_tasks",
    "run_rotation_threads",
    "wait_child",
    "wait_for_port",
]
