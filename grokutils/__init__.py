"""grokutils: the helper package behind the anti-grokking compendium notebooks.

The road of both experiments: a profile names a run (`runs`) -> its config (`config`) ->
`engine.run` trains every seed (`train`, `batched`; what differs per experiment: `tasks`) and
measures every checkpoint (`measures`, `htsr`, `modadd`) -> the results store (`store`) ->
figures and tables (`plots`) -> the notebooks. README.md, section Layout, draws it.
"""

__version__ = "0.1.0"
