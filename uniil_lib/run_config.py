"""Run configurations: a JSON file that fixes one benchmark run (``configs/*.json``), read for the one runner.

``python -m uniil_lib benchmark --config configs/awpf_cifar100_b0inc10.json`` reads a file with these keys
(only ``scenario`` and ``methods`` are required; an unknown key is an error)::

    {
     "scenario": "cifar100-b0inc10",             # a named scenario (uniil_lib.named_scenarios)
     "methods": ["zeroshot", "awpf-fixed", "awpf"],  # any registered methods (uniil_lib.methods)
     "profile": "full",                          # data per class, and the defaults below (default "full")
     "model": "ViT-B-16", "pretrained": "openai",  # default: the profile's model
     "train": {"epochs": 15, "lr": 0.001},       # a whole TrainConfig for every method (unset fields take
                                                 #   TrainConfig's defaults); default: the profile's, per method
     "method_train": {"moe-adapters-cil": {"epochs": 1, "batch_size": 128}},  # TrainConfig fields that replace
                                                 #   those of "train" (or the profile's) for one method
     "options": {"settings": {"rank": 32}},      # keyword options for every listed method that takes them
     "method_options": {"awpf-fixed": {"lam": 0.6}},  # keyword options for one method
     "notes": {"lr": "where each number comes from"}  # free text, not read
    }

An option is a keyword argument of the method's constructor (its class or a base class it passes options on
to). A JSON object becomes the parameter's dataclass (through its ``from_dict`` when it has one, e.g.
:class:`~uniil_lib.methods.awpf.AWPFSettings`); numbers, strings, booleans and lists pass as they are.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Mapping, Union

from .fileio import CorruptFileError, read_json
from .methods import method_class
from .named_scenarios import scenario_names
from .profiles import ProfileFileError, get_profile, profile_names
from .train_config import TrainConfig

# The JSON types a key's value may have (as Python's json module reads them).
JSON_KINDS = MappingProxyType({
    "scenario": (str,), "methods": (list,), "profile": (str,), "model": (str, NoneType), "pretrained": (str, NoneType),
    "train": (dict, NoneType), "method_train": (dict,), "options": (dict,), "method_options": (dict,), "notes": (dict,),
})
JSON_NAMES = MappingProxyType({str: "a string", list: "a list", dict: "an object"})
KEYS = ("scenario", "methods", "profile", "model", "pretrained", "train", "method_train", "options", "method_options",
        "notes")
# Fields of TrainConfig that are one for the whole run, not per method: the run's seed (train.seed or --seed)
# and the progress switch (--quiet).
RUN_WIDE_TRAIN_FIELDS = ("seed", "progress")
BUILT_BY_THE_RUNNER = ("self", "clip", "scenario", "config")


class RunConfigError(ValueError):
    """A run configuration that cannot run; the message names the file and what to change."""


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run, as a configuration file gives it (see the module docstring for the keys).

    Attributes:
        scenario: a named scenario.
        methods: the methods run side by side.
        profile: a profile name (``"fast"``, ``"cpu"``, ``"colab"``, ``"full"``) or a profile file
            (:mod:`uniil_lib.profiles`): images per class, and the model and training when these are not given.
        model, pretrained: the model for :func:`uniil_lib.clip.load_clip` (None: the profile's).
        train: the training settings of every method (None: the profile's, with its per-method learning rates).
        method_train: ``{method: {TrainConfig field: value}}`` replacing fields of ``train`` (or of the profile's
            settings) for that method only, e.g. the one-epoch CIL recipe of ``moe-adapters-cil``.
        options: raw JSON keyword options for every method that takes them.
        method_options: raw JSON keyword options per method.
        notes: free text.
        source: the file it was read from (for messages).
    """

    scenario: str
    methods: tuple[str, ...]
    profile: str = "full"
    model: str | None = None
    pretrained: str | None = None
    train: TrainConfig | None = None
    method_train: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<run config>"

    def __post_init__(self) -> None:
        check_run_config(self)

    @property
    def seed(self) -> int | None:
        """The training seed the file fixes (None: the runner's default)."""
        return None if self.train is None else self.train.seed

    def train_for(self, name: str, base: TrainConfig) -> TrainConfig:
        """Method ``name``'s training settings: ``base`` (``train``, or the profile's for ``name``) with the
        fields ``method_train`` gives that method replaced."""
        return dataclasses.replace(base, **self.method_train.get(name, {}))

    def options_for(self, name: str) -> dict[str, Any]:
        """Method ``name``'s constructor keyword options, typed: the shared ``options`` it takes, then its own."""
        accepted = method_parameters(name)
        raw = {key: value for key, value in self.options.items() if key in accepted}
        raw.update(self.method_options.get(name, {}))
        return {key: _typed(value, accepted[key], f"{self.source}: option {key!r} of {name}")
                for key, value in raw.items()}


def check_run_config(config: RunConfig) -> None:
    """Raise :class:`RunConfigError` for names that do not exist or options no method takes."""
    where = config.source
    if config.scenario not in scenario_names():
        raise RunConfigError(f"{where}: unknown scenario {config.scenario!r}; valid: {', '.join(scenario_names())}")
    if config.profile.endswith(".json"):
        try:
            get_profile(config.profile)
        except (ProfileFileError, OSError) as error:
            raise RunConfigError(f"{where}: profile: {error}") from None
    elif config.profile not in profile_names():
        raise RunConfigError(f"{where}: unknown profile {config.profile!r}; valid: {', '.join(profile_names())} "
                             "(or a profile file, some/path.json)")
    if not config.methods:
        raise RunConfigError(f"{where}: 'methods' lists no method")
    repeated = sorted({name for name in config.methods if config.methods.count(name) > 1})
    if repeated:
        raise RunConfigError(f"{where}: 'methods' names {repeated} more than once; name each method once")
    for name in config.methods:
        try:
            method_class(name)
        except KeyError as error:
            raise RunConfigError(f"{where}: {error.args[0]}") from None
    check_method_train(config)
    for name, options in config.method_options.items():
        if name not in config.methods:
            raise RunConfigError(f"{where}: method_options for {name!r}, which 'methods' does not list")
        unknown = sorted(set(options) - set(method_parameters(name)))
        if unknown:
            raise RunConfigError(f"{where}: {name} takes no option {unknown}; "
                                 f"it takes {sorted(method_parameters(name))}")
    taken = {key for name in config.methods for key in method_parameters(name)}
    unused = sorted(set(config.options) - taken)
    if unused:
        raise RunConfigError(f"{where}: no listed method takes the option(s) {unused} (listed: {list(config.methods)})")
    for name in config.methods:
        config.options_for(name)  # JSON values that cannot become the parameter's type fail here, before a run


def check_method_train(config: RunConfig) -> None:
    """Raise :class:`RunConfigError` for a ``method_train`` entry of a method not listed, a field TrainConfig does
    not have or that is one for the whole run, or a value TrainConfig refuses."""
    valid = sorted(f.name for f in dataclasses.fields(TrainConfig) if f.name not in RUN_WIDE_TRAIN_FIELDS)
    for name, settings in config.method_train.items():
        where = f"{config.source}: method_train for {name!r}"
        if name not in config.methods:
            raise RunConfigError(f"{where}, which 'methods' does not list")
        if not isinstance(settings, Mapping):
            raise RunConfigError(f"{where} is {settings!r}; give an object of TrainConfig fields, e.g. {{\"lr\": 0.001}}")
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise RunConfigError(f"{where}: unknown or run-wide settings {unknown} (seed and progress are one for "
                                 f"every method: set them in 'train' or on the command line); valid: {valid}")
        try:
            config.train_for(name, config.train or TrainConfig())
        except (TypeError, ValueError) as error:
            raise RunConfigError(f"{where}: {error}") from None


def method_parameters(name: str) -> dict[str, Any]:
    """``{keyword: type}`` of the options method ``name``'s constructor takes, following ``**options`` up the
    class hierarchy to the constructor that uses them."""
    accepted: dict[str, Any] = {}
    for klass in method_class(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        parameters = inspect.signature(init).parameters.values()
        for parameter in parameters:
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD) and \
                    parameter.name not in BUILT_BY_THE_RUNNER:
                accepted.setdefault(parameter.name, hints.get(parameter.name, Any))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return accepted


def _typed(value: Any, hint: Any, what: str) -> Any:
    """``value`` (JSON) as the parameter type ``hint`` wants: an object becomes the hint's dataclass."""
    if not isinstance(value, dict):
        return value
    candidates = [t for t in typing.get_args(hint) if t is not NoneType] \
        if typing.get_origin(hint) in (Union, UnionType) else [hint]
    for kind in candidates:
        if hasattr(kind, "from_dict") or dataclasses.is_dataclass(kind):
            try:
                return kind.from_dict(value) if hasattr(kind, "from_dict") else kind(**value)
            except (TypeError, ValueError) as error:
                raise RunConfigError(f"{what}: {error}") from None
    raise RunConfigError(f"{what} takes {hint}, which a JSON object cannot give")


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run configuration file (see the module docstring).

    Raises:
        RunConfigError: unreadable JSON, unknown keys, values of the wrong JSON type, names that do not exist,
            options no method takes, training settings TrainConfig does not have or refuses. Every message
            starts with the file's path.
        FileNotFoundError: no such file (its ``filename`` is the path).
    """
    path = Path(path)
    try:
        data = read_json(path, fix="a run config is a JSON object, see configs/*.json")
    except CorruptFileError as error:
        raise RunConfigError(str(error)) from None
    check_shape(data, path)
    train = data.get("train")
    if train is not None:
        valid = {f.name for f in dataclasses.fields(TrainConfig)}
        if set(train) - valid:
            raise RunConfigError(f"{path}: unknown train settings {sorted(set(train) - valid)}; valid: {sorted(valid)}")
        try:
            train = TrainConfig(**train)
        except ValueError as error:
            raise RunConfigError(f"{path}: train: {error}") from None
    return RunConfig(
        scenario=data["scenario"], methods=tuple(data["methods"]), profile=data.get("profile", "full"),
        model=data.get("model"), pretrained=data.get("pretrained"), train=train,
        method_train=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in data.get("method_train", {}).items()}),
        options=MappingProxyType(dict(data.get("options", {}))),
        method_options=MappingProxyType({k: dict(v) for k, v in data.get("method_options", {}).items()}),
        notes=MappingProxyType(dict(data.get("notes", {}))), source=str(path),
    )


def check_shape(data: Any, path: Path) -> None:
    """Raise :class:`RunConfigError` (naming ``path``) unless ``data`` is a JSON object with the keys and value
    types of a run config (see the module docstring)."""
    if not isinstance(data, dict) or not {"scenario", "methods"} <= set(data):
        raise RunConfigError(f"{path}: a run config is a JSON object with at least 'scenario' and 'methods'")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise RunConfigError(f"{path}: unknown keys {unknown}; valid keys: {list(KEYS)}")
    for key, value in data.items():
        kinds = JSON_KINDS.get(key, ())
        if kinds and not isinstance(value, kinds):
            wanted = " or ".join("null" if kind is NoneType else JSON_NAMES[kind] for kind in kinds)
            raise RunConfigError(f"{path}: {key!r} must be {wanted}, not {json.dumps(value)[:80]}")
    if not all(isinstance(name, str) for name in data["methods"]):
        raise RunConfigError(f"{path}: 'methods' must be a list of method names, e.g. [\"zeroshot\", \"awpf\"]")
    for key in ("method_train", "method_options"):
        for name, value in data.get(key, {}).items():
            if not isinstance(value, dict):
                raise RunConfigError(f"{path}: {key} for {name!r} must be an object of settings, "
                                     f"not {json.dumps(value)[:80]}")
