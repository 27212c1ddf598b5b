"""Outbound notifications: signed POSTs of listed transitions to the user's application
(`spec.notify` on AgentTasks and AgentWorkflows, and the installation's default sink)."""
