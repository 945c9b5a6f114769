"""The processes of the PRDiT family by name: the one place a new process is registered."""

from __future__ import annotations

from prdit.diffusion.consistency import ConsistencyModel
from prdit.diffusion.flow import FlowMatching
from prdit.diffusion.ian import IaNDiffusion
from prdit.diffusion.process import Process
from prdit.errors import ConfigError

PROCESSES: dict[str, type[Process]] = {"ian": IaNDiffusion, "flow": FlowMatching, "consistency": ConsistencyModel}


def create_process(kind: str = "ian", **settings) -> Process:
    """A registered process by kind, with its settings (unknown kinds or settings raise ``ConfigError``)."""
    if kind not in PROCESSES:
        raise ConfigError(f"unknown process '{kind}'; choose one of {', '.join(PROCESSES)}")
    try:
        return PROCESSES[kind](**settings)
    except TypeError as err:
        raise ConfigError(f"process '{kind}' does not take these settings: {err}") from None


def process_from_dict(values: dict) -> Process:
    """Inverse of :meth:`Process.to_dict`; ``values`` must name the process's ``kind``."""
    if "kind" not in values:
        raise ConfigError(f"the process settings {values} do not name the process; add \"kind\": one of "
                          f"{', '.join(repr(k) for k in PROCESSES)}")
    values = dict(values)
    return create_process(values.pop("kind"), **values)
