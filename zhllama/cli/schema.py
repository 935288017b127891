"""Typer parameters generated from option dataclasses (`zhllama.core.schema`), so no flag is declared twice."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from zhllama.core.schema import field_specs, from_values


def parameters(cls: type, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword-only Typer parameter per CLI field of `cls`."""
    params = []
    for spec in field_specs(cls, exclude):
        required = spec.required
        default = ... if required else (None if spec.is_list else spec.default)
        kwargs: dict[str, Any] = {"help": spec.help}
        if required:
            kwargs["show_default"] = False
        params.append(
            inspect.Parameter(
                spec.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[
                    spec.annotation | None if spec.is_list else spec.annotation, typer.Option(*spec.flags, **kwargs)
                ],
            )
        )
    return params


def with_options(cls: type, keyword: str, exclude: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator: add `cls`'s flags to a command; it receives one `keyword=cls(...)` argument instead.

    The command's own parameters keep their declarations; the generated ones come first in `--help`.
    """

    def decorate(command: Callable) -> Callable:
        generated = parameters(cls, exclude)
        names = {p.name for p in generated}
        hints = _own_annotations(command, skip=keyword)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.name != keyword
        ]
        clash = names & {p.name for p in own}
        if clash:
            raise TypeError(f"{command.__name__} redeclares generated option(s): {', '.join(sorted(clash))}")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, **{keyword: from_values(cls, values)})

        del wrapper.__wrapped__  # Typer must read the generated signature, not the command's
        params = generated + own
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _own_annotations(command: Callable, skip: str) -> dict[str, Any]:
    """The command's annotations, evaluated (modules use postponed annotations), except `skip`'s.

    The option-group parameter is left out: its class may be imported for type checking only.
    """
    hints = {}
    for name, annotation in inspect.get_annotations(command).items():
        if name in (skip, "return"):
            continue
        hints[name] = eval(annotation, command.__globals__) if isinstance(annotation, str) else annotation  # noqa: S307
    return hints
