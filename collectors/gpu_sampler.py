"""GPU sampler: NVML readings -> OTLP metrics (OTel SDK) -> Observatory's /v1/metrics.

    python -m collectors.gpu_sampler --endpoint http://observatory:8000/v1/metrics --key KEY --interval 5
    python manage.py gpu_sampler ...   (the same, from the Django project)

Reads every GPU through `nvidia-ml-py` (imported as `pynvml`; optional: requirements-gpu.in)
and exports the same canonical GPU series that scraping a DCGM exporter gives
(collectors.prometheus): `hw.gpu.utilization` (fraction, hw.gpu.task=general),
`observatory.gpu.memory_copy.utilization`, `hw.gpu.memory.usage` / `.limit` (bytes),
`hw.power` and `observatory.gpu.power.limit` (W), `hw.energy` (J, counter),
`hw.temperature` (Cel), `observatory.gpu.sm_clock` (MHz); attributes `hw.id` (UUID),
`hw.model` (name), `gpu.index`; resource `host.name` and `service.instance.id` (the serving
instance). Memory usage and limit are gauges here, as DCGM's are, though OTel's hardware
conventions make them up-down counters: one kind per canonical name.

Without an NVIDIA driver it exits with status 2 and "no NVIDIA driver found (NVML: ...)".
No Django imports.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from collectors.prometheus import (
    GPU_ENERGY,
    GPU_MEMORY_COPY_UTILIZATION,
    GPU_MEMORY_LIMIT,
    GPU_MEMORY_USAGE,
    GPU_POWER,
    GPU_POWER_LIMIT,
    GPU_SM_CLOCK,
    GPU_TEMPERATURE,
    GPU_UTILIZATION,
)

EXIT_NO_DRIVER = 2
SERVICE_NAME = "observatory-gpu-sampler"


class NoDriver(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one moment, in NVML's own units; None where the GPU does not support a field."""

    index: int
    uuid: str
    name: str
    gpu_util_percent: float | None = None
    memory_util_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_mw: float | None = None
    power_limit_mw: float | None = None
    energy_mj: int | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None


# --------------------------------------------------------------------------- NVML


def load_nvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise NoDriver("nvidia-ml-py is not installed: pip install -r requirements-gpu.in") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NoDriver(f"no NVIDIA driver found (NVML: {exc})") from None
    return pynvml


def _optional(nvml: ModuleType, call: Callable[..., Any], *args: Any) -> Any:
    """call(*args), or None where the GPU does not support it (or we may not read it)."""
    try:
        return call(*args)
    except nvml.NVMLError_NotSupported:
        return None
    except nvml.NVMLError_NoPermission:
        return None


def _temperature(nvml: ModuleType, handle: Any) -> float | None:
    # nvmlDeviceGetTemperature is deprecated: use the versioned call whenever the binding and
    # the driver's library have it, the old one only where they do not.
    versioned = getattr(nvml, "nvmlDeviceGetTemperatureV", None)
    if versioned is not None:
        try:
            return float(versioned(handle, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError_FunctionNotFound:
            pass
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_NoPermission):
            return None
    legacy = _optional(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    return None if legacy is None else float(legacy)


def read_gpus(nvml: ModuleType) -> list[GpuReading]:
    readings = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        utilization = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        power = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        power_limit = _optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        energy = _optional(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        sm_clock = _optional(nvml, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)
        readings.append(
            GpuReading(
                index=index,
                uuid=str(nvml.nvmlDeviceGetUUID(handle)),
                name=str(nvml.nvmlDeviceGetName(handle)),
                gpu_util_percent=float(utilization.gpu) if utilization is not None else None,
                memory_util_percent=float(utilization.memory) if utilization is not None else None,
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
                power_mw=float(power) if power is not None else None,
                power_limit_mw=float(power_limit) if power_limit is not None else None,
                energy_mj=int(energy) if energy is not None else None,
                temperature_c=_temperature(nvml, handle),
                sm_clock_mhz=float(sm_clock) if sm_clock is not None else None,
            )
        )
    return readings


# --------------------------------------------------------------------------- readings -> observations


class EnergySinceStart:
    """NVML's energy counter counts from driver load; OTLP's cumulative counter claims to count
    from the SDK's start time. Report energy since this sampler's first reading, so the first
    export is the energy of its own interval, not of the days since the driver loaded. A
    reading below the baseline (driver reloaded) starts a new baseline at zero."""

    def __init__(self) -> None:
        self._baseline: dict[str, int] = {}
        self._offset: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def joules(self, uuid: str, energy_mj: int) -> float:
        if uuid not in self._baseline:
            self._baseline[uuid] = energy_mj
            self._offset[uuid] = 0
        elif energy_mj < self._last[uuid]:
            # Counted so far stays counted; the reloaded driver counts again from its zero.
            self._offset[uuid] += self._last[uuid] - self._baseline[uuid]
            self._baseline[uuid] = 0
        self._last[uuid] = energy_mj
        return (self._offset[uuid] + energy_mj - self._baseline[uuid]) / 1000.0


Observations = dict[str, list[tuple[float, dict[str, Any]]]]

_UNITS = {
    GPU_UTILIZATION: "1", GPU_MEMORY_COPY_UTILIZATION: "1", GPU_MEMORY_USAGE: "By", GPU_MEMORY_LIMIT: "By",
    GPU_POWER: "W", GPU_POWER_LIMIT: "W", GPU_ENERGY: "J", GPU_TEMPERATURE: "Cel", GPU_SM_CLOCK: "MHz",
}  # fmt: skip


def observations(readings: Iterable[GpuReading], energy: EnergySinceStart) -> Observations:
    """Readings as (value, attributes) per canonical metric name, in canonical units."""
    out: Observations = {name: [] for name in _UNITS}
    for r in readings:
        attributes: dict[str, Any] = {"hw.id": r.uuid, "hw.model": r.name, "gpu.index": r.index}
        if r.gpu_util_percent is not None:
            out[GPU_UTILIZATION].append((r.gpu_util_percent / 100, {**attributes, "hw.gpu.task": "general"}))
        if r.memory_util_percent is not None:
            out[GPU_MEMORY_COPY_UTILIZATION].append((r.memory_util_percent / 100, attributes))
        if r.memory_used_bytes is not None:
            out[GPU_MEMORY_USAGE].append((float(r.memory_used_bytes), attributes))
        if r.memory_total_bytes is not None:
            out[GPU_MEMORY_LIMIT].append((float(r.memory_total_bytes), attributes))
        if r.power_mw is not None:
            out[GPU_POWER].append((r.power_mw / 1000, attributes))
        if r.power_limit_mw is not None:
            out[GPU_POWER_LIMIT].append((r.power_limit_mw / 1000, attributes))
        if r.energy_mj is not None:
            out[GPU_ENERGY].append((energy.joules(r.uuid, r.energy_mj), attributes))
        if r.temperature_c is not None:
            out[GPU_TEMPERATURE].append((r.temperature_c, attributes))
        if r.sm_clock_mhz is not None:
            out[GPU_SM_CLOCK].append((r.sm_clock_mhz, attributes))
    return out


class _OneReadPerCollection:
    """Every instrument's callback in one collection shares one NVML read."""

    def __init__(self, read: Callable[[], Sequence[GpuReading]]) -> None:
        self._read = read
        self._energy = EnergySinceStart()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._current: Observations = {}

    def take(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            if name not in self._pending:
                # A new collection: read once, then hand each instrument its share.
                self._current = observations(self._read(), self._energy)
                self._pending = set(_UNITS)
            self._pending.discard(name)
            return self._current.get(name, [])


def build_meter_provider(
    exporter: Any,
    read: Callable[[], Sequence[GpuReading]],
    *,
    host_name: str,
    instance: str,
    interval_seconds: float,
) -> Any:
    """A MeterProvider whose observable instruments report `read()` every interval through `exporter`."""
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_seconds * 1000)
    resource = Resource.create({"service.name": SERVICE_NAME, "host.name": host_name, "service.instance.id": instance})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("observatory.gpu_sampler")
    shared = _OneReadPerCollection(read)

    def callback(name: str) -> Callable[[CallbackOptions], list[Observation]]:
        return lambda options: [Observation(value, attributes) for value, attributes in shared.take(name)]

    for name, unit in _UNITS.items():
        if name == GPU_ENERGY:
            meter.create_observable_counter(name, callbacks=[callback(name)], unit=unit)
        else:
            meter.create_observable_gauge(name, callbacks=[callback(name)], unit=unit)
    return provider


# --------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu_sampler", description="Send NVML GPU readings to Observatory as OTLP metrics."
    )
    p.add_argument("--endpoint", help="OTLP/HTTP metrics URL, e.g. http://observatory:8000/v1/metrics")
    p.add_argument("--key", help="an Observatory ingest key")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between readings (default 5)")
    p.add_argument(
        "--instance", default="", help="the serving instance (resource service.instance.id); default: host name"
    )
    p.add_argument("--host-name", default="", help="resource host.name; default: this machine's")
    p.add_argument("--print", action="store_true", help="print one reading as JSON and exit (no export)")
    return p


def run(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        nvml = load_nvml()
    except NoDriver as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_DRIVER
    if args.print:
        print(json.dumps([asdict(reading) for reading in read_gpus(nvml)], indent=2))
        return 0
    if not args.endpoint or not args.key:
        print("--endpoint and --key are required (or --print)", file=sys.stderr)
        return 64
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    host_name = args.host_name or socket.gethostname()
    exporter = OTLPMetricExporter(endpoint=args.endpoint, headers={"Authorization": f"Bearer {args.key}"}, timeout=10)
    provider = build_meter_provider(
        exporter, lambda: read_gpus(nvml), host_name=host_name, instance=args.instance or host_name,
        interval_seconds=args.interval,
    )  # fmt: skip
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"gpu_sampler: {nvml.nvmlDeviceGetCount()} GPU(s) -> {args.endpoint} every {args.interval}s", flush=True)
    stop.wait()
    provider.shutdown()  # a final export
    nvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run())
