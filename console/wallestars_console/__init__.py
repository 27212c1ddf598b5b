"""The console and the application API: tasks and agents seen, submitted and followed
as the signed-in person, with their own Kubernetes rights (docs/console.md)."""
