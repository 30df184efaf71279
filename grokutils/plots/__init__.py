"""Figures, one module per chapter group; `common` holds what they share.

- `common`: `setup()`, the step axis, mean +- sd bands, the protocol stamp, digit images
- `mlp`: the MLP figures and tables, WD = 0 and its control (Figures 1, 4-6, 11; Tables 1, 2)
- `fits`: beside alpha, the fitted tail's size, xmin and the fixed-tail sensitivity check
- `modadd`: the modular-addition transformer (Tables 5-11, Figures 8, 9, 16-18) and the search log
- `traps`: correlation traps, spectra with their power-law and MP fits (Figures 2, 3), Tables 2 and 4
- `llm`: per-matrix alpha of a language model: histogram (Figure 10) and alpha by depth
- `alarm`: the HTSR alarm: a monitor log, a stored run with alarms and collapses, lead times,
  and the detector evaluation of `grokutils.alarm_eval` (one panel per rule)
"""
