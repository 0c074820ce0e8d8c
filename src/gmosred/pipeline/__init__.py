"""The pipeline: the step table and recipes, the plan from the observing log, the run, the runners."""
from .config import Config, load  # noqa: F401
from .plan import Plan, make_plan, prepare  # noqa: F401
from .run import RunReport, StepReport, logfile, run_plan  # noqa: F401
from .steps import RECIPES, SECTIONS, STEPS, Step, Task  # noqa: F401
