"""The admin console at /admin: sign-in with admin and viewer accounts, the overview, connectors and the audit log,
served by the service itself as plain server-rendered pages (docs/console.md). Nothing is imported here: `settings`
imports `console.settings`, and the pages import the settings module."""
