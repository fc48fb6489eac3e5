"""The operator console under /console/: sign-in, roles, and the pages a communications
office works in (review queue, contact lookup, suppressions, parked items, rights
requests, dashboard). Server-rendered HTML that works without JavaScript; every action
goes through worker.ops and handlers.state.apply with the user's name as operator.

`accounts` holds the pure rules (passwords, lockout, roles), `auth` the sign-in, the
sessions and the form tokens, `app` the pages, `text` the words in Swedish and English,
`charts` the SVG charts of the dashboard. The package itself imports nothing: the
application is `worker.console.app.build_console`.
"""
