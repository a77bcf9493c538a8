"""`queuectl web`: a browser dashboard that is one more client of the daemon's socket.

The app (Starlette, served by uvicorn, Jinja2 templates) needs the `web` extra; nothing here is
imported by the rest of the client, so `queuectl enqueue` never pays for it. `serve.run` checks
the extra first and says in one line how to install it.
"""
