"""The playground: step through a transaction schedule in the browser, on a live PostgreSQL.

``python -m acid_lab play`` serves one page (``app.py``); each session of the
page is a real server connection held between HTTP requests (``sessions.py``);
the scenarios come from the isolation chapter's catalog (``scenarios.py``).
"""
