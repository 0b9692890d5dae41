"""medssl-bench: which pre-training actually helps my downstream task?

Data flows one way: matrix -> plan -> executor -> stage -> store -> reports.
"""

__version__ = "0.1.0"
