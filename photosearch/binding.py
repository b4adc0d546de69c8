"""Which model a library belongs to.

A library's vectors only mean something to the model that made them, so the library
records the model (name, pretrained tag or file, a fingerprint of the weights file, the
vector dimension) the first time it is filled. Later runs use that model unless told
otherwise; asking for a different one is an error that says what to do, never a silent mix
of vector spaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from photosearch.config import DEFAULT_SPEC, ModelSpec
from photosearch.errors import LibraryError, ModelMismatchError
from photosearch.store import Store

if TYPE_CHECKING:  # the model package is imported only by the calls that need a model
    from photosearch.model import ResolvedModel


def stored_spec(store: Store) -> ModelSpec | None:
    meta = store.meta()
    if "model_name" not in meta:
        return None
    return ModelSpec(meta["model_name"], meta.get("model_pretrained") or None)


def choose_spec(store: Store, requested: ModelSpec | None) -> ModelSpec:
    """The model to use with this library; raises ModelMismatchError if `requested` is another."""
    stored = stored_spec(store)
    if stored is None:
        return requested or DEFAULT_SPEC
    if requested is None or requested == stored:
        return stored
    # Different words may still name the same weights (a tag vs. the cached file).
    from photosearch.model import resolve

    if resolve(requested).fingerprint() == store.meta().get("model_fingerprint"):
        return requested
    raise _mismatch(store, stored, requested.label())


def check_weights(store: Store, resolved: "ResolvedModel") -> None:
    """Before loading a model: its weights file must be the one the library was made with."""
    recorded = store.meta().get("model_fingerprint")
    if recorded is not None and recorded != resolved.fingerprint():
        raise _mismatch(store, stored_spec(store) or resolved.spec, f"{resolved.spec.label()} (its weights file has changed)")


def check_loaded(store: Store, resolved: "ResolvedModel", dim: int) -> None:
    """After loading a model: its weights and the size of its vectors must be the library's."""
    check_weights(store, resolved)
    recorded = store.meta().get("dim")
    if recorded is not None and int(recorded) != dim:
        raise _mismatch(
            store, stored_spec(store) or resolved.spec, f"{resolved.spec.label()} ({dim}-d vectors; the library holds {recorded}-d ones)"
        )


def bind(store: Store, resolved: "ResolvedModel", dim: int, logit_scale: float) -> None:
    """Record the model in a library that has none yet."""
    if "model_fingerprint" in store.meta():
        return
    spec = resolved.spec
    store.set_meta(
        {
            "model_name": spec.name,
            "model_pretrained": spec.pretrained or "",
            "model_fingerprint": resolved.fingerprint(),
            "dim": dim,
            "logit_scale": logit_scale,
        }
    )


def require_model(store: Store) -> ModelSpec:
    spec = stored_spec(store)
    if spec is None:
        raise LibraryError(f"library {store.path} is empty", "run `photosearch index FOLDER` first")
    return spec


def _mismatch(store: Store, stored: ModelSpec, asked: str) -> ModelMismatchError:
    return ModelMismatchError(
        f"library {store.path} was indexed with {stored.label()}, not {asked}",
        "leave out --model/--pretrained to use the library's model, or use another library "
        "with --db PATH (or delete this one to start over)",
    )
