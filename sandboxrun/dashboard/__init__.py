"""The dashboard: a read model of every session and group (model.py), drawn by the terminal app (app.py) and the browser page (sandboxrun/web/page.py)."""
