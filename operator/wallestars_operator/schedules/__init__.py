"""AgentSchedules: AgentTasks or AgentWorkflows created on a clock (docs/schedules.md).

cron.py parses and steps schedules (pure), decide.py is the pure decision of a pass
(CronJob's rules for missed runs and concurrency), controller.py the writes."""
