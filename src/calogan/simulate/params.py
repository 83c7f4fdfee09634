"""Parameters of the parametrized simulator: frozen dataclasses, JSON load/save, shipped defaults."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from calogan.data import particle_code, particle_name
from calogan.errors import ConfigError
from calogan.runtime import write_text

__all__ = [
    "PARAMS_FORMAT",
    "SUPPORTED_PARTICLES",
    "Deposit",
    "EMParams",
    "HadronicParams",
    "Halo",
    "Longitudinal",
    "Radial",
    "Sampling",
    "SimParams",
    "default_params",
    "load_params",
    "save_params",
]

PARAMS_FORMAT = "calogan-simulate-params"
PARAMS_VERSION = 7
# Keys each version added, by section: a file of an older version reads with their defaults,
# which leave out what they model (version 2: the soft photons and quanta, light tail, early
# and late spots, the energy dependence of the pion model; version 3: a core radius growing
# as a power of the shower's age, pi0s of later generations; version 4: a tail even in the
# youngest shower; version 5: active deposits in larger grains as the shower ages; version 6:
# the spots of a depth spread along the axis; version 7: a small shower's extra depths
# start early), so it gives
# the showers it gave before, but for the active convention's sampling (``deposit.sampled_share``).
_ADDED_IN = {
    2: {
        "em.halo": None,
        "em.radial": {"outer_spots", "core_age"},
        "em.deposit": {"early_spots", "early_squeeze", "late_spots", "late_stretch", "lateral", "wander", "weight_shape"},
        "hadronic": {"visible_slope", "r_slope"},
    },
    3: {"em.radial": {"core_power"}, "hadronic": {"em_late"}},
    4: {"em.radial": {"core_max"}},
    5: {"em.sampling": {"grain_age"}},
    6: {"em.deposit": {"depth_spread"}},
    7: {"em.deposit": {"floor_early"}},
}

# Particles the simulator knows and the shipped parameter file each one uses. Electrons and
# negative pions use the parameters fitted on their antiparticles: the showers differ by
# less than the model's accuracy (charge-symmetric approximation).
SUPPORTED_PARTICLES = {"e+": "eplus", "e-": "eplus", "gamma": "gamma", "pi+": "piplus", "pi-": "piplus"}
EM_PARTICLES = ("e+", "e-", "gamma")


def _require(obj, **conditions: bool) -> None:
    """Raise ConfigError naming the first field whose condition is False."""
    for name, ok in conditions.items():
        if not ok:
            raise ConfigError(f"{type(obj).__name__}.{name} = {getattr(obj, name)!r} is out of range")


@dataclass(frozen=True)
class Longitudinal:
    """Longitudinal Gamma profile dE/dt ~ t^(alpha-1) exp(-beta t), t in radiation lengths.

    GFlash (hep-ex/0001020, eqs. 13-16, sampling calorimeters) gives, with y = E/E_c:
    exp<ln T> = ln y - 0.812 - 0.59 F_s and exp<ln alpha> = 0.81 + (0.458 + 2.26/Z) ln y
    - 0.444 F_s, sigma(ln T) = 1/(-2.5 + 1.25 ln y), sigma(ln alpha) = 1/(-0.82 + 0.79 ln y),
    corr(ln T, ln alpha) = 0.784 - 0.023 ln y. The fitted corrections add
    ``t_offset + t_slope ln y`` to exp<ln T>, ``a_offset + a_slope ln y`` to exp<ln alpha> and
    scale both sigmas by ``sigma_scale``. ``conversion_x0`` is the mean depth (X0) at which the
    shower starts: 9/7 for photons (pair-production mean free path), 0 for e+-. An incident
    e+- also ionises as a minimum-ionising track over its first ``track_x0`` X0, energy taken
    from the shower: the Gamma profile vanishes at t = 0, where a real shower already deposits
    the primary's ionisation (what a presampler or the first strips see).
    """

    t_offset: float = 0.0
    t_slope: float = 0.0
    a_offset: float = 0.0
    a_slope: float = 0.0
    sigma_scale: float = 1.0
    conversion_x0: float = 0.0
    track_x0: float = 0.0

    def __post_init__(self) -> None:
        _require(self, sigma_scale=self.sigma_scale >= 0, conversion_x0=self.conversion_x0 >= 0, track_x0=self.track_x0 >= 0)


@dataclass(frozen=True)
class Radial:
    """Core + tail radial profile f(r) = p 2r Rc^2/(r^2+Rc^2)^2 + (1-p) 2r Rt^2/(r^2+Rt^2)^2.

    r in Moliere radii, Rc, Rt and p functions of the shower age tau = t/T and E (GFlash
    eqs. 29-31, homogeneous media, Z the effective charge); the fit scales Rc, Rt and p.
    Radii beyond ``r_max`` are not drawn. With ``outer_spots`` k > 1 a spot's radial
    quantile v is drawn as 1 - (1 - v)^k and its energy weighted by k (1 - v)^(k - 1): the
    same mean profile from more, lighter spots away from the axis. The core radius grows as
    z1 + z2 tau^``core_power`` (GFlash: linearly): a young shower's energy is carried by a
    few energetic particles close to its axis, and Geant4's first layer holds 75 % of a
    50 GeV e+'s energy within 5 mm of the axis where a linear growth puts 63 %. The core
    probability is capped at ``core_max`` (GFlash: 1): scaled up to fit the core of the
    shower's maximum, GFlash's p reaches 1 over the first ~0.3-0.8 of the age, and the first
    layer gets no tail at all, where Geant4 puts 2x the simulator's energy 2-8 cm from the
    axis of a 50 GeV e+ (wide-angle soft particles from the first radiation lengths on).
    """

    core_scale: float = 1.0
    core_age: float = 1.0  # scales the age term z2 tau of Rc apart: the core of a young shower and of an old one
    tail_scale: float = 1.0
    tail_early: float = 1.0  # scales the early-age term exp(-2.59 (tau - 0.645)) of Rt
    p_scale: float = 1.0
    r_max: float = 5.0  # Moliere radii: the profile's r^-3 tail is cut here (see em_spots)
    outer_spots: float = 1.0  # >= 1: spots drawn further out, more numerous and lighter there (see em_spots)
    core_power: float = 1.0  # the core radius's age term is z2 tau^core_power
    core_max: float = 1.0  # the core probability's cap: 1 - core_max of the energy is in the tail at every age

    def __post_init__(self) -> None:
        _require(
            self,
            core_scale=self.core_scale > 0,
            core_age=self.core_age >= 0,
            tail_scale=self.tail_scale > 0,
            tail_early=self.tail_early >= 0,
            p_scale=self.p_scale >= 0,
            r_max=self.r_max > 0,
            outer_spots=self.outer_spots >= 1,
            core_power=0.1 <= self.core_power <= 10,
            core_max=0 < self.core_max <= 1,
        )


@dataclass(frozen=True)
class Halo:
    """Soft photons: the many small deposits a shower leaves far from its core.

    Most of a shower's energy is deposited by charged particles near its axis, but the
    photons of a few hundred keV to a few MeV at its end (Compton scattering, photoelectric
    absorption) travel centimetres before they deposit, one quantum at a time: they light
    up the cells far from the axis and the back layer. A shower of E GeV sends a Poisson
    number with mean ``per_gev`` E^``exponent`` of them, each from one of its spots, over
    ``min_flight_x0`` plus an exponential flight of mean ``flight_x0`` radiation lengths of
    the reference medium (the photons that fly less land among the shower's own spots),
    and ``near_per_gev`` E^``exponent`` more over an exponential flight of mean
    ``near_flight_x0`` (those that light up the thin edges of the core), in a direction of density (1 + ``forward`` cos)/2 in the cosine of its angle to the
    axis. A quantum deposits a log-normal energy of median ``energy_mev`` MeV and log-width
    ``energy_sigma`` (a share ``tiny`` of them a log-uniform energy from 1 keV to that
    median: track ends and absorbed low-energy photons), taken from the shower. In the
    active convention a quantum is seen whole with probability ``whole``, in part or not at
    all, its mean share ``ehat`` f_mip (soft photons convert mostly in the high-Z absorber;
    ``em.seen``). Spots lighter than ``merge`` mean
    quanta become one quantum or nothing (``em.quanta``), so that the thin parts of a
    shower, too, deposit their energy one quantum at a time. ``per_gev = 0`` and
    ``merge = 0`` leave both out.
    """

    per_gev: float = 0.0
    exponent: float = 0.5
    flight_x0: float = 2.0
    min_flight_x0: float = 0.0
    near_per_gev: float = 0.0
    near_flight_x0: float = 1.0
    forward: float = 0.0
    energy_mev: float = 0.7
    energy_sigma: float = 1.0
    tiny: float = 0.0
    ehat: float = 0.6
    whole: float = 0.0
    merge: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self,
            per_gev=self.per_gev >= 0,
            flight_x0=self.flight_x0 > 0,
            min_flight_x0=self.min_flight_x0 >= 0,
            near_per_gev=self.near_per_gev >= 0,
            near_flight_x0=self.near_flight_x0 > 0,
            forward=-1 <= self.forward <= 1,
            energy_mev=self.energy_mev > 0,
            energy_sigma=self.energy_sigma >= 0,
            tiny=0 <= self.tiny <= 1,
            ehat=self.ehat > 0,
            whole=0 <= self.whole <= 1,
            merge=0 <= self.merge <= 1,
        )


@dataclass(frozen=True)
class Deposit:
    """How a shower's energy becomes spots, and what the calorimeter loses.

    Each shower deposits E_inc (1 - loss) in spots; loss >= 0 is Gamma distributed with mean
    ``loss_mean + loss_mean_stochastic/sqrt(E)`` and spread sqrt(s^2/E + c^2) with
    s = ``loss_sigma_stochastic``, c = ``loss_sigma_constant`` (E in GeV): backscatter,
    nuclear losses and what the longitudinal profile does not carry. A shower has
    ``spots_per_gev * E^spots_exponent`` depths, clipped to [``min_spots``, ``max_spots``],
    and ``lateral`` spots at each (one draw of the depth, its age and radial profile serves
    them; their radial quantiles are stratified). Spot energies share the shower's energy
    with random weights, Gamma of shape ``weight_shape`` per depth (1: exponential), so that
    cell energies are continuous rather than multiples of a spot energy.

    Where Geant4 spreads energy over many small deposits the spots are made more numerous
    and lighter, the mean shower unchanged (importance sampling): shares ``early_spots`` and
    ``late_spots`` of the depths come from the profile compressed by ``early_squeeze`` and
    stretched by ``late_stretch``, weighted by the ratio of the densities (``em.em_spots``;
    ``Radial.outer_spots`` does the same outwards). The shower's axis wanders by
    ``wander`` / sqrt(E/GeV) mm per sqrt(X0) before and after the maximum. Past the
    shower's mean maximum T the spots of a depth t spread along the axis, each at
    t + ``depth_spread`` (U - 1/2) (t - T) with its own uniform U, so that they cross a
    layer's face independently. A share ``floor_early`` of the depths that ``min_spots``
    adds to a small shower comes from the compressed profile (weighted as the early ones):
    the floor is there for the hit cells of the young shower, whose energy is spread over
    many small deposits, while the tail already has the depths the shower's energy gives.
    ``lateral = 1``, zero shares, ``wander``, ``depth_spread`` and ``floor_early`` leave
    these out.
    """

    loss_mean: float = 0.007
    loss_mean_stochastic: float = 0.0
    loss_sigma_stochastic: float = 0.003
    loss_sigma_constant: float = 0.0015
    spots_per_gev: float = 150.0
    spots_exponent: float = 0.5
    min_spots: int = 60
    max_spots: int = 2000
    early_spots: float = 0.0
    early_squeeze: float = 2.0
    late_spots: float = 0.0
    late_stretch: float = 2.0
    lateral: int = 1
    wander: float = 0.0
    weight_shape: float = 1.0
    depth_spread: float = 0.0
    floor_early: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self,
            loss_mean=0 <= self.loss_mean < 1,
            loss_sigma_stochastic=self.loss_sigma_stochastic >= 0,
            loss_sigma_constant=self.loss_sigma_constant >= 0,
            spots_per_gev=self.spots_per_gev > 0,
            min_spots=self.min_spots >= 1,
            max_spots=self.max_spots >= self.min_spots,
            early_spots=0 <= self.early_spots < 1,
            early_squeeze=self.early_squeeze >= 1,
            late_spots=0 <= self.late_spots < 1 - self.early_spots,
            late_stretch=self.late_stretch >= 1,
            lateral=self.lateral >= 1,
            wander=self.wander >= 0,
            weight_shape=self.weight_shape > 0,
            depth_spread=0 <= self.depth_spread < 2,
            floor_early=0 <= self.floor_early <= 1,
        )


@dataclass(frozen=True)
class Sampling:
    """Active (liquid-argon) share of the deposits: the ``active`` convention.

    A shower puts ``ehat`` f_mip of its energy in the active material (e/mip times the MIP
    sampling fraction of the layer stack): Geant4 shows this share constant in energy and
    uncorrelated with the shower's profile. Among its spots the share is distributed as
    1 + ``ehat_boost`` exp(-tau/``ehat_tau``) (tau = t/T, early deposits are MIP-like),
    times ``ehat_tail`` for spots of the radial tail (soft photons, whose energy the high-Z
    absorber takes more than its share of). Sampling fluctuations sigma/E = a/sqrt(E/GeV)
    with a = ``stochastic`` sqrt(MIP energy per sampling period / MeV) (Fabjan's rule) are
    drawn per cell (``deposit.sampled_share``): the active energy arrives in grains, and a
    small deposit can miss the gaps altogether.

    The grains grow at the end of the shower: there it is a bath of photons of a few MeV
    (the minimum of their attenuation in lead) that convert or scatter mostly in the
    absorber, whose electrons reach a gap rarely and then whole, where its start is charged
    tracks crossing every gap. A spot at age tau = t/<T> has its sampling variance scaled by
    g = 1 + (tau/``grain_age``)^4, and a soft quantum its chance to be seen in part divided
    by g, the means unchanged; the fourth power makes it an onset where the charged
    particles die out (Geant4, 1-100 GeV e+ cells of 1-3 MeV in the total convention: 48
    and 52 % read nonzero in the active one in the first two layers, 37 % in the back
    layer, 28-31 X0 deep). ``grain_age = 0`` leaves it out.
    """

    ehat: float = 0.77
    ehat_boost: float = 0.3
    ehat_tau: float = 1.0
    ehat_tail: float = 1.0
    stochastic: float = 0.04
    grain_age: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self,
            ehat=self.ehat > 0,
            ehat_boost=self.ehat_boost >= 0,
            ehat_tau=self.ehat_tau > 0,
            ehat_tail=self.ehat_tail > 0,
            stochastic=self.stochastic >= 0,
            grain_age=self.grain_age >= 0,
        )


@dataclass(frozen=True)
class EMParams:
    """Every parameter of an electromagnetic shower."""

    longitudinal: Longitudinal = field(default_factory=Longitudinal)
    radial: Radial = field(default_factory=Radial)
    deposit: Deposit = field(default_factory=Deposit)
    sampling: Sampling = field(default_factory=Sampling)
    halo: Halo = field(default_factory=Halo)


@dataclass(frozen=True)
class HadronicParams:
    """Parameters of the approximate charged-pion model (see ``calogan.simulate.hadronic``).

    Lengths of the hadronic part are in effective nuclear interaction lengths lambda_I of
    the layer stack. The EM fraction has mean 1 - (E/em_e0)^(em_k - 1) (Wigmans) and a Beta
    spread ``em_sigma``; the hadronic part deposits a fraction ``visible`` (E / 10 GeV)^
    ``visible_slope`` (spread ``visible_sigma``) of its energy, the rest being invisible
    (binding energy, neutrinos, slow neutrons). Its radial profile is a core + tail mixture
    whose radii ``r_core``, ``r_tail`` at 10 GeV scale as (E / 10 GeV)^``r_slope``: the
    secondary hadrons of a harder interaction spread wider. A share ``em_late`` of the EM
    part comes from pi0s of later generations of the cascade: it starts at a depth drawn
    from the hadronic profile, not at the first interaction, and leaks out of a shallow
    calorimeter as the hadronic part does (Geant4's showering pions deposit less of their
    energy in the 1.2 lambda_I CaloGAN stack as the energy rises: 0.53 of it at 1-20 GeV,
    0.38 at 80-100 GeV).
    """

    lambda_scale: float = 1.15  # pion inelastic length / lambda_I
    mip_scale: float = 1.17  # mean MIP loss / minimum ionisation (relativistic rise, deltas)
    mip_landau: float = 0.08  # Moyal width of a layer's MIP loss, relative to its mean
    mip_ehat: float = 0.93  # active share of a MIP loss / f_mip
    em_e0: float = 1.3  # GeV
    em_k: float = 0.82
    em_sigma: float = 0.15
    em_energy_scale: float = 0.3  # the EM part develops like an EM shower of this share of its energy
    em_late: float = 0.0  # share of the EM part from later generations, starting deeper
    visible: float = 0.6
    visible_slope: float = 0.0  # visible(E) = visible (E / 10 GeV)^visible_slope
    visible_sigma: float = 0.15
    alpha: float = 1.6  # hadronic Gamma profile in lambda_I
    t_max: float = 0.6  # depth of its maximum at 10 GeV, lambda_I
    t_max_slope: float = 0.1  # growth of that depth per unit of ln(E / 10 GeV), lambda_I
    r_core: float = 0.06  # lambda_I, at 10 GeV
    r_tail: float = 0.3  # lambda_I, at 10 GeV
    r_slope: float = 0.0  # both radii scale as (E / 10 GeV)^r_slope
    p_core: float = 0.6
    ehat: float = 0.85  # active share of hadronic deposits / f_mip
    stochastic: float = 0.1  # sampling term of the hadronic part, as Sampling.stochastic

    def __post_init__(self) -> None:
        _require(
            self,
            lambda_scale=self.lambda_scale > 0,
            mip_scale=self.mip_scale > 0,
            mip_landau=self.mip_landau >= 0,
            em_e0=self.em_e0 > 0,
            em_k=0 < self.em_k <= 1,
            em_sigma=self.em_sigma >= 0,
            em_energy_scale=self.em_energy_scale > 0,
            em_late=0 <= self.em_late <= 1,
            visible=0 <= self.visible <= 1,
            visible_sigma=self.visible_sigma >= 0,
            alpha=self.alpha > 1,
            t_max=self.t_max > 0,
            r_core=self.r_core > 0,
            r_tail=self.r_tail > 0,
            p_core=0 <= self.p_core <= 1,
            mip_ehat=self.mip_ehat > 0,
            ehat=self.ehat > 0,
            stochastic=self.stochastic >= 0,
        )


@dataclass(frozen=True)
class SimParams:
    """All parameters for one particle, with where they came from.

    ``provenance`` records the command, reference files and calogan version that produced
    the values; ``validation`` the calibration table summary at that time.
    """

    particle: str
    em: EMParams = field(default_factory=EMParams)
    hadronic: HadronicParams | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = particle_name(_code(self.particle))
        if name not in SUPPORTED_PARTICLES:
            raise ConfigError(f"the simulator does not model particle {self.particle!r}; supported: {', '.join(SUPPORTED_PARTICLES)}")
        object.__setattr__(self, "particle", name)
        if name not in EM_PARTICLES and self.hadronic is None:
            raise ConfigError(f"parameters for {name} need a 'hadronic' section")

    @property
    def is_hadron(self) -> bool:
        return self.particle not in EM_PARTICLES

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PARAMS_FORMAT,
            "version": PARAMS_VERSION,
            "particle": self.particle,
            "em": asdict(self.em),
            "hadronic": None if self.hadronic is None else asdict(self.hadronic),
            "provenance": self.provenance,
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "parameters") -> SimParams:
        if not isinstance(d, dict) or d.get("format") != PARAMS_FORMAT:
            raise ConfigError(f"{source}: not a calogan simulator parameter file (expected format {PARAMS_FORMAT!r})")
        version = d.get("version")
        if version not in range(1, PARAMS_VERSION + 1):
            raise ConfigError(f"{source}: parameter file version {version!r}, this calogan reads versions 1 to {PARAMS_VERSION}")
        added = _added_after(version)
        em = d.get("em")
        if not isinstance(em, dict):
            raise ConfigError(f"{source}: key 'em' must be an object")
        unknown = sorted(set(em) - set(_EM_SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: em: unknown key(s) {', '.join(unknown)}; known: {', '.join(_EM_SECTIONS)}")
        sections = {}
        for name, section in _EM_SECTIONS.items():
            where = f"em.{name}"
            if where in added and added[where] is None:  # a whole section the file's version did not have
                sections[name] = _section(section, em.get(name, {}), f"{source}: {where}", {f.name for f in fields(section)})
            else:
                sections[name] = _section(section, em.get(name), f"{source}: {where}", added.get(where, set()))
        hadronic = d.get("hadronic")
        had = None if hadronic is None else _section(HadronicParams, hadronic, f"{source}: hadronic", added.get("hadronic", set()))
        return cls(
            particle=str(d.get("particle")),
            em=EMParams(**sections),
            hadronic=had,
            provenance=dict(d.get("provenance") or {}),
            validation=dict(d.get("validation") or {}),
        )

    def with_provenance(self, **provenance) -> SimParams:
        return replace(self, provenance=provenance)


_EM_SECTIONS = {"longitudinal": Longitudinal, "radial": Radial, "deposit": Deposit, "sampling": Sampling, "halo": Halo}


def _code(particle: str) -> int:
    try:
        return particle_code(particle)
    except ValueError as err:
        raise ConfigError(f"{err}; the simulator supports {', '.join(SUPPORTED_PARTICLES)}") from None


def _added_after(version: int) -> dict[str, set[str] | None]:
    """Keys added after ``version``, by section; None for a whole new section."""
    out: dict[str, set[str] | None] = {}
    for v, sections in _ADDED_IN.items():
        if v > version:
            for where, keys in sections.items():
                out[where] = None if keys is None or out.get(where, set()) is None else out.get(where, set()) | keys
    return out


def _section(cls, values, where: str, optional: set[str] | None = None):
    """The section ``cls`` from a JSON object; keys in ``optional`` (those a file's older
    version did not have) take their defaults when missing."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: must be an object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    missing = sorted(set(known) - set(values) - (optional or set()))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    out = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}.{name}: must be a finite number, got {value!r}")
        out[name] = int(value) if known[name].type in (int, "int") else float(value)
    try:
        return cls(**out)
    except ConfigError as err:  # a value out of range: say which file (``where`` starts with it)
        raise ConfigError(f"{where}: {err}") from None


def load_params(path: str | Path) -> SimParams:
    """Parameters from a JSON file written by ``save_params`` or ``calogan calibrate``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read parameter file ({err.strerror or err})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    return SimParams.from_dict(d, str(path))


def save_params(params: SimParams, path: str | Path, *, force: bool = False) -> Path:
    """Write parameters as JSON, atomically (``calogan.runtime.write_text``)."""
    return write_text(path, json.dumps(params.to_dict(), indent=2) + "\n", force=force, error=ConfigError)


def default_params(particle: str) -> SimParams:
    """The parameters shipped with calogan for ``particle`` (fitted on the Geant4 samples)."""
    name = particle_name(_code(particle))
    if name not in SUPPORTED_PARTICLES:
        raise ConfigError(f"the simulator does not model particle {particle!r}; supported: {', '.join(SUPPORTED_PARTICLES)}")
    stem = SUPPORTED_PARTICLES[name]
    res = resources.files("calogan.simulate").joinpath("params", f"{stem}.json")
    params = SimParams.from_dict(json.loads(res.read_text()), f"calogan/simulate/params/{stem}.json")
    return replace(params, particle=name) if params.particle != name else params
