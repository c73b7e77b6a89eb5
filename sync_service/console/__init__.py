"""The release console: server-rendered pages over the service's own data (docs/console.md).

Every page reads what a documented JSON endpoint answers (the same functions); its actions
go through the same release functions as the API, so the audit log and the signed index
cannot tell a console change from a CLI one."""
