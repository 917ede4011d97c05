"""Data parallelism for every trainer: one 1-D device mesh, the batch split over it.

Every trainer (:func:`subnets.train.fit`, :func:`subnets.nested.finetune`, the IMP train
function, :func:`subnets.subspace.fit`) takes ``mesh=``: the training state is replicated over
the mesh, each batch is split along its first axis over the mesh's ``"batch"`` axis, and XLA
inserts the gradient all-reduce. The update is the single-device update up to the order of
float additions.

Across hosts, :func:`initialize` starts ``jax.distributed`` (call it before anything else
touches JAX); :func:`data_mesh` then spans every process's devices, every process walks the
same global batch order and :func:`shard_batch` hands each device only its rows (a process
materialises only its own part), and :func:`is_primary` says which process writes files.

Example:
    >>> import numpy as np
    >>> mesh = data_mesh()
    >>> xb, = shard_batch(mesh, np.zeros((mesh.size * 2, 3), np.float32))
    >>> xb.shape, len(xb.sharding.device_set) == mesh.size
    ((2, 3), True)

References:
    JAX, "Distributed arrays and automatic parallelization" and "Multi-process environments"
    (``jax.sharding.NamedSharding``, ``jax.make_array_from_callback``,
    ``jax.distributed.initialize``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def data_mesh(devices: Sequence[Any] | int | None = None) -> Mesh:
    """A 1-D mesh named ``"batch"``.

    Args:
        devices: a list of devices, a count (the first ``n`` of ``jax.devices()``), or None
            for every device of every process.

    Raises:
        ValueError: when more devices are asked for than exist.
    """
    if devices is None or isinstance(devices, int):
        avail = jax.devices()
        n = len(avail) if devices is None else int(devices)
        if not 1 <= n <= len(avail):
            raise ValueError(f"devices={n}: this run has {len(avail)} device(s) "
                             f"({jax.default_backend()}); on a CPU host set XLA_FLAGS="
                             f"--xla_force_host_platform_device_count={n} before JAX starts")
        devices = avail[:n]
    return Mesh(np.asarray(list(devices)), (AXIS,))


def replicate(mesh: Mesh | None, tree: Any) -> Any:
    """``tree`` with every array replicated over ``mesh`` (unchanged when ``mesh`` is None)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) or a.is_fully_addressable else a
        if isinstance(a, jax.Array):
            return a
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def shard_batch(mesh: Mesh | None, *arrays: Any) -> tuple:
    """Split each array's first axis over ``mesh`` (every process passes the GLOBAL batch).

    Raises:
        ValueError: when the batch does not divide evenly over the mesh's devices.
    """
    if mesh is None:
        return arrays
    out = []
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    for a in arrays:
        n = np.shape(a)[0]
        if n % mesh.size:
            raise ValueError(f"batch of {n} examples does not split over {mesh.size} devices; "
                             f"use a batch size that is a multiple of {mesh.size}")
        if isinstance(a, jax.Array) and a.sharding == sharding:
            out.append(a)
            continue
        host = np.asarray(a)
        out.append(jax.make_array_from_callback(host.shape, sharding,
                                                lambda idx, h=host: h[idx]))
    return tuple(out)


def to_host(tree: Any) -> Any:
    """Numpy copies of a tree of (replicated) arrays; works on every process of a multi-host run."""
    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_shards[0].data)
        return np.asarray(a)

    return jax.tree.map(get, tree)


def is_primary() -> bool:
    """True on the process that writes files (process 0; the only one in a local run)."""
    return jax.process_index() == 0


def process_dir(out: str | os.PathLike) -> str:
    """The output folder this process writes: ``out`` on the primary process, else a sibling
    ``<out>.process-<i>`` of its own (a command whose pipeline writes as it goes runs the same
    steps on every process, so each resumes from its own checkpoints; process 0's are the
    run's outputs).

    Example:
        >>> process_dir("runs/demo")  # a single-process run: its own --out
        'runs/demo'
    """
    return os.fspath(out) if is_primary() else f"{os.fspath(out)}.process-{jax.process_index()}"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_devices: int | None = None) -> None:
    """Start ``jax.distributed`` for a multi-process run (before any other JAX call).

    Arguments left as None come from the environment JAX reads (``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or a cluster's own: SLURM, Cloud TPU, MPI).
    On CPU hosts the gloo collectives are selected (the default CPU client has none) and
    ``local_devices`` simulated devices per process may be asked for.

    Raises:
        ValueError: when the three arguments are only partly given.
    """
    given = [a is not None for a in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give --coordinator, --num-processes and --process-id together "
                         "(or none, to read them from the environment)")
    if local_devices is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                   f"{int(local_devices)}").strip()
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms in ("", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = {}
    if all(given):
        kw = {"coordinator_address": coordinator, "num_processes": int(num_processes),
              "process_id": int(process_id)}
    jax.distributed.initialize(**kw)


def add_flags(parser: Any) -> None:
    """``--devices``, ``--coordinator``, ``--num-processes``, ``--process-id`` for a CLI."""
    g = parser.add_argument_group("devices and hosts")
    g.add_argument("--devices", type=int, default=None,
                   help="shard each batch over the first N devices (default: all of them)")
    g.add_argument("--coordinator", default=None,
                   help="host:port of process 0 for a multi-process run (jax.distributed); "
                        "default: JAX_COORDINATOR_ADDRESS or the cluster's own variables")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process's index")


def mesh_from_flags(args: Any) -> Mesh | None:
    """Start ``jax.distributed`` if asked (flags or ``JAX_COORDINATOR_ADDRESS``) and return
    the data mesh the flags name, or None for a single device (call before other JAX work)."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if any(f is not None for f in flags) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        initialize(*flags)
    if args.devices is not None and args.devices < 1:
        raise ValueError(f"--devices must be >= 1, got {args.devices}")
    n = args.devices if args.devices is not None else len(jax.devices())
    if n == 1 and jax.process_count() == 1:
        return None
    return data_mesh(n)
