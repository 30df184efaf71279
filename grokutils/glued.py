"""The values each chapter's text quotes: one function per chapter, each returning a dict.

A chapter glues exactly one dict, near its end:

    glue_all(glued.data_values(mnist, modadd))

The function is named after the notebook, without its number (`00_data` → `data_values`), and
takes the objects the chapter has already computed (runs, tables), so nothing is computed twice.
Its values are numbers formatted as the text shows them, or sentences rendered from
`grokutils/templates` (`grokutils.prose.say`) from values that the analysis modules return and
tests check. `tests/test_notebooks.py::test_a_chapter_glues_the_dict_of_its_one_function` checks
that every chapter glues this way and no other.
"""
from __future__ import annotations


def data_values(mnist, modadd) -> dict[str, object]:
    """The data: the sizes of the MNIST subset and of the modular-addition training split."""
    return {"n_train": len(mnist.train_y), "n_test": len(mnist.test_y), "modadd_n_train": len(modadd.train_idx)}


# ---- the MLP and the modular-addition chapters ---------------------------------------------------
# (functions mlp_grokking_values, wd_control_values, modular_addition_values,
#  correlation_traps_values, prototypes_values go here)


# ---- the LLM, alarm, accelerated-protocol and scorecard chapters ---------------------------------
# (functions llm_weights_values, alarm_values, accelerated_protocol_values, scorecard_values go here)
