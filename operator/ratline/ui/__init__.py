"""The web UI (`ratline ui`): runs, a step timeline and actions, behind Kubernetes RBAC.

`server.py` builds the aiohttp application and its security middleware, `auth.py`
decides who may see and do what (TokenReview, SubjectAccessReview), `views.py`
renders the pages, `timeline.py` draws the Gantt chart, `actions.py` steers runs
through the CLI's own commands, `command.py` is the `ratline ui` sub-command.
"""
