"""Traffic simulator: realistic LLM traffic as OpenTelemetry spans, sent over real OTLP/HTTP.

Used for the demo data, for load and timing checks, and by tests that compare what was sent
(`SimulationSummary`) with what Observatory stored. Run `python -m collectors.simulator --help`.
"""

from __future__ import annotations

from collectors.simulator.incidents import INCIDENTS, Incident, parse_incident, register
from collectors.simulator.runner import (
    DEFAULT_ENDPOINT,
    DEFAULT_REQUESTS_PER_DAY,
    Simulator,
    build_exporter,
    run_live,
    simulate,
)
from collectors.simulator.summary import SimulationSummary, UsageTotals

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REQUESTS_PER_DAY",
    "INCIDENTS",
    "Incident",
    "SimulationSummary",
    "Simulator",
    "UsageTotals",
    "build_exporter",
    "parse_incident",
    "register",
    "run_live",
    "simulate",
]
