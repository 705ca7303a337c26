"""Which `tf.distribute` strategy a run uses, and which worker of a cluster this process is.

    --strategy auto          TPU if one is attached, multi-worker if TF_CONFIG describes a
                             cluster, mirrored over the GPUs if there are several, else default
    --strategy default       TensorFlow's default strategy (one device)
    --strategy one-device    OneDeviceStrategy on the first GPU, else the CPU
    --strategy mirrored      MirroredStrategy over all GPUs (or all logical CPU devices)
    --strategy multi-worker  MultiWorkerMirroredStrategy over the TF_CONFIG cluster
    --strategy tpu           TPUStrategy (the TPU named by TPU_NAME, or the local one)

`--logical-cpu-devices N` splits the CPU into N logical devices, so mirrored
training can be run and tested on a machine without GPUs.

Strategies must be created before TensorFlow runs any op, so `make_strategy`
is the first thing a run does.

Example:

>>> strategy = make_strategy("default")
>>> strategy.num_replicas_in_sync
1
"""

import dataclasses
import glob
import json
import os
import socket
import time

import tensorflow as tf

from kerasbert.choices import STRATEGIES
from kerasbert.errors import KerasbertError, first_line



@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in a TF_CONFIG cluster (a lone process is the chief)."""

    type: str = "chief"
    index: int = 0
    workers: int = 1
    has_chief_job: bool = False

    @property
    def is_chief(self):
        # With no "chief" job, worker 0 acts as the chief (TensorFlow's convention).
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief_job)

    @property
    def name(self):
        return f"{self.type}-{self.index}"

    @property
    def rank(self):
        """This process's place among the cluster's training processes, the chief first."""
        return self.index + (self.type == "worker" and self.has_chief_job)


def cluster_task(environ=os.environ):
    """Parse and check TF_CONFIG; without it, a single chief."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Task()
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise KerasbertError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(tf_config, dict) or not isinstance(tf_config.get("cluster"), dict):
        raise KerasbertError('TF_CONFIG needs a "cluster" object, e.g. {"cluster": {"worker": ["host1:port", '
                             '"host2:port"]}, "task": {"type": "worker", "index": 0}}')
    cluster, task = tf_config["cluster"], tf_config.get("task")
    for job, addresses in cluster.items():
        if job not in ("chief", "worker", "evaluator", "ps"):
            raise KerasbertError(f"TF_CONFIG cluster has an unknown job {job!r} (expected chief and worker)")
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise KerasbertError(f"TF_CONFIG cluster job {job!r} must list host:port addresses")
    if "ps" in cluster or "evaluator" in cluster:
        raise KerasbertError("TF_CONFIG lists ps or evaluator jobs; kerasbert trains with chief/worker clusters only")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise KerasbertError('TF_CONFIG needs a "task" object with "type" and "index"')
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise KerasbertError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise KerasbertError(f"TF_CONFIG task index {index!r} is out of range: job {task_type!r} has "
                             f"{len(cluster[task_type])} task(s)")
    if len(cluster.get("chief", [])) > 1:
        raise KerasbertError("TF_CONFIG cluster has more than one chief")
    workers = sum(len(addresses) for addresses in cluster.values())
    return Task(type=task_type, index=index, workers=workers, has_chief_job="chief" in cluster)


def split_cpu(devices):
    """Expose the CPU as `devices` logical devices (must run before TensorFlow starts)."""
    if devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        configured = tf.config.get_logical_device_configuration(cpu) or []
        if len(configured) != devices:
            raise KerasbertError(f"`logical_cpu_devices` {devices}: TensorFlow has already started with "
                                 f"{max(len(configured), 1)} CPU device(s) in this process") from None


def any_worker(strategy):
    """`agreed(flag)`: whether `flag` is true on any worker of `strategy`'s cluster, the same answer on
    every worker. A collective: every worker calls it at the same point of its program."""
    every_replica = values_of_every_replica(strategy)

    def agreed(flag):
        return bool(every_replica([1.0 if flag else 0.0]).max() > 0)

    return agreed


def values_of_every_replica(strategy):
    """`gathered(values)`: the list of numbers `values` of every replica of `strategy`'s cluster, one
    row each, the same array on every worker. A collective, as `any_worker`."""
    @tf.function  # run eagerly, every call costs more and TensorFlow warns about it
    def gathered(values):
        return strategy.gather(strategy.run(lambda: tf.identity(values)[tf.newaxis]), axis=0)

    return lambda values: gathered(tf.constant(values, tf.float64)).numpy()


def tpu_attached(environ=os.environ):
    return bool(environ.get("TPU_NAME") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def make_strategy(name, logical_cpu_devices=0, environ=os.environ, peer_timeout=600):
    """The `tf.distribute.Strategy` for `--strategy name`, with a clear error when it cannot run here.

    A multi-worker strategy is made once every peer of TF_CONFIG has started (`wait_for_peers`),
    and its collectives give up after `peer_timeout` seconds (0: never) on a peer that stopped
    answering: TensorFlow alone would wait forever, unable to take SIGTERM meanwhile.
    """
    if name not in STRATEGIES:
        raise KerasbertError(f"`strategy` must be one of {', '.join(STRATEGIES)}, got {name!r}")
    task = cluster_task(environ)
    split_cpu(logical_cpu_devices)
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        name = ("tpu" if tpu_attached(environ) else "multi-worker" if task.workers > 1
                else "mirrored" if len(gpus) > 1 else "default")
    if task.workers > 1 and name != "multi-worker":
        raise KerasbertError(f"TF_CONFIG describes a {task.workers}-task cluster, but `strategy` is {name}; "
                             "use `strategy` multi-worker (or auto), or unset TF_CONFIG")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
    if name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(devices or [d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi-worker":
        if task.workers < 2 and not environ.get("TF_CONFIG"):
            raise KerasbertError("`strategy` multi-worker needs TF_CONFIG describing the cluster and this task")
        wait_for_peers(task, json.loads(environ["TF_CONFIG"])["cluster"], peer_timeout)
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=peer_timeout or None)
        return MultiWorkerStrategy(communication_options=options)
    return tpu_strategy(environ)


def wait_for_peers(task, cluster, timeout):
    """Return once every other task of `cluster` listens on its address, or raise after `timeout`
    seconds (0: never) naming those that did not. Until TensorFlow's server takes it over, this
    task's own port is held open here, so its peers see it waiting too. (TensorFlow's own wait
    for a peer cannot be interrupted, not even by SIGTERM, and has no time-out.)"""
    own = cluster[task.type][task.index]
    peers = {f"{job}-{index}": address for job, addresses in cluster.items()
             for index, address in enumerate(addresses) if (job, index) != (task.type, task.index)}
    listener = socket.socket(socket.AF_INET6 if own.startswith("[") else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(own.rsplit(":", 1)[1])))
        listener.listen(64)
    except OSError as error:
        listener.close()
        raise KerasbertError(f"{task.name} cannot listen on {own} ({error.strerror}): is another process using "
                             "that port?") from None
    deadline = time.monotonic() + timeout if timeout else float("inf")
    try:
        while peers:
            peers = {name: address for name, address in peers.items() if not listening(address)}
            if peers and time.monotonic() > deadline:
                missing = ", ".join(f"{name} ({address})" for name, address in peers.items())
                raise KerasbertError(f"{task.name} waited {timeout} s for {missing}, which did not start: start the "
                                     "same command on every worker of TF_CONFIG, or check its addresses "
                                     "(`peer_timeout`)")
            time.sleep(0.2 if peers else 0)
    finally:
        listener.close()  # unaccepted connections are reset, so TensorFlow can bind the port at once


def listening(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def tpu_strategy(environ):
    if not tpu_attached(environ):
        raise KerasbertError("`strategy` tpu: no TPU is attached to this machine (no TPU_NAME, no /dev/accel*); "
                             "run on a Cloud TPU VM or set TPU_NAME")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=environ.get("TPU_NAME", "local"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise KerasbertError(f"`strategy` tpu: no TPU is available here ({first_line(error)})") from None
    return tf.distribute.TPUStrategy(resolver)


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` accepts what Keras 3's `fit` passes it.

    Keras 3 (checked up to 3.15.1) calls `strategy.reduce` twice in ways that
    fail in multi-worker mode (keras-team/keras#20329, #20585; tensorflow/tensorflow#72388):

    - before training it reduces the first input batch, a dict of token-id
      tensors, only to learn shapes and dtypes for a symbolic build. A
      cross-worker mean of token ids means nothing, and fails as soon as the
      workers' length-bucketed batches differ in width, so a structure is
      reduced to this worker's own values;
    - every step it reduces the scalar logs with `axis=0`, which TensorFlow
      rejects for rank-0 values ("Invalid reduction dimension 0 for input with
      0 dimensions"); the mean over axis 0 of a scalar is its cross-replica
      mean, so `axis` is dropped.

    `tests/test_distribution.py` checks that the plain strategy still fails in
    `fit`, so this subclass can be retired when upstream fixes it.
    """

    def reduce(self, reduce_op, value, axis):
        if len(tf.nest.flatten(value)) > 1:
            return tf.nest.map_structure(lambda part: self.experimental_local_results(part)[0], value)
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def free_loopback_ports(count):
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def loopback_cluster(workers):
    """A TF_CONFIG cluster of `workers` workers on this machine (127.0.0.1): several local
    processes, each started with its own task index, make a multi-worker run to test on."""
    return {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(workers)]}
