"""The GPU sampler: the no-driver exit (the real NVML path on a machine without a GPU), the
readings -> canonical observations conversion on recorded readings, and those readings
exported through the real OTel SDK and OTLP exporter into the live receiver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

from apps.accounts.models import IngestKey, Project
from apps.gpu.models import MetricPoint, MetricSeries
from collectors import gpu_sampler
from collectors.gpu_sampler import EnergySinceStart, GpuReading, build_meter_provider, observations
from tests.gpu.exposition_server import FIXTURES

ROOT = Path(__file__).resolve().parents[2]


def recorded() -> list[list[GpuReading]]:
    document = json.loads((FIXTURES / "nvml_readings.json").read_text())
    return [[GpuReading(**reading) for reading in sample] for sample in document["readings"]]


def _driver_present() -> bool:
    try:
        gpu_sampler.load_nvml()
    except gpu_sampler.NoDriver:
        return False
    return True


@pytest.mark.skipif(_driver_present(), reason="this machine has an NVIDIA driver")
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "collectors.gpu_sampler"],
        [sys.executable, "manage.py", "gpu_sampler"],
    ],
)
def test_without_a_driver_it_says_so_and_exits_non_zero(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--endpoint", "http://127.0.0.1:9/v1/metrics", "--key", "k", "--interval", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == gpu_sampler.EXIT_NO_DRIVER, result.stderr
    assert "no NVIDIA driver found (NVML: " in result.stderr


def test_readings_become_canonical_observations() -> None:
    first, _ = recorded()
    out = observations(first, EnergySinceStart())
    gpu0 = {"hw.id": "GPU-5f1c3a2e-8d4b-4c1e-9a7f-2b3c4d5e6f70", "hw.model": "NVIDIA H100 80GB HBM3", "gpu.index": 0}
    assert out["hw.gpu.utilization"][0] == (0.87, {**gpu0, "hw.gpu.task": "general"})
    assert out["observatory.gpu.memory_copy.utilization"][0] == (0.41, gpu0)
    assert out["hw.gpu.memory.usage"][0] == (78563573760.0, gpu0)
    assert out["hw.gpu.memory.limit"][0] == (85520809984.0, gpu0)
    assert out["hw.power"][0] == (pytest.approx(512.337), gpu0)  # mW -> W
    assert out["observatory.gpu.power.limit"][0] == (700.0, gpu0)
    assert out["hw.temperature"][0] == (61, gpu0)
    assert out["observatory.gpu.sm_clock"][0] == (1980, gpu0)
    # Energy counts from the sampler's first reading, not from driver load.
    assert out["hw.energy"][0] == (0.0, gpu0)


def test_energy_counts_from_the_first_reading_and_survives_a_driver_reload() -> None:
    energy = EnergySinceStart()
    assert [energy.joules("g", mj) for mj in (5_000_000, 5_002_500, 1_000, 3_000)] == [0.0, 2.5, 3.5, 5.5]


def _fake_nvml(temperature_v: Any) -> SimpleNamespace:
    class NVMLError(Exception):
        pass

    class FunctionNotFound(NVMLError):
        pass

    class NotSupported(NVMLError):
        pass

    nvml = SimpleNamespace(
        NVMLError_FunctionNotFound=FunctionNotFound, NVMLError_NotSupported=NotSupported,
        NVMLError_NoPermission=type("NoPermission", (NVMLError,), {}), NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetTemperature=lambda handle, sensor: 48,
    )  # fmt: skip
    if temperature_v == "missing-in-driver":

        def versioned(handle: object, sensor: int) -> int:
            raise FunctionNotFound()

        nvml.nvmlDeviceGetTemperatureV = versioned
    elif temperature_v is not None:
        nvml.nvmlDeviceGetTemperatureV = lambda handle, sensor: temperature_v
    return nvml


@pytest.mark.parametrize(("temperature_v", "expected"), [(63, 63.0), (None, 48.0), ("missing-in-driver", 48.0)])
def test_temperature_prefers_the_versioned_call(temperature_v: Any, expected: float) -> None:
    # NVML itself cannot run here (no GPU): a stand-in module with NVML's names checks the choice.
    assert gpu_sampler._temperature(_fake_nvml(temperature_v), object()) == expected  # type: ignore[arg-type]


@pytest.mark.django_db(transaction=True)
def test_recorded_readings_through_the_real_sdk_and_exporter(live_server: Any) -> None:
    _, key = IngestKey.issue(Project.objects.create(name="gpu"), "sampler")
    exporter = OTLPMetricExporter(
        endpoint=f"{live_server.url}/v1/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    samples = iter(recorded())
    provider = build_meter_provider(
        exporter, lambda: next(samples), host_name="gpu-node-7", instance="vllm-0", interval_seconds=3600
    )
    assert provider.force_flush(30_000)
    assert provider.force_flush(30_000)
    provider.shutdown()

    names = set(MetricSeries.objects.values_list("name", flat=True))
    assert names == {
        "hw.gpu.utilization", "observatory.gpu.memory_copy.utilization", "hw.gpu.memory.usage",
        "hw.gpu.memory.limit", "hw.power", "observatory.gpu.power.limit", "hw.energy", "hw.temperature",
        "observatory.gpu.sm_clock",
    }  # fmt: skip
    power = MetricSeries.objects.get(name="hw.power", attributes__contains={"gpu.index": 0})
    assert power.resource["host.name"] == "gpu-node-7"
    assert power.resource["service.instance.id"] == "vllm-0"
    assert power.unit == "W"
    values = list(
        MetricPoint.objects.filter(series_id=power.series_id).order_by("time").values_list("value", flat=True)
    )
    assert values == [pytest.approx(512.337), pytest.approx(540.12)]
    energy = MetricSeries.objects.get(name="hw.energy", attributes__contains={"gpu.index": 0})
    assert (energy.kind, energy.monotonic) == ("sum", True)
    increases = list(
        MetricPoint.objects.filter(series_id=energy.series_id).order_by("time").values_list("increase", flat=True)
    )
    assert increases == [0.0, pytest.approx(2620.0)]  # J used between the two readings
    # GPU 1 stopped reporting its SM clock in the second reading: one point, not a zero.
    clock = MetricSeries.objects.get(name="observatory.gpu.sm_clock", attributes__contains={"gpu.index": 1})
    assert MetricPoint.objects.filter(series_id=clock.series_id).count() == 1


def test_read_gpus_maps_nvml_calls_and_skips_unsupported_fields() -> None:
    # NVML cannot run here (no GPU): a stand-in with NVML's names and units (mW, mJ, bytes).
    nvml = _fake_nvml(63)

    def unsupported(*args: object) -> None:
        raise nvml.NVMLError_NotSupported()

    nvml.NVML_CLOCK_SM = 1
    nvml.nvmlDeviceGetCount = lambda: 2
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA H200"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=90, memory=40)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=10 * 2**30, total=141 * 2**30, free=131 * 2**30)
    nvml.nvmlDeviceGetPowerUsage = lambda h: 650_500 if h == 0 else unsupported()
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: 123_456_789
    nvml.nvmlDeviceGetClockInfo = lambda h, clock: 1980 if clock == 1 else 0
    first, second = gpu_sampler.read_gpus(nvml)  # type: ignore[arg-type]
    assert first == GpuReading(
        index=0, uuid="GPU-0", name="NVIDIA H200", gpu_util_percent=90.0, memory_util_percent=40.0,
        memory_used_bytes=10 * 2**30, memory_total_bytes=141 * 2**30, power_mw=650_500.0, power_limit_mw=700_000.0,
        energy_mj=123_456_789, temperature_c=63.0, sm_clock_mhz=1980.0,
    )  # fmt: skip
    assert second.power_mw is None and second.power_limit_mw == 700_000.0
