"""Catalogues of named entries (layers, models, datasets, losses, optimizers).

Each entry is a params schema plus a builder, so the catalogue widens by registering an entry.
Specs name an entry in one of two forms, both validated here with exact field paths:

- by a tag field: ``{kind: adam, lr: 0.001}`` -> ``tagged_union(OPTIMIZERS, "kind")``
- by a single key: ``{dropout: 0.5}``, ``relu`` -> ``single_key_union(LAYERS)``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
    model_serializer,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

B = TypeVar("B")


class Params(BaseModel):
    """Base for every params schema: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


class KindSpec(Params):
    """What type checkers see of a ``tagged_union(..., "kind")`` value."""

    kind: str


@dataclass(frozen=True)
class Entry(Generic[B]):
    name: str
    params: type[Params]
    build: B
    shorthand: str | None = (
        None  # the field a bare scalar fills: {dropout: 0.5} == {dropout: {p: 0.5}}
    )
    doc: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Catalog(Generic[B]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[B]] = {}

    def register(
        self,
        name: str,
        params: type[Params] = NoParams,
        shorthand: str | None = None,
        **info: Any,
    ) -> Callable[[B], B]:
        def decorator(build: B) -> B:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = (getattr(build, "__doc__", None) or "").strip()
            self._entries[name] = Entry(name, params, build, shorthand, doc, info)
            return build

        return decorator

    def __getitem__(self, name: str) -> Entry[B]:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[B]]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def unknown(self, name: object) -> PydanticCustomError:
        return PydanticCustomError(
            f"unknown_{self.kind}",
            "unknown {kind} '{name}'; expected one of: {choices}",
            {"kind": self.kind, "name": str(name), "choices": ", ".join(self.names())},
        )


def _revalidate(model: type[BaseModel], value: Any, prefix: tuple[str, ...] = ()) -> Any:
    """Validate ``value`` against ``model``, re-raising errors with locs relative to the field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        # Rebuild each error with its message as rendered; custom error types cannot be re-raised
        # by name, so every error travels as a PydanticCustomError of the same type.
        errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(
                    e["type"], e["msg"].replace("{", "{{").replace("}", "}}")
                ),
                "loc": (*prefix, *e["loc"]),
                "input": e["input"],
            }
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None


def tagged_union(
    catalog: Catalog[Any], tag: str, base: type[BaseModel] | None = None, nest: str | None = None
) -> Any:
    """A type for ``{<tag>: name, **params}``, or ``{<tag>: name, <nest>: {params}}`` if nested.

    ``base`` adds fields common to every entry (a dataset's split, say).
    """
    models: dict[str, type[BaseModel]] = {}
    for entry in catalog:
        fields: dict[str, Any] = {tag: (Literal[entry.name], ...)}
        if nest is None:
            bases: tuple[type[BaseModel], ...] = (entry.params,) + ((base,) if base else ())
        else:
            bases = (base or Params,)
            required = any(f.is_required() for f in entry.params.model_fields.values())
            fields[nest] = (entry.params, ... if required else Field(default_factory=entry.params))
        models[entry.name] = create_model(
            f"{entry.name.title().replace('_', '')}{catalog.kind.title()}",
            __base__=bases,
            __doc__=entry.doc or None,
            **fields,
        )

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "dict_type", "expected an object with a '{tag}' field", {"tag": tag}
            )
        if tag not in value:
            raise PydanticCustomError("missing", "'{tag}' is required", {"tag": tag})
        model = models.get(value[tag])
        if model is None:
            raise ValidationError.from_exception_data(
                catalog.kind,
                [{"type": catalog.unknown(value[tag]), "loc": (tag,), "input": value[tag]}],
            )
        return _revalidate(model, value)

    return Annotated[Union[tuple(models.values())], WrapValidator(validate)]  # noqa: UP007


class NamedEntry(BaseModel):
    """An entry named by a single key, such as a layer: ``{conv1d: {...}}`` or ``relu``."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: Params

    @model_serializer
    def _as_single_key(self) -> dict[str, Any]:
        return {self.name: self.params.model_dump(mode="json")}


def single_key_union(catalog: Catalog[Any]) -> Any:
    """A type for ``name``, ``{name: {params}}`` or ``{name: scalar}`` (the entry's shorthand)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> NamedEntry:
        if isinstance(value, NamedEntry):
            return value
        raw: Any
        if isinstance(value, str):
            name, raw = value, {}
        elif isinstance(value, dict) and len(value) == 1:
            name, raw = next(iter(value.items()))
        else:
            raise PydanticCustomError(
                f"{catalog.kind}_form",
                "a {kind} is a name or an object with exactly one key, the {kind}'s name",
                {"kind": catalog.kind},
            )
        if name not in catalog:
            raise catalog.unknown(name)
        entry = catalog[name]
        if raw is None:
            raw = {}
        elif not isinstance(raw, dict) and entry.shorthand is not None:
            raw = {entry.shorthand: raw}
        return NamedEntry(name=name, params=_revalidate(entry.params, raw, (name,)))

    variants: list[dict[str, Any]] = []
    for entry in catalog:
        schema = entry.params.model_json_schema()
        variants.append(
            {
                "type": "object",
                "properties": {entry.name: schema},
                "required": [entry.name],
                "additionalProperties": False,
                "description": entry.doc,
            }
        )
        if not schema.get("required"):
            variants.append({"const": entry.name, "description": entry.doc})
    return Annotated[
        NamedEntry,
        WrapValidator(validate),
        WithJsonSchema({"anyOf": variants, "title": catalog.kind.title()}),
    ]
