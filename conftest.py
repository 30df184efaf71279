"""pytest, for every test folder and for `pytest --nbval notebooks`: kernels started by the tests
(nbval's) run without a frontend, so the notebooks' widgets draw static figures there, as under
`grokutils.tools.execute` (`grokutils.plots.common.BATCH_VARIABLE`, issue 35). The JupyterLab
test removes the variable again for its server: there the explorer must stay live."""
import os

from grokutils.plots.common import BATCH_VARIABLE

os.environ[BATCH_VARIABLE] = "1"
