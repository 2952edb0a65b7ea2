"""uniil_lib: continual learning with CLIP, from zero-shot CLIP to Uni-IL MAGE, for teaching.

The modules, one concept each:

- :mod:`uniil_lib.clip`            load CLIP models, zero-shot classifiers
- :mod:`uniil_lib.features`        preprocessed pixels and the on-disk image-feature cache
- :mod:`uniil_lib.data`            datasets as ``ImageSet`` objects, offline and online sources
- :mod:`uniil_lib.scenarios`       steps and streams: task-, class-, domain-incremental, Uni-IL
- :mod:`uniil_lib.named_scenarios` the scenarios the notebooks and the CLI use
- :mod:`uniil_lib.methods`         continual-learning methods behind one interface
- :mod:`uniil_lib.train`           the continual trainer (checkpoints, resume)
- :mod:`uniil_lib.metrics`         metrics of an accuracy matrix
- :mod:`uniil_lib.plots`           heatmaps
- :mod:`uniil_lib.benchmark`       methods side by side; ``python -m uniil_lib benchmark``

Every module, its layer and what it imports: ``docs/architecture.md`` (drawn by ``scripts/import_graph.py``).
"""

__version__ = "0.1.0"
