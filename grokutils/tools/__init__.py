"""Stand-alone tools, usable without the book's notebooks; `python -m grokutils.tools.NAME` where noted.

- `monitor`: a data-free HTSR alarm (alpha, correlation traps) for any PyTorch training loop
- `alarm_log`: the tidy log both write: the alarm rule (alpha < 2 or traps), CSV/Parquet read and write
- `watch`: the monitor's table for saved checkpoints (`python -m grokutils.tools.watch PATH`)
- `llm`: alpha and traps of every weight matrix of a safetensors checkpoint, MXFP4 experts included
- `checkpoints`: safetensors headers and indexes read without loading a tensor; the tools' `CheckpointError`
- `synthetic_llm`: random gpt-oss-format checkpoints of any size, for tests and benchmarks
- `mxfp4`: the MXFP4 (E2M1 blocks, E8M0 scales) decoder and encoder of gpt-oss experts
- `bench`: steps per second of the MLP training loops (`python -m grokutils.tools.bench`)
- `execute`: run the book's notebooks with papermill under a profile (`python -m grokutils.tools.execute`)
"""
