"""grokutils: the helper package behind the anti-grokking compendium notebooks.

The road of both experiments: a profile names a run (`runs`) -> its config (`config`) ->
`engine.run` trains every seed (`train`, through the experiment's task: `mlp` with its batched
model `batched`, or `modadd` with its `transformer`; `tasks` names the interface) and measures
every checkpoint (the shared per-matrix `measures` and `htsr`, and the experiment's own) -> the
results store (`store`) -> numbers (`phases`, `claims`, `modadd_analysis`, `alarm_eval`) and
figures (`plots`, which only draw) -> the notebooks. README.md, section Layout, draws it.
"""

__version__ = "0.1.0"
