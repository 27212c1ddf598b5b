"""Cloud agents: the task types any cloud function can run, and one handler for them.

A function written on this package receives the invocation the operator sends (task,
payload, callback URL, attempt, key, deadline), runs the task type's function and calls
back through the SDK. `aws_lambda/` and `azure_functions/` wrap it for each provider;
users add their own task types with ``@task("name")``.
"""

from wallestars_cloud.handler import Invocation, handle, task

__all__ = ["Invocation", "handle", "task"]
