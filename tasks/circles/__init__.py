"""weekday_circle and month_circle (Engels et al. 2024): modular arithmetic on circular features.

`task` is the experiment: the problems, the behaviour test, the circular probe of every layer
and the intervention that moves a day around the circle.
"""

from tasks.circles.task import MonthCircle, WeekdayCircle

__all__ = ["MonthCircle", "WeekdayCircle"]
