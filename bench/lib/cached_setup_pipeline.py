"""What-if: `python -m pipeline` with each DoFn's costly set-up done once per process.

    .venv/bin/python bench/lib/cached_setup_pipeline.py [the pipeline's options]

The BundleBasedDirectRunner runs every ParDo of the graph after every Pub/Sub pull, most
of them on empty bundles, and calls `setup`/`teardown` on a fresh copy of the DoFn each
time. The project's set-ups open clients, create the warehouse tables (4 HTTP calls)
and load the OCR engine, so locally they run per pull; on Dataflow they run once per
DoFn instance. This wrapper keeps what each set-up built, per process and per
configuration, as Dataflow effectively does, then runs the unchanged pipeline. It is a
measurement of a proposed change (see bench/RESULTS.md), not part of the project.
"""

import logging
from collections.abc import Callable, Hashable
from typing import Any

from pipeline.graph import run
from pipeline.transforms.enrich import FetchPhotoFn, ReadPlatesFn, StorePhotoFn
from pipeline.transforms.warehouse import InsertRowsFn


def cache_setup(cls: type, key: Callable[[Any], Hashable]) -> None:
    """Run `cls.setup` once per key; later copies get every attribute it had set."""
    original = cls.setup
    built: dict[Hashable, dict[str, Any]] = {}

    def setup(self: Any) -> None:
        values = built.get(key(self))
        if values is None:
            before = dict(vars(self))
            original(self)
            values = {
                name: value
                for name, value in vars(self).items()
                if name not in before or before[name] is not value
            }
            built[key(self)] = values
        for name, value in values.items():
            setattr(self, name, value)

    cls.setup = setup
    cls.teardown = lambda self: None  # the shared clients live as long as the process


def install() -> None:
    cache_setup(InsertRowsFn, lambda fn: (fn.project, fn.dataset))
    cache_setup(ReadPlatesFn, lambda fn: fn.config)
    cache_setup(FetchPhotoFn, lambda fn: fn.config)
    cache_setup(StorePhotoFn, lambda fn: fn.config)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install()
    run()
