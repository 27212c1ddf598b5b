"""AgentWorkflows: steps that are AgentTasks, run as a DAG (docs/workflows.md).

dag.py and expressions.py are pure checks and evaluation, decide.py the pure decision of
a pass, controller.py the I/O at the edge (creating step tasks, writing status)."""
